/*
 * Probe packet loops, N-API side (see src/native/probe-native.ts). A probe
 * handle is an external owning a struct probe: its mappings, threads and wake
 * eventfd. probeDestroy stops and releases all of it; the finalizer does the
 * same for a handle nobody destroyed, then frees the struct.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "probe.h"
#include "ziu.h"

static void probe_stop_tx(struct probe *p) {
  if (!p->tx_started) return;
  __atomic_store_n(&p->tx_stop, 1, __ATOMIC_RELEASE);
  pthread_join(p->tx_thread, NULL);
  p->tx_started = false;
}

static void probe_stop_rx(struct probe *p) {
  if (!p->rx_started) return;
  __atomic_store_n(&p->rx_stop, 1, __ATOMIC_RELEASE);
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(p->wake_fd, &one, sizeof(one));
  } while (n < 0 && errno == EINTR);
  pthread_join(p->rx_thread, NULL);
  p->rx_started = false;
}

static void probe_release(struct probe *p) {
  if (p->destroyed) return;
  probe_stop_tx(p);
  probe_stop_rx(p);
  for (int i = 0; i < p->nports; i++) {
    struct probe_port *pt = &p->ports[i];
    if (pt->base) munmap(pt->base, pt->size);
    pt->base = NULL;
    for (int r = 0; r < PROBE_MAX_RINGS; r++) {
      free(pt->rings[r].free_ids);
      free(pt->rings[r].outstanding);
      pt->rings[r].free_ids = NULL;
      pt->rings[r].outstanding = NULL;
    }
  }
  p->nports = 0;
  if (p->wake_fd >= 0) close(p->wake_fd);
  p->wake_fd = -1;
  free(p->seq_window);
  p->seq_window = NULL;
  p->destroyed = true;
}

static void probe_finalize(napi_env env, void *data, void *hint) {
  struct probe *p = data;
  probe_release(p);
  p->magic = 0;
  free(p);
}

/* The probe behind a handle; NULL (TypeError thrown) if it is not one. */
static struct probe *get_probe(napi_env env, napi_value v) {
  napi_valuetype t;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok ||
      data == NULL || ((struct probe *)data)->magic != PROBE_STRUCT_MAGIC) {
    napi_throw_type_error(env, NULL, "ziu native: expected a probe handle");
    return NULL;
  }
  return data;
}

static bool ring_size_ok(int64_t n) { return n >= 2 && n <= 32768 && (n & (n - 1)) == 0; }

static bool get_mac(napi_env env, napi_value v, uint8_t out[6]) {
  void *d;
  size_t len;
  if (!ziu_get_bytes(env, v, &d, &len)) return false;
  if (len != 6) {
    napi_throw_range_error(env, NULL, "ziu native: a MAC address is 6 bytes");
    return false;
  }
  memcpy(out, d, 6);
  return true;
}

static bool queues_ok(int64_t q) { return q >= 1 && q <= PROBE_MAX_QP; }

/* probeMemSize(ringSize, queues) */
static napi_value n_probe_mem_size(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int64_t n, q;
  if (!ziu_get_i64(env, argv[0], &n) || !ziu_get_i64(env, argv[1], &q)) return NULL;
  if (!ring_size_ok(n) || !queues_ok(q)) return ziu_errno(env, EINVAL);
  return ziu_int(env, (int64_t)probe_mem_size((uint32_t)n, (uint32_t)q));
}

/* probeCreate(ringSize, queues): every port gets that many queue pairs */
static napi_value n_probe_create(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int64_t n, q;
  if (!ziu_get_i64(env, argv[0], &n) || !ziu_get_i64(env, argv[1], &q)) return NULL;
  if (!ring_size_ok(n) || !queues_ok(q)) return ziu_errno(env, EINVAL);
  struct probe *p = calloc(1, sizeof(*p));
  if (!p) return ziu_errno(env, ENOMEM);
  p->seq_window = calloc(SEQ_WINDOW / 64, sizeof(uint64_t));
  p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!p->seq_window || p->wake_fd < 0) {
    int err = p->wake_fd < 0 ? errno : ENOMEM;
    if (p->wake_fd >= 0) close(p->wake_fd);
    free(p->seq_window);
    free(p);
    return ziu_errno(env, err);
  }
  p->magic = PROBE_STRUCT_MAGIC;
  p->ring_size = (uint32_t)n;
  p->nq = (uint32_t)q;
  p->start_ns = probe_now_ns();
  napi_value ext;
  if (napi_create_external(env, p, probe_finalize, NULL, &ext) != napi_ok) {
    probe_finalize(env, p, NULL);
    napi_throw_error(env, NULL, "ziu native: cannot create a probe handle");
    return NULL;
  }
  return ext;
}


/* An array of exactly n fds; false with a TypeError thrown. */
static bool get_fds(napi_env env, napi_value v, uint32_t n, int32_t *out) {
  bool is = false;
  uint32_t len = 0;
  napi_is_array(env, v, &is);
  if (is) napi_get_array_length(env, v, &len);
  if (!is || len != n) {
    napi_throw_type_error(env, NULL, "ziu native: expected an array of one fd per ring");
    return false;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    napi_get_element(env, v, i, &e);
    if (!ziu_get_i32(env, e, &out[i])) return false;
  }
  return true;
}

/* probeAddPort(h, memFd, memSize, kicks, calls) -> layout | -errno; kicks and calls: one eventfd per ring (2 * queues) */
static napi_value n_probe_add_port(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 5);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  int32_t fd, kick[PROBE_MAX_RINGS], call[PROBE_MAX_RINGS];
  int64_t size;
  const uint32_t nr = 2 * p->nq;
  if (!ziu_get_i32(env, argv[1], &fd) || !ziu_get_i64(env, argv[2], &size) || !get_fds(env, argv[3], nr, kick) ||
      !get_fds(env, argv[4], nr, call))
    return NULL;
  if (p->destroyed) return ziu_errno(env, EBADF);
  if (p->tx_started || p->rx_started) return ziu_errno(env, EBUSY);
  if (p->nports >= PROBE_MAX_PORTS) return ziu_errno(env, ENOSPC);
  if (size < (int64_t)probe_mem_size(p->ring_size, p->nq)) return ziu_errno(env, EINVAL);
  struct stat sb;
  if (fstat(fd, &sb) < 0) return ziu_errno(env, errno);
  if (sb.st_size < size) return ziu_errno(env, EINVAL);

  struct probe_port *pt = &p->ports[p->nports];
  memset(pt, 0, sizeof(*pt));
  for (uint32_t r = 0; r < nr; r++) {
    pt->rings[r].free_ids = calloc(p->ring_size, sizeof(uint16_t));
    pt->rings[r].outstanding = calloc(p->ring_size, 1);
    if (!pt->rings[r].free_ids || !pt->rings[r].outstanding) {
      for (uint32_t k = 0; k < nr; k++) {
        free(pt->rings[k].free_ids);
        free(pt->rings[k].outstanding);
      }
      memset(pt, 0, sizeof(*pt));
      return ziu_errno(env, ENOMEM);
    }
  }
  void *base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (base == MAP_FAILED) {
    int err = errno;
    for (uint32_t k = 0; k < nr; k++) {
      free(pt->rings[k].free_ids);
      free(pt->rings[k].outstanding);
    }
    memset(pt, 0, sizeof(*pt));
    return ziu_errno(env, err);
  }
  probe_port_init(pt, p->ring_size, p->nq, base, (size_t)size, kick, call);
  int index = p->nports++;

  napi_value out, rings;
  napi_create_object(env, &out);
  ziu_set_prop(env, out, "port", ziu_int(env, index));
  ziu_set_prop(env, out, "base", ziu_bigint_u64(env, (uint64_t)(uintptr_t)base));
  ziu_set_prop(env, out, "size", ziu_int(env, size));
  napi_create_array_with_length(env, nr, &rings);
  for (uint32_t r = 0; r < nr; r++) {
    struct probe_ring *ring = &pt->rings[r];
    napi_value o;
    napi_create_object(env, &o);
    ziu_set_prop(env, o, "num", ziu_int(env, ring->num));
    ziu_set_prop(env, o, "desc", ziu_bigint_u64(env, (uint64_t)(uintptr_t)ring->desc));
    ziu_set_prop(env, o, "avail", ziu_bigint_u64(env, (uint64_t)(uintptr_t)ring->avail));
    ziu_set_prop(env, o, "used", ziu_bigint_u64(env, (uint64_t)(uintptr_t)ring->used));
    napi_set_element(env, rings, r, o);
  }
  ziu_set_prop(env, out, "rings", rings);
  return out;
}

/* probeStartTx(h, port, rate, size, streamId, srcMac, dstMac) */
static napi_value n_probe_start_tx(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 7);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  int32_t port;
  int64_t rate, size, stream;
  struct probe_tx_cfg c;
  memset(&c, 0, sizeof(c));
  if (!ziu_get_i32(env, argv[1], &port) || !ziu_get_i64(env, argv[2], &rate) || !ziu_get_i64(env, argv[3], &size) ||
      !ziu_get_i64(env, argv[4], &stream) || !get_mac(env, argv[5], c.src) || !get_mac(env, argv[6], c.dst))
    return NULL;
  if (p->destroyed) return ziu_errno(env, EBADF);
  if (p->tx_started) return ziu_errno(env, EBUSY);
  if (port < 0 || port >= p->nports || rate < 1 || rate > 100000000 || size < 64 || size > PROBE_MAX_FRAME ||
      stream < 0 || stream > 0xffffffffll)
    return ziu_errno(env, EINVAL);
  if (p->rx_started && p->rx.echo) return ziu_errno(env, EBUSY); /* echo owns the TX rings */
  c.port = port;
  c.rate = (uint64_t)rate;
  c.size = (uint32_t)size;
  c.stream = (uint32_t)stream;
  p->tx = c;
  p->tx_stop = 0;
  p->tx_tid = 0;
  int err = pthread_create(&p->tx_thread, NULL, probe_tx_main, p);
  if (err) return ziu_errno(env, err);
  p->tx_started = true;
  while (!__atomic_load_n(&p->tx_tid, __ATOMIC_ACQUIRE)) sched_yield(); /* placing it needs its tid */
  return ziu_int(env, 0);
}

/* probeStartRx(h, streamId, echoIp, echoMac): echoIp 0 measures, otherwise answers ARP/ICMP for it */
static napi_value n_probe_start_rx(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 5);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  int64_t stream, ip;
  int32_t announce;
  struct probe_rx_cfg c;
  memset(&c, 0, sizeof(c));
  if (!ziu_get_i64(env, argv[1], &stream) || !ziu_get_i64(env, argv[2], &ip) || !get_mac(env, argv[3], c.mac) ||
      !ziu_get_i32(env, argv[4], &announce))
    return NULL;
  if (p->destroyed) return ziu_errno(env, EBADF);
  if (p->rx_started) return ziu_errno(env, EBUSY);
  if (p->nports == 0 || stream < 0 || stream > 0xffffffffll || ip < 0 || ip > 0xffffffffll) return ziu_errno(env, EINVAL);
  if (announce < -1 || announce >= p->nports) return ziu_errno(env, EINVAL);
  c.announce_port = announce;
  if (ip != 0 && p->tx_started) return ziu_errno(env, EBUSY);
  c.stream = (uint32_t)stream;
  c.echo = ip != 0;
  c.ip = (uint32_t)ip;
  p->rx = c;
  p->rx_stop = 0;
  p->rx_tid = 0;
  int err = pthread_create(&p->rx_thread, NULL, probe_rx_main, p);
  if (err) return ziu_errno(env, err);
  p->rx_started = true;
  while (!__atomic_load_n(&p->rx_tid, __ATOMIC_ACQUIRE)) sched_yield();
  return ziu_int(env, 0);
}

static napi_value n_probe_stop_tx(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  probe_stop_tx(p);
  return ziu_int(env, 0);
}

static napi_value n_probe_stop_rx(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  probe_stop_rx(p);
  return ziu_int(env, 0);
}

static napi_value n_probe_destroy(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  probe_release(p);
  return ziu_int(env, 0);
}

/* A running thread's CPU time from its clock; a stopped one's from what it recorded on exit. */
static uint64_t thread_cpu(bool started, pthread_t t, const uint64_t *final) {
  if (started) {
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(t, &cid) == 0 && clock_gettime(cid, &ts) == 0)
      return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  }
  return ld64(final);
}

#define SET(name, expr) ziu_set_prop(env, out, name, ziu_int(env, (int64_t)(expr)))

/* {count, meanNs, p50Ns, p90Ns, p99Ns, p999Ns, maxNs} of one histogram. */
static napi_value hist_stats(napi_env env, const uint64_t *hist, uint64_t count, uint64_t max, uint64_t sum) {
  napi_value out;
  napi_create_object(env, &out);
  SET("count", count);
  SET("meanNs", count ? sum / count : 0);
  SET("p50Ns", probe_hist_percentile(hist, count, max, 0.50));
  SET("p90Ns", probe_hist_percentile(hist, count, max, 0.90));
  SET("p99Ns", probe_hist_percentile(hist, count, max, 0.99));
  SET("p999Ns", probe_hist_percentile(hist, count, max, 0.999));
  SET("maxNs", max);
  return out;
}

static napi_value n_probe_stats(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  struct probe_stats *s = &p->st;
  napi_value out;
  napi_create_object(env, &out);
  SET("nowNs", probe_now_ns());
  SET("createdNs", p->start_ns);
  SET("sent", ld64(&s->sent));
  SET("txRingFull", ld64(&s->tx_ring_full));
  SET("txKicks", ld64(&s->tx_kicks));
  SET("txBadUsed", ld64(&s->tx_bad_used));
  SET("received", ld64(&s->received));
  SET("duplicated", ld64(&s->duplicated));
  SET("reordered", ld64(&s->reordered));
  SET("lostGaps", ld64(&s->lost_gaps));
  SET("tooOld", ld64(&s->too_old));
  SET("unknown", ld64(&s->unknown));
  SET("foreign", ld64(&s->foreign));
  SET("rxBadUsed", ld64(&s->rx_bad_used));
  SET("rxKicks", ld64(&s->rx_kicks));
  SET("rxSleeps", ld64(&s->rx_sleeps));
  SET("rxWakeups", ld64(&s->rx_wakeups));
  SET("arpReplies", ld64(&s->arp_replies));
  SET("icmpReplies", ld64(&s->icmp_replies));
  SET("echoRingFull", ld64(&s->echo_ring_full));
  SET("announces", ld64(&s->announces));
  SET("announcesSeen", ld64(&s->announces_seen));
  SET("nextSeq", ld64(&s->next_seq));
  SET("maxGapNs", ld64(&s->max_gap_ns));
  SET("maxGapAtNs", ld64(&s->max_gap_at_ns));
  SET("firstRxNs", ld64(&s->first_rx_ns));
  SET("lastRxNs", ld64(&s->last_rx_ns));
  SET("txCpuNs", thread_cpu(p->tx_started, p->tx_thread, &s->tx_cpu_ns));
  SET("rxCpuNs", thread_cpu(p->rx_started, p->rx_thread, &s->rx_cpu_ns));
  /* frames we published on a TX ring that the device has not consumed yet
   * (not the receiving port's announcements: they are no frames of the stream) */
  uint64_t pending = 0;
  for (int i = 0; i < p->nports && !p->destroyed; i++)
    for (uint32_t k = 0; k < p->nq && !(p->rx_started && i == p->rx.announce_port); k++) {
      struct probe_ring *r = &p->ports[i].rings[2 * k + 1];
      uint16_t avail = __atomic_load_n(&r->avail->idx, __ATOMIC_ACQUIRE);
      uint16_t used = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
      pending += (uint16_t)(avail - used);
    }
  SET("txPending", pending);
  SET("txTid", p->tx_started ? p->tx_tid : 0);
  SET("rxTid", p->rx_started ? p->rx_tid : 0);
  SET("latencyMaxAtNs", ld64(&s->lat_max_at_ns));
  SET("reorderedInQueue", ld64(&s->reordered_in_queue));
  napi_value rxq;
  napi_create_array_with_length(env, p->nq, &rxq);
  for (uint32_t k = 0; k < p->nq; k++) napi_set_element(env, rxq, k, ziu_int(env, (int64_t)ld64(&s->rx_queue[k])));
  ziu_set_prop(env, out, "rxQueues", rxq);

  uint64_t count = ld64(&s->lat_count), lcount = ld64(&s->late_count);
  napi_value lat = hist_stats(env, s->hist, count, ld64(&s->lat_max), ld64(&s->lat_sum));
  ziu_set_prop(env, lat, "minNs", ziu_int(env, (int64_t)(count ? ld64(&s->lat_min) : 0)));
  ziu_set_prop(env, out, "latency", lat);
  napi_value late = hist_stats(env, s->late_hist, lcount, ld64(&s->late_max_ns), ld64(&s->late_sum));
  ziu_set_prop(env, late, "maxAtNs", ziu_int(env, (int64_t)ld64(&s->late_max_at_ns)));
  ziu_set_prop(env, out, "lateness", late);
  return out;
}

/* probeStallTx(h, ns): test hook, the TX thread sleeps ns once at its next turn (a descheduled vCPU) */
static napi_value n_probe_stall_tx(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  int64_t ns;
  if (!ziu_get_i64(env, argv[1], &ns)) return NULL;
  if (p->destroyed || !p->tx_started) return ziu_errno(env, EBADF);
  if (ns <= 0 || ns > 10000000000ll) return ziu_errno(env, EINVAL);
  __atomic_store_n(&p->tx_stall_ns, (uint64_t)ns, __ATOMIC_RELEASE);
  return ziu_int(env, 0);
}

/* probeRingState(h, port, ring) -> {availIdx, usedIdx, lastUsed}: what a reconnect resyncs from */
static napi_value n_probe_ring_state(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  struct probe *p = get_probe(env, argv[0]);
  if (!p) return NULL;
  int32_t port, ring;
  if (!ziu_get_i32(env, argv[1], &port) || !ziu_get_i32(env, argv[2], &ring)) return NULL;
  if (p->destroyed) return ziu_errno(env, EBADF);
  if (port < 0 || port >= p->nports || ring < 0 || (uint32_t)ring >= 2 * p->nq) return ziu_errno(env, EINVAL);
  struct probe_ring *r = &p->ports[port].rings[ring];
  napi_value out;
  napi_create_object(env, &out);
  SET("availIdx", __atomic_load_n(&r->avail->idx, __ATOMIC_ACQUIRE));
  SET("usedIdx", __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE));
  SET("lastUsed", __atomic_load_n(&r->last_used, __ATOMIC_RELAXED));
  return out;
}

#undef SET

napi_value ziu_init_probe(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "PROBE_ETHERTYPE", PROBE_ETHERTYPE);
  ziu_register_const(env, exports, "PROBE_MAGIC", PROBE_MAGIC);
  ziu_register_const(env, exports, "PROBE_FRAME_MIN_BYTES", PROBE_FRAME_MIN_BYTES);
  ziu_register_const(env, exports, "PROBE_NET_HDR", PROBE_NET_HDR);
  ziu_register_const(env, exports, "PROBE_BUF_SIZE", PROBE_BUF_SIZE);
  ziu_register_const(env, exports, "PROBE_MAX_FRAME", PROBE_MAX_FRAME);
  ziu_register_const(env, exports, "PROBE_MAX_QP", PROBE_MAX_QP);
  ziu_register(env, exports, "probeMemSize", n_probe_mem_size);
  ziu_register(env, exports, "probeCreate", n_probe_create);
  ziu_register(env, exports, "probeAddPort", n_probe_add_port);
  ziu_register(env, exports, "probeStartTx", n_probe_start_tx);
  ziu_register(env, exports, "probeStartRx", n_probe_start_rx);
  ziu_register(env, exports, "probeStopTx", n_probe_stop_tx);
  ziu_register(env, exports, "probeStopRx", n_probe_stop_rx);
  ziu_register(env, exports, "probeStats", n_probe_stats);
  ziu_register(env, exports, "probeRingState", n_probe_ring_state);
  ziu_register(env, exports, "probeStallTx", n_probe_stall_tx);
  ziu_register(env, exports, "probeDestroy", n_probe_destroy);
  return exports;
}
