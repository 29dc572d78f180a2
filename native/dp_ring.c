/*
 * Split rings on the backend side: guest memory translation, descriptor chain
 * walking, TX (guest -> bridge) and RX (bridge -> guest).
 *
 * Everything read from guest memory is untrusted: each descriptor is copied
 * once before it is checked (the guest may rewrite it meanwhile), every
 * [addr, addr+len) must lie inside one region, chains are bounded by their
 * table size (which also catches loops), indirect tables are bounds-checked
 * and may not nest. A bad chain costs the guest its packet, never its buffer:
 * it is still completed with a used entry.
 *
 * Work is bounded so that one guest cannot stretch a pass (and with it every
 * other port, a freeze and the control plane, which waits for the pass to
 * end): a chain, indirect entries included, or a frame merged over several
 * chains, may take at most DP_MAX_CHAIN descriptors (DPDK's vhost stops at
 * 256 too); one that takes more is completed and breaks its ring, which is
 * then not served until it is set up again, and reported (DP_FAULT_CHAIN).
 * And a ring costs at most DP_RING_PASS_DESCS descriptors per pass: TX chains
 * beyond wait for the next pass, RX frames beyond find no buffer.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "dp.h"

static inline void *xlate(const struct dp_region *r, uint64_t base, uint64_t addr, uint64_t len) {
  if (addr < base) return NULL;
  uint64_t off = addr - base;
  if (off > r->size || len > r->size - off) return NULL;
  return r->host + off;
}

/* Guest-physical (descriptor addresses) to host. */
void *dp_gpa(const struct dp_port *p, uint64_t addr, uint64_t len) {
  for (uint32_t i = 0; i < p->nregions; i++) {
    void *h = xlate(&p->regions[i], p->regions[i].gpa, addr, len);
    if (h) return h;
  }
  return NULL;
}

/* Frontend user address (SET_VRING_ADDR) to host. */
void *dp_uva(const struct dp_port *p, uint64_t addr, uint64_t len) {
  for (uint32_t i = 0; i < p->nregions; i++) {
    void *h = xlate(&p->regions[i], p->regions[i].uaddr, addr, len);
    if (h) return h;
  }
  return NULL;
}

/* Point the ring at the current memory table; -EFAULT if a structure is not
 * wholly inside one region, -EINVAL if it is misaligned (the atomics on
 * avail->idx and used->idx need natural alignment). */
int dp_ring_translate(const struct dp_port *p, struct dp_vring *vr) {
  void *d = dp_uva(p, vr->desc_ua, vring_desc_bytes(vr->num));
  void *a = dp_uva(p, vr->avail_ua, vring_avail_bytes(vr->num));
  void *u = dp_uva(p, vr->used_ua, vring_used_bytes(vr->num));
  if (!d || !a || !u) return -EFAULT;
  if (((uintptr_t)d & 15) || ((uintptr_t)a & 1) || ((uintptr_t)u & 3)) return -EINVAL;
  vr->desc = d;
  vr->avail = a;
  vr->used = u;
  return 0;
}

struct chain {
  const struct dp_port *p;
  const uint8_t *table;
  uint32_t table_n, next, seen;
  uint32_t total;  /* descriptors read, for DP_MAX_CHAIN (a merged frame's earlier chains included) */
  uint32_t *spent; /* the ring's descriptors this pass */
  bool indirect, done;
};

/* start: descriptors the frame already took in earlier chains. */
static inline int chain_begin(struct chain *c, const struct dp_port *p, struct dp_vring *vr, uint16_t head, uint32_t start) {
  if (head >= vr->num) return -1;
  c->p = p;
  c->total = start;
  c->spent = &vr->pass_descs;
  c->table = (const uint8_t *)vr->desc;
  c->table_n = vr->num;
  c->next = head;
  c->seen = 0;
  c->indirect = false;
  c->done = false;
  return 0;
}

/* 1 with the next buffer, 0 at the end of the chain, -1 if the chain is bad,
 * CHAIN_TOO_LONG if it takes more than DP_MAX_CHAIN descriptors. */
#define CHAIN_TOO_LONG (-2)
static inline int chain_next(struct chain *c, uint8_t **ptr, uint32_t *len, bool *write) {
  for (;;) {
    if (c->done) return 0;
    if (c->total >= DP_MAX_CHAIN) return CHAIN_TOO_LONG;
    if (c->seen >= c->table_n) return -1; /* longer than its table: a loop */
    struct vring_desc d;
    memcpy(&d, c->table + 16ull * c->next, sizeof(d));
    c->seen++;
    c->total++;
    (*c->spent)++;
    if (d.flags & VRING_DESC_F_INDIRECT) {
      /* Only as the whole chain (the spec forbids INDIRECT|NEXT), never nested. */
      if (c->indirect || c->seen != 1 || (d.flags & VRING_DESC_F_NEXT)) return -1;
      if (d.len == 0 || d.len % sizeof(struct vring_desc) || d.len / sizeof(struct vring_desc) > VIRTQ_MAX_SIZE) return -1;
      const uint8_t *t = dp_gpa(c->p, d.addr, d.len);
      if (!t || ((uintptr_t)t & 1)) return -1;
      c->table = t;
      c->table_n = d.len / sizeof(struct vring_desc);
      c->next = 0;
      c->seen = 0;
      c->indirect = true;
      continue;
    }
    uint8_t *h = dp_gpa(c->p, d.addr, d.len);
    if (!h) return -1;
    if (d.flags & VRING_DESC_F_NEXT) {
      if (d.next >= c->table_n) return -1;
      c->next = d.next;
    } else {
      c->done = true;
    }
    *ptr = h;
    *len = d.len;
    *write = (d.flags & VRING_DESC_F_WRITE) != 0;
    return 1;
  }
}

static inline uint16_t avail_idx(const struct dp_vring *vr) {
  return __atomic_load_n(&vr->avail->idx, __ATOMIC_ACQUIRE);
}

static inline void put_used(struct dp_vring *vr, uint16_t slot, uint32_t id, uint32_t len) {
  struct vring_used_elem *e = &vr->used->ring[slot & (vr->num - 1)];
  e->id = id;
  e->len = len;
}

/* Copy one TX chain's frame (without its virtio_net_hdr) to out; its length,
 * 0 if invalid, CHAIN_TOO_LONG if the ring must be broken. */
static int tx_copy(const struct dp_port *p, struct dp_vring *vr, uint16_t head, uint8_t *out) {
  struct chain c;
  if (chain_begin(&c, p, vr, head, 0) < 0) return 0;
  uint32_t skip = p->hdr_len, n = 0, len;
  uint8_t *ptr;
  bool write;
  int r;
  while ((r = chain_next(&c, &ptr, &len, &write)) > 0) {
    if (write) return 0; /* a TX chain is read-only for us */
    if (len <= skip) {
      skip -= len;
      continue;
    }
    ptr += skip;
    len -= skip;
    skip = 0;
    if (len > DP_MAX_FRAME - n) return 0;
    memcpy(out + n, ptr, len);
    n += len;
  }
  if (r == CHAIN_TOO_LONG) return CHAIN_TOO_LONG;
  if (r < 0 || skip > 0 || n < DP_MIN_FRAME) return 0;
  return (int)n;
}

/* Pop up to DP_BATCH chains from the TX ring into dp->frames, complete them
 * all and publish. Returns chains consumed; *nframes the valid frames. */
/* Chains waiting in a running ring. More than num outstanding is a corrupt
 * avail index: the ring is left alone (not read, and not counted as work,
 * which would keep the worker from ever sleeping) until the guest fixes it. */
static inline uint16_t pending(const struct dp_vring *vr) {
  if (!dp_ring_running(vr)) return 0;
  uint16_t n = (uint16_t)(avail_idx(vr) - vr->last_avail);
  return n > vr->num ? 0 : n;
}

unsigned dp_vhost_tx_burst(struct dp *dp, struct dp_port *p, struct dp_vring *vr, unsigned *nframes) {
  *nframes = 0;
  uint16_t pending_n = pending(vr);
  if (pending_n == 0) return 0;
  unsigned n = pending_n < DP_BATCH ? pending_n : DP_BATCH, nf = 0, done = 0;
  while (done < n && vr->pass_descs < DP_RING_PASS_DESCS) {
    uint16_t head = __atomic_load_n(&vr->avail->ring[vr->last_avail & (vr->num - 1)], __ATOMIC_RELAXED);
    vr->last_avail++;
    done++;
    uint8_t *slot = dp->staging + (size_t)nf * DP_SLOT_SIZE;
    int len = tx_copy(p, vr, head, slot);
    put_used(vr, vr->used_idx++, head, 0);
    if (len > 0) {
      dp->frames[nf].data = slot;
      dp->frames[nf].len = (uint32_t)len;
      nf++;
      vr->packets++;
      continue;
    }
    p->st.drops_invalid++;
    if (len == CHAIN_TOO_LONG) {
      dp_ring_fault(dp, vr, DP_FAULT_CHAIN, 0); /* completed above; the ring is not served again */
      break;
    }
  }
  dp_ring_publish(dp, vr);
  *nframes = nf;
  return done;
}

static inline uint32_t ld32(const uint8_t *b) {
  uint32_t v;
  memcpy(&v, b, 4);
  return v;
}

static inline uint32_t ld16(const uint8_t *b) {
  uint16_t v;
  memcpy(&v, b, 2);
  return v;
}

/*
 * A flow's hash, to keep it on one RX queue: MACs, then (past one VLAN tag)
 * IPv4 or IPv6 addresses and, for TCP, UDP and SCTP (not IPv4 fragments
 * after the first, nor IPv6 extension headers), both L4 ports. An XOR fold,
 * so that it costs a few loads; its low bits take every varying bit of the
 * fields, so flows that differ only in the low bits of one port (or
 * address) land on as many distinct queues as they can.
 */
uint32_t dp_flow_hash(const uint8_t *f, uint32_t len) {
  uint32_t h = ld32(f) ^ ld16(f + 4) ^ ld32(f + 6) ^ ld16(f + 10);
  uint32_t off = 12;
  uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
  if ((type == 0x8100 || type == 0x88a8) && len >= 18) {
    off = 16;
    type = (uint16_t)(f[16] << 8 | f[17]);
  }
  off += 2; /* the L3 header */
  uint32_t l4 = 0;
  uint8_t proto = 0;
  if (type == 0x0800 && len >= off + 20 && (f[off] >> 4) == 4) {
    uint32_t ihl = (f[off] & 0x0fu) * 4u;
    h ^= ld32(f + off + 12) ^ ld32(f + off + 16);
    proto = f[off + 9];
    bool later_fragment = ((f[off + 6] & 0x1f) | f[off + 7]) != 0;
    if (ihl >= 20 && !later_fragment) l4 = off + ihl;
  } else if (type == 0x86dd && len >= off + 40) {
    for (uint32_t i = 8; i < 40; i += 4) h ^= ld32(f + off + i);
    proto = f[off + 6];
    l4 = off + 40;
  }
  if (l4 && (proto == 6 || proto == 17 || proto == 132) && len >= l4 + 4) h ^= ld32(f + l4);
  h ^= h >> 16;
  h ^= h >> 8;
  return h;
}

/* The RX queue a frame goes to: one of the port's running (started and
 * enabled) RX rings, by flow hash when there are several; NULL if none. The
 * hash is computed at most once per frame (a flood reaches many ports). */
static struct dp_vring *rx_queue(struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t *hash, bool *hashed) {
  uint8_t run[DP_MAX_QP];
  unsigned n = 0;
  for (uint32_t q = 0; q < p->nrings; q += 2)
    if (dp_ring_running(&p->rings[q])) run[n++] = (uint8_t)q;
  if (n <= 1) return n ? &p->rings[run[0]] : NULL;
  if (!*hashed) {
    *hash = dp_flow_hash(frame, len);
    *hashed = true;
  }
  return &p->rings[run[*hash % n]];
}

/*
 * Deliver one frame into an RX ring (rx_queue picks it): zeroed virtio_net_hdr (num_buffers set
 * when the header has it) + frame. Without MRG_RXBUF it must fit one chain;
 * with it, it spans as many chains as needed. Not enough buffers: the frame is
 * dropped and nothing is consumed, so the guest's buffers stay where they are
 * (a chain too small for a frame is not lost; a smaller frame may still use
 * it). A bad chain is consumed with len 0, together with the chains already
 * taken for this frame, and the frame is dropped. Used entries are written
 * beyond used->idx, so abandoning a frame is just not advancing the shadows.
 */
void dp_vhost_rx(struct dp *dp, struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t *hash, bool *hashed) {
  struct dp_vring *vr = rx_queue(p, frame, len, hash, hashed);
  if (!vr || vr->pass_descs >= DP_RING_PASS_DESCS) {
    p->st.drops_no_buffer++;
    return;
  }
  uint16_t end = avail_idx(vr);
  if ((uint16_t)(end - vr->last_avail) > vr->num) {
    p->st.drops_invalid++;
    return;
  }
  const uint32_t hl = p->hdr_len, total = hl + len;
  uint32_t off = 0; /* bytes of header + frame written */
  uint16_t la = vr->last_avail, ui = vr->used_idx, nbufs = 0;
  uint8_t *nb[2] = {NULL, NULL}; /* where num_buffers' two bytes landed */
  uint32_t descs = 0;            /* taken by this frame so far, over all its chains */
  bool too_long = false;

  while (off < total) {
    if (la == end || (nbufs > 0 && !p->mrg)) {
      p->st.drops_no_buffer++;
      return;
    }
    uint16_t head = __atomic_load_n(&vr->avail->ring[la & (vr->num - 1)], __ATOMIC_RELAXED);
    la++;
    struct chain c;
    uint32_t written = 0, seg;
    uint8_t *ptr;
    bool write, bad = chain_begin(&c, p, vr, head, descs) < 0;
    while (!bad && off < total) {
      int r = chain_next(&c, &ptr, &seg, &write);
      if (r == 0) break;
      if (r < 0 || !write) {
        too_long = r == CHAIN_TOO_LONG;
        bad = true;
        break;
      }
      uint32_t n = seg < total - off ? seg : total - off;
      uint32_t k = 0;
      if (off < hl) { /* header bytes: zero, num_buffers patched below */
        k = n < hl - off ? n : hl - off;
        memset(ptr, 0, k);
        if (hl == 12)
          for (uint32_t b = 10; b < 12; b++)
            if (b >= off && b < off + k) nb[b - 10] = ptr + (b - off);
      }
      memcpy(ptr + k, frame + (off + k - hl), n - k);
      off += n;
      written += n;
    }
    if (!bad && written == 0) bad = true; /* no room at all: useless in a merged frame */
    if (bad) {
      for (uint16_t u = vr->used_idx; u != ui; u++) vr->used->ring[u & (vr->num - 1)].len = 0;
      put_used(vr, ui++, head, 0);
      vr->last_avail = la;
      vr->used_idx = ui;
      p->st.drops_invalid++;
      if (too_long) dp_ring_fault(dp, vr, DP_FAULT_CHAIN, 0); /* everything taken is completed; published by the pass */
      return;
    }
    descs = c.total;
    put_used(vr, ui++, head, written);
    nbufs++;
  }
  if (nb[0]) *nb[0] = (uint8_t)nbufs;
  if (nb[1]) *nb[1] = (uint8_t)(nbufs >> 8);
  vr->last_avail = la;
  vr->used_idx = ui;
  vr->packets++;
  p->st.tx_packets++;
  p->st.tx_bytes += len;
}

/* Make completed entries visible, then interrupt the guest unless it said not to. */
void dp_ring_publish(struct dp *dp, struct dp_vring *vr) {
  if (vr->used_idx == vr->used_pub) return;
  __atomic_store_n(&vr->used->idx, vr->used_idx, __ATOMIC_RELEASE);
  vr->used_pub = vr->used_idx;
  /* Order the idx store before reading avail->flags: otherwise we could miss a
   * driver that just cleared NO_INTERRUPT and went to sleep. */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (vr->call_fd >= 0 && !(__atomic_load_n(&vr->avail->flags, __ATOMIC_RELAXED) & VRING_AVAIL_F_NO_INTERRUPT))
    dp_guest_signal(dp, vr);
}

bool dp_ring_pending(const struct dp_vring *vr) { return pending(vr) != 0; }

void dp_ring_set_no_notify(struct dp_vring *vr, bool no_notify) {
  __atomic_store_n(&vr->used->flags, no_notify ? VRING_USED_F_NO_NOTIFY : 0, __ATOMIC_RELAXED);
}

/*
 * Read each of the ring's three structures once, without writing anything
 * (the rings are still someone else's). On a host with shadow paging (this
 * project's PVM VMs) a thread's first touch of a page costs a hypervisor exit
 * even when its page table entry exists, and the cost comes back after the
 * process's mappings change (a GC's munmap): reads by the control thread at
 * import did not spare the worker. A new instance's thaw at 256 ports (512
 * rings) spent 1.7-2.0 ms in its first read of used->idx alone, about 3.5 us
 * a ring, inside the switchover. So the frozen worker reads every ring when
 * it is armed for the takeover, just before the freeze (dpArmTakeover).
 */
void dp_ring_warm(const struct dp_vring *vr) {
  (void)__atomic_load_n(&vr->used->idx, __ATOMIC_RELAXED);
  (void)__atomic_load_n(&vr->avail->idx, __ATOMIC_RELAXED);
  (void)__atomic_load_n(&vr->desc[0].flags, __ATOMIC_RELAXED);
}
