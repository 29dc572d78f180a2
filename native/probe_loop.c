/*
 * The probe's packet loops: a paced TX thread and an RX thread that measures
 * (or, in echo mode, answers ARP and ICMP echo). Both only touch guest memory
 * and eventfds, so they keep running while the vhost-user connection is down.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "probe.h"

#define TX_BURST 32u
/* Frames due within EARLY_NS are sent now: the TX thread never spins for a
 * slot. A VM's vCPU that spun at high rates would take the CPU its own RX
 * thread needs on a small host (at 100 kpps slots are 10 us apart, less than
 * a wake-up takes here), and a real-time one would starve the CPU. Above
 * BATCH_RATE frames go out in bursts of BATCH_EARLY_NS: on a virtualised host
 * every wake-up costs several us of CPU, so one per frame would cost a core.
 * Frames are stamped when sent, so latency is exact; a slot sent early is 0 late. */
#define EARLY_NS 20000ull
#define BATCH_RATE 5000ull
#define BATCH_EARLY_NS 150000ull
/* Longest single sleep, so a stop request is noticed promptly. */
#define MAX_SLEEP_NS 10000000ull
#define RX_POLL_MS 10
/* Empty polls before the RX thread arms interrupts and sleeps. */
#define RX_IDLE_SPINS 64

uint64_t probe_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

/* 2 * nq rings (descriptor table 16-aligned, avail and used on their own cache
 * lines), then each ring's buffers; the whole rounded to 2 MiB (hugepage size). */
static uint64_t layout(struct probe_ring *r, uint32_t n, uint64_t off) {
  r->num = n;
  r->desc_off = off = align_up(off, 64);
  off += vring_desc_bytes(n);
  r->avail_off = off = align_up(off, 64);
  off += vring_avail_bytes(n);
  r->used_off = off = align_up(off, 64);
  off += vring_used_bytes(n);
  return align_up(off, 4096);
}

size_t probe_mem_size(uint32_t n, uint32_t nq) {
  struct probe_ring r;
  uint64_t off = 0;
  for (uint32_t i = 0; i < 2 * nq; i++) off = layout(&r, n, off);
  off += 2ull * nq * n * PROBE_BUF_SIZE;
  return (size_t)align_up(off, 2u << 20);
}

void probe_port_init(struct probe_port *pt, uint32_t n, uint32_t nq, uint8_t *base, size_t size, const int *kick,
                     const int *call) {
  pt->base = base;
  pt->size = size;
  uint64_t off = 0;
  for (uint32_t i = 0; i < 2 * nq; i++) off = layout(&pt->rings[i], n, off);
  for (uint32_t i = 0; i < 2 * nq; i++) {
    struct probe_ring *r = &pt->rings[i];
    r->bufs_off = off;
    off += (uint64_t)n * PROBE_BUF_SIZE;
    r->desc = (struct vring_desc *)(base + r->desc_off);
    r->avail = (struct vring_avail *)(base + r->avail_off);
    r->used = (struct vring_used *)(base + r->used_off);
    r->bufs = base + r->bufs_off;
    r->kick_fd = kick[i];
    r->call_fd = call[i];
    r->last_used = 0;
    memset(r->desc, 0, vring_desc_bytes(n));
    memset(r->avail, 0, vring_avail_bytes(n));
    memset(r->used, 0, vring_used_bytes(n));
    memset(r->outstanding, 0, n);
    for (uint32_t id = 0; id < n; id++) r->desc[id].addr = (uint64_t)(uintptr_t)(r->bufs + (size_t)id * PROBE_BUF_SIZE);
  }
  for (uint32_t k = 0; k < nq; k++) {
    /* RX: every buffer posted, device-writable. */
    struct probe_ring *rx = &pt->rings[2 * k];
    for (uint32_t id = 0; id < n; id++) {
      rx->desc[id].len = PROBE_BUF_SIZE;
      rx->desc[id].flags = VRING_DESC_F_WRITE;
      rx->avail->ring[id] = (uint16_t)id;
      rx->outstanding[id] = 1;
    }
    rx->avail_idx = (uint16_t)n;
    __atomic_store_n(&rx->avail->idx, rx->avail_idx, __ATOMIC_RELEASE);
    /* TX: all descriptors free; completions are polled, never signalled. */
    struct probe_ring *tx = &pt->rings[2 * k + 1];
    tx->avail_idx = 0;
    tx->nfree = n;
    for (uint32_t i = 0; i < n; i++) tx->free_ids[i] = (uint16_t)(n - 1 - i);
    tx->avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
  }
}

static void kick(struct probe_ring *r, uint64_t *counter) {
  /* The device may have stopped polling: the store of avail->idx must be
   * visible before we read its NO_NOTIFY flag (and it reads our idx after
   * clearing it). */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (__atomic_load_n(&r->used->flags, __ATOMIC_ACQUIRE) & VRING_USED_F_NO_NOTIFY) return;
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(r->kick_fd, &one, sizeof(one));
  } while (n < 0 && errno == EINTR);
  add64(counter, 1); /* EAGAIN means the counter is saturated: the device will see it anyway */
}

/* Return completed TX descriptors to the free list. */
static void tx_reclaim(struct probe_ring *r, uint64_t *bad) {
  uint16_t used_idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
  while (r->last_used != used_idx) {
    uint32_t id = r->used->ring[r->last_used & (r->num - 1)].id;
    r->last_used++;
    if (id >= r->num || !r->outstanding[id]) {
      add64(bad, 1);
      continue;
    }
    r->outstanding[id] = 0;
    r->free_ids[r->nfree++] = (uint16_t)id;
  }
}

/* Publish one filled TX descriptor (the caller stores avail->idx after a burst). */
static inline void tx_post(struct probe_ring *r, uint16_t id, uint32_t len) {
  r->desc[id].len = len;
  r->desc[id].flags = 0;
  r->desc[id].next = 0;
  r->outstanding[id] = 1;
  r->avail->ring[r->avail_idx & (r->num - 1)] = id;
  r->avail_idx++;
}

static void sleep_until(uint64_t deadline_ns) {
  struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000ull), .tv_nsec = (long)(deadline_ns % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static inline uint64_t deadline_of(uint64_t start, uint64_t i, uint64_t rate) {
  /* exact integer schedule: frame i is due at start + i * 1e9 / rate */
  return start + (uint64_t)(((unsigned __int128)i * 1000000000ull) / rate);
}

void *probe_tx_main(void *arg) {
  struct probe *p = arg;
  struct probe_tx_cfg *c = &p->tx;
  struct probe_port *pt = &p->ports[c->port];
  const uint32_t nq = p->nq;
  struct probe_stats *st = &p->st;
  /* the default 50 us timer slack would blur a schedule of sub-ms gaps */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  __atomic_store_n(&p->tx_tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);

  /* Every TX buffer gets the header and the constant part of the frame once;
   * per frame only the sequence number and timestamp are written. Frames
   * go round-robin over the TX queues; queue k sends from the port's MAC
   * with k XORed into its last byte, so the switch sees one flow per queue
   * (its flow hash takes the MACs) and keeps each on one RX queue. */
  uint8_t tmpl[PROBE_NET_HDR + 64];
  memset(tmpl, 0, sizeof(tmpl));
  uint8_t *eth = tmpl + PROBE_NET_HDR;
  memcpy(eth, c->dst, 6);
  memcpy(eth + 6, c->src, 6);
  eth[12] = PROBE_ETHERTYPE >> 8;
  eth[13] = PROBE_ETHERTYPE & 0xff;
  uint32_t magic = htonl(PROBE_MAGIC);
  memcpy(eth + 14, &magic, 4);
  memcpy(eth + 18, &c->stream, 4);
  for (uint32_t k = 0; k < nq; k++) {
    struct probe_ring *r = &pt->rings[2 * k + 1];
    eth[11] = (uint8_t)(c->src[5] ^ k);
    for (uint32_t id = 0; id < r->num; id++) {
      uint8_t *b = r->bufs + (size_t)id * PROBE_BUF_SIZE;
      memset(b, 0, PROBE_NET_HDR + c->size);
      memcpy(b, tmpl, PROBE_NET_HDR + PROBE_FRAME_MIN_BYTES);
    }
  }

  const uint64_t start = probe_now_ns();
  const bool batch = c->rate > BATCH_RATE;
  const uint64_t early = batch ? BATCH_EARLY_NS : EARLY_NS;
  const uint32_t len = PROBE_NET_HDR + c->size;
  uint64_t i = 0, seq = 0;
  uint32_t k = 0; /* the TX queue of the next frame */
  while (!__atomic_load_n(&p->tx_stop, __ATOMIC_ACQUIRE)) {
    uint64_t stall = __atomic_exchange_n(&p->tx_stall_ns, 0, __ATOMIC_ACQ_REL);
    if (stall) sleep_until(probe_now_ns() + stall);
    uint64_t next = deadline_of(start, i, c->rate);
    uint64_t now = probe_now_ns();
    /* Wake for the next slot (a little early for one frame), then send
     * everything due within `early`: in batch mode a whole burst per wake-up. */
    uint64_t wake = batch ? next : next - EARLY_NS;
    if (now < wake) {
      uint64_t wait = wake - now;
      sleep_until(now + (wait > MAX_SLEEP_NS ? MAX_SLEEP_NS : wait));
      continue;
    }
    for (uint32_t q = 0; q < nq; q++) tx_reclaim(&pt->rings[2 * q + 1], &st->tx_bad_used);
    unsigned burst = 0;
    uint32_t touched = 0; /* TX queues posted to in this burst: a bit each */
    while (next <= now + early && burst < TX_BURST) {
      struct probe_ring *r = &pt->rings[2 * k + 1];
      if (r->nfree == 0) {
        add64(&st->tx_ring_full, 1); /* this slot of the schedule is skipped, not queued */
      } else {
        uint16_t id = r->free_ids[--r->nfree];
        uint8_t *f = r->bufs + (size_t)id * PROBE_BUF_SIZE + PROBE_NET_HDR;
        memcpy(f + 22, &seq, 8);
        uint64_t ts = probe_now_ns();
        memcpy(f + 30, &ts, 8);
        uint64_t late = ts > next ? ts - next : 0;
        add64(&st->late_hist[hist_index(late)], 1);
        add64(&st->late_sum, late);
        if (late > st->late_max_ns) {
          st64(&st->late_max_at_ns, next);
          st64(&st->late_max_ns, late);
        }
        add64(&st->late_count, 1);
        tx_post(r, id, len);
        __atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
        touched |= 1u << k;
        seq++;
        burst++;
      }
      i++;
      next = deadline_of(start, i, c->rate);
      bool full = r->nfree == 0;
      k = k + 1 == nq ? 0 : k + 1;
      if (full && nq == 1) break;
    }
    if (burst > 0) {
      add64(&st->sent, burst);
      for (uint32_t q = 0; q < nq; q++)
        if (touched & (1u << q)) kick(&pt->rings[2 * q + 1], &st->tx_kicks);
    }
  }
  for (uint32_t q = 0; q < nq; q++) tx_reclaim(&pt->rings[2 * q + 1], &st->tx_bad_used);
  st64(&st->tx_cpu_ns, thread_cpu_ns());
  return NULL;
}

/* ---- RX ---- */

static inline uint64_t hist_upper(unsigned idx) {
  if (idx < 256) return idx;
  unsigned e = (idx - 256u) / HIST_SUB + 8u;
  uint64_t sub = (idx - 256u) % HIST_SUB + HIST_SUB;
  return ((sub + 1) << (e - 7)) - 1;
}

uint64_t probe_hist_percentile(const uint64_t *hist, uint64_t count, uint64_t max, double q) {
  if (count == 0) return 0;
  uint64_t target = (uint64_t)(q * (double)count);
  if ((double)target < q * (double)count) target++;
  if (target == 0) target = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += ld64(&hist[i]);
    if (seen >= target) {
      uint64_t v = hist_upper(i);
      return v < max ? v : max;
    }
  }
  return max;
}

static inline bool win_test_set(uint64_t *w, uint64_t seq) {
  uint64_t bit = seq % SEQ_WINDOW;
  uint64_t m = 1ull << (bit & 63);
  bool was = (w[bit >> 6] & m) != 0;
  w[bit >> 6] |= m;
  return was;
}

static inline void win_clear(uint64_t *w, uint64_t seq) {
  uint64_t bit = seq % SEQ_WINDOW;
  w[bit >> 6] &= ~(1ull << (bit & 63));
}

static void track(struct probe *p, const uint8_t *f, uint64_t now, uint32_t rxq) {
  struct probe_stats *st = &p->st;
  uint64_t seq, ts;
  memcpy(&seq, f + 22, 8);
  memcpy(&ts, f + 30, 8);
  add64(&st->rx_queue[rxq], 1);
  if (p->rx_last_seq[rxq] > seq + 1) add64(&st->reordered_in_queue, 1);
  p->rx_last_seq[rxq] = seq + 1;

  uint64_t last = st->last_rx_ns;
  if (last == 0) {
    st64(&st->first_rx_ns, now);
  } else if (now - last > st->max_gap_ns) {
    st64(&st->max_gap_at_ns, last);
    st64(&st->max_gap_ns, now - last);
  }
  st64(&st->last_rx_ns, now);

  uint64_t next = st->next_seq;
  if (seq >= next) {
    uint64_t gap = seq - next;
    if (gap >= SEQ_WINDOW) {
      memset(p->seq_window, 0, SEQ_WINDOW / 8);
    } else {
      for (uint64_t s = next; s < seq; s++) win_clear(p->seq_window, s);
    }
    win_clear(p->seq_window, seq);
    win_test_set(p->seq_window, seq);
    add64(&st->lost_gaps, gap);
    st64(&st->next_seq, seq + 1);
  } else if (next - seq > SEQ_WINDOW) {
    /* older than the window: cannot tell a duplicate from a late frame */
    add64(&st->too_old, 1);
    add64(&st->reordered, 1);
    if (st->lost_gaps > 0) add64(&st->lost_gaps, (uint64_t)-1);
  } else if (win_test_set(p->seq_window, seq)) {
    add64(&st->duplicated, 1);
    return;
  } else {
    add64(&st->reordered, 1);
    if (st->lost_gaps > 0) add64(&st->lost_gaps, (uint64_t)-1); /* it was counted in a gap */
  }
  add64(&st->received, 1);

  uint64_t lat = now > ts ? now - ts : 0;
  add64(&st->hist[hist_index(lat)], 1);
  add64(&st->lat_sum, lat);
  if (st->lat_count == 0 || lat < st->lat_min) st64(&st->lat_min, lat);
  if (lat > st->lat_max) {
    st64(&st->lat_max_at_ns, ts);
    st64(&st->lat_max, lat);
  }
  add64(&st->lat_count, 1);
}

static uint16_t csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *d, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(d[i] << 8 | d[i + 1]);
  if (n & 1) sum += (uint32_t)d[n - 1] << 8;
  return sum;
}

static inline void put16be(uint8_t *d, uint16_t v) {
  d[0] = (uint8_t)(v >> 8);
  d[1] = (uint8_t)v;
}

/* Build the answer to an ARP request or ICMP echo request for our IP in out;
 * returns its length, or 0 when the frame is not one we answer. */
static uint32_t echo_reply(const struct probe_rx_cfg *c, const uint8_t *f, uint32_t len, uint8_t *out, bool *is_arp) {
  if (len < 14) return 0;
  uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
  uint32_t ip_be = htonl(c->ip);
  if (type == 0x0806) {
    if (len < 42) return 0;
    const uint8_t *a = f + 14;
    /* Ethernet/IPv4, request, for us */
    if (a[0] != 0 || a[1] != 1 || a[2] != 0x08 || a[3] != 0 || a[4] != 6 || a[5] != 4 || a[6] != 0 || a[7] != 1) return 0;
    if (memcmp(a + 24, &ip_be, 4) != 0) return 0;
    memcpy(out, f + 6, 6);
    memcpy(out + 6, c->mac, 6);
    out[12] = 0x08;
    out[13] = 0x06;
    uint8_t *o = out + 14;
    memcpy(o, a, 6);
    o[6] = 0;
    o[7] = 2;
    memcpy(o + 8, c->mac, 6);
    memcpy(o + 14, &ip_be, 4);
    memcpy(o + 18, a + 8, 6);  /* target hw = sender hw */
    memcpy(o + 24, a + 14, 4); /* target ip = sender ip */
    memset(out + 42, 0, 18);   /* pad to the 60-byte minimum */
    *is_arp = true;
    return 60;
  }
  if (type != 0x0800 || len < 14 + 20) return 0;
  const uint8_t *ip = f + 14;
  uint32_t ihl = (ip[0] & 0x0f) * 4u;
  if ((ip[0] >> 4) != 4 || ihl < 20) return 0;
  uint32_t total = (uint32_t)(ip[2] << 8 | ip[3]);
  if (total < ihl + 8 || 14 + total > len) return 0;
  if (ip[9] != 1 || memcmp(ip + 16, &ip_be, 4) != 0) return 0;
  if ((ip[6] & 0x3f) != 0 || ip[7] != 0) return 0; /* a fragment: not answered */
  const uint8_t *icmp = ip + ihl;
  if (icmp[0] != 8 || icmp[1] != 0) return 0;

  memcpy(out, f + 6, 6);
  memcpy(out + 6, c->mac, 6);
  out[12] = 0x08;
  out[13] = 0x00;
  uint8_t *oip = out + 14;
  memcpy(oip, ip, total);
  memcpy(oip + 12, ip + 16, 4); /* swap addresses */
  memcpy(oip + 16, ip + 12, 4);
  oip[8] = 64;
  oip[10] = oip[11] = 0;
  put16be(oip + 10, csum_fold(csum_add(0, oip, ihl)));
  uint8_t *oicmp = oip + ihl;
  oicmp[0] = 0;
  oicmp[2] = oicmp[3] = 0;
  put16be(oicmp + 2, csum_fold(csum_add(0, oicmp, total - ihl)));
  uint32_t n = 14 + total;
  if (n < 60) {
    memset(out + n, 0, 60 - n);
    n = 60;
  }
  *is_arp = false;
  return n;
}

/* A RARP "reverse request" from our MAC to broadcast, as QEMU announces a
 * guest after migration: sender and target hardware address both ours. */
static uint32_t announce_frame(const uint8_t mac[6], uint8_t *d) {
  memset(d, 0, 60);
  memset(d, 0xff, 6);
  memcpy(d + 6, mac, 6);
  put16be(d + 12, PROBE_ETHERTYPE_RARP);
  put16be(d + 14, 1);      /* Ethernet */
  put16be(d + 16, 0x0800); /* IPv4 */
  d[18] = 6;
  d[19] = 4;
  put16be(d + 20, 3); /* reverse request */
  memcpy(d + 22, mac, 6);
  memcpy(d + 32, mac, 6);
  return 60;
}

/* From the RX thread, the only user of the receiving port's TX ring (queue 0). */
static void announce(struct probe *p) {
  struct probe_stats *st = &p->st;
  struct probe_ring *tx = &p->ports[p->rx.announce_port].rings[1];
  tx_reclaim(tx, &st->tx_bad_used);
  if (tx->nfree == 0) return; /* the switch takes nothing: the next one will do */
  uint16_t id = tx->free_ids[--tx->nfree];
  uint8_t *b = tx->bufs + (size_t)id * PROBE_BUF_SIZE;
  memset(b, 0, PROBE_NET_HDR);
  tx_post(tx, id, PROBE_NET_HDR + announce_frame(p->rx.mac, b + PROBE_NET_HDR));
  __atomic_store_n(&tx->avail->idx, tx->avail_idx, __ATOMIC_RELEASE);
  kick(tx, &st->tx_kicks);
  add64(&st->announces, 1);
}

/* rxq: the queue pair it came in on; an echo answers on that pair's TX ring. */
static void handle_frame(struct probe *p, struct probe_port *pt, uint32_t rxq, const uint8_t *f, uint32_t len, uint64_t now) {
  struct probe_stats *st = &p->st;
  if (f[12] == (PROBE_ETHERTYPE_RARP >> 8) && f[13] == (PROBE_ETHERTYPE_RARP & 0xff)) {
    add64(&st->announces_seen, 1); /* another port announcing itself: not ours to answer */
    return;
  }
  if (p->rx.echo) {
    struct probe_ring *tx = &pt->rings[2 * rxq + 1];
    tx_reclaim(tx, &st->tx_bad_used);
    if (tx->nfree == 0) {
      add64(&st->echo_ring_full, 1);
      return;
    }
    uint16_t id = tx->free_ids[tx->nfree - 1];
    uint8_t *b = tx->bufs + (size_t)id * PROBE_BUF_SIZE;
    bool is_arp = false;
    uint32_t n = echo_reply(&p->rx, f, len, b + PROBE_NET_HDR, &is_arp);
    if (n == 0) {
      add64(&st->unknown, 1);
      return;
    }
    tx->nfree--;
    memset(b, 0, PROBE_NET_HDR);
    tx_post(tx, id, PROBE_NET_HDR + n);
    __atomic_store_n(&tx->avail->idx, tx->avail_idx, __ATOMIC_RELEASE);
    kick(tx, &st->tx_kicks);
    add64(is_arp ? &st->arp_replies : &st->icmp_replies, 1);
    add64(&st->sent, 1);
    return;
  }
  uint32_t magic = 0;
  if (len >= PROBE_FRAME_MIN_BYTES) memcpy(&magic, f + 14, 4);
  if (len < PROBE_FRAME_MIN_BYTES || f[12] != (PROBE_ETHERTYPE >> 8) || f[13] != (PROBE_ETHERTYPE & 0xff) ||
      ntohl(magic) != PROBE_MAGIC) {
    add64(&st->unknown, 1);
    return;
  }
  uint32_t stream;
  memcpy(&stream, f + 18, 4);
  if (stream != p->rx.stream) {
    add64(&st->foreign, 1);
    return;
  }
  track(p, f, now, rxq);
}

/* Take every used entry of one RX queue, handle it, and post the buffer again. */
static unsigned rx_queue(struct probe *p, struct probe_port *pt, uint32_t k) {
  struct probe_ring *r = &pt->rings[2 * k];
  struct probe_stats *st = &p->st;
  uint16_t used_idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
  unsigned n = 0;
  uint64_t now = 0;
  while (r->last_used != used_idx) {
    struct vring_used_elem e = r->used->ring[r->last_used & (r->num - 1)];
    r->last_used++;
    if (e.id >= r->num || !r->outstanding[e.id]) {
      add64(&st->rx_bad_used, 1);
      continue;
    }
    if (n == 0) now = probe_now_ns();
    n++;
    if (e.len >= PROBE_NET_HDR + 14 && e.len <= PROBE_BUF_SIZE) {
      handle_frame(p, pt, k, r->bufs + (size_t)e.id * PROBE_BUF_SIZE + PROBE_NET_HDR, e.len - PROBE_NET_HDR, now);
    } else {
      add64(&st->unknown, 1);
    }
    r->avail->ring[r->avail_idx & (r->num - 1)] = (uint16_t)e.id;
    r->avail_idx++;
  }
  if (n > 0) {
    __atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
    kick(r, &st->rx_kicks);
  }
  return n;
}

static unsigned rx_port(struct probe *p, struct probe_port *pt) {
  unsigned n = 0;
  for (uint32_t k = 0; k < p->nq; k++) n += rx_queue(p, pt, k);
  return n;
}

static void set_rx_interrupts(struct probe *p, bool on) {
  for (int i = 0; i < p->nports; i++)
    for (uint32_t k = 0; k < p->nq; k++) {
      struct vring_avail *a = p->ports[i].rings[2 * k].avail;
      __atomic_store_n(&a->flags, on ? 0 : VRING_AVAIL_F_NO_INTERRUPT, __ATOMIC_RELEASE);
    }
}

static bool rx_pending(struct probe *p) {
  for (int i = 0; i < p->nports; i++)
    for (uint32_t k = 0; k < p->nq; k++) {
      struct probe_ring *r = &p->ports[i].rings[2 * k];
      if (__atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE) != r->last_used) return true;
    }
  return false;
}

static void drain_eventfd(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR) {
  }
}

void *probe_rx_main(void *arg) {
  struct probe *p = arg;
  struct probe_stats *st = &p->st;
  struct pollfd pfd[PROBE_MAX_PORTS * PROBE_MAX_QP + 1];
  int npfd = 0;
  for (int i = 0; i < p->nports; i++)
    for (uint32_t k = 0; k < p->nq; k++) pfd[npfd++] = (struct pollfd){.fd = p->ports[i].rings[2 * k].call_fd, .events = POLLIN};
  pfd[npfd++] = (struct pollfd){.fd = p->wake_fd, .events = POLLIN};
  __atomic_store_n(&p->rx_tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);

  set_rx_interrupts(p, false);
  unsigned idle = 0;
  uint64_t announce_at = 0;
  while (!__atomic_load_n(&p->rx_stop, __ATOMIC_ACQUIRE)) {
    if (p->rx.announce_port >= 0) {
      uint64_t now = probe_now_ns();
      if (now >= announce_at) {
        announce(p);
        announce_at = now + PROBE_ANNOUNCE_NS;
      }
    }
    unsigned n = 0;
    for (int i = 0; i < p->nports; i++) n += rx_port(p, &p->ports[i]);
    if (n > 0) {
      idle = 0;
      continue;
    }
    if (++idle < RX_IDLE_SPINS) {
      __builtin_ia32_pause();
      continue;
    }
    /* Arm interrupts, then look once more: a frame published between our last
     * look and the device reading the flag would otherwise wait a whole poll. */
    set_rx_interrupts(p, true);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!rx_pending(p)) {
      add64(&st->rx_sleeps, 1);
      int r = poll(pfd, (nfds_t)npfd, RX_POLL_MS);
      if (r > 0) {
        add64(&st->rx_wakeups, 1);
        for (int i = 0; i < npfd; i++)
          if (pfd[i].revents & POLLIN) drain_eventfd(pfd[i].fd);
      }
    }
    set_rx_interrupts(p, false);
    idle = 0;
  }
  for (int i = 0; i < p->nports; i++) rx_port(p, &p->ports[i]);
  st64(&st->rx_cpu_ns, thread_cpu_ns());
  return NULL;
}
