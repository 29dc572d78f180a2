/*
 * The fake NIC (docs/offload.md): what stands in for a SmartNIC in tests and
 * CI, run in a process of its own (ziu-fakenic) so that it outlives every
 * datapath instance, as hardware does.
 *
 * It owns the wire. Each VF is two SOCK_SEQPACKET socketpairs, one frame per
 * packet: the VM's (the VM holds one end, the NIC the other) and the
 * representor's (the NIC holds one end; every attached datapath holds a
 * duplicate of the other and serves it as a port). A frame the VM sends is
 * looked up in the flow table: a hit is forwarded to the flow's VF (or
 * dropped) here, without any datapath; a miss goes up the representor,
 * where the host datapath bridges it. A frame a datapath writes to a
 * representor goes out to that VF's VM. So while the host is frozen for a
 * handover, offloaded flows keep moving and missed frames wait in the
 * representor's socket, as they wait in a tap's queue.
 *
 * The flow table and counters live in a memfd (fakenic.h) that the fake
 * module in each datapath maps: that is how the datapath "programs the
 * hardware". One forwarding thread, epoll over every NIC-side end.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "dp_offload.h"
#include "fakenic.h"
#include "ziu.h"

#define FN_BUF 9280 /* > the largest frame (DP_MAX_FRAME 9216) */
#define FN_BURST 64
#define FN_SOCKBUF (4 << 20)

static const napi_type_tag FN_TAG = {0x7a69752d666e6963ull, 0x68616e646c650001ull};

struct fn {
  struct fn_shm *shm;
  size_t size;
  int shm_fd;
  uint32_t nvf, max_flows; /* ours: the shared header is written by datapaths too */
  int wire_nic[FN_MAX_VF], wire_vm[FN_MAX_VF];
  int rep_nic[FN_MAX_VF], rep_host[FN_MAX_VF];
  int ep_fd, stop_fd;
  pthread_t thread;
  bool running;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The frame's flow key (VLAN tag skipped, IPv4 or IPv6, ports of TCP, UDP and SCTP); false: not IP. */
static bool parse(const uint8_t *f, size_t len, uint32_t vf, struct fn_key *k) {
  memset(k, 0, sizeof(*k));
  k->vf = vf;
  if (len < 14) return false;
  size_t off = 12;
  uint16_t et = (uint16_t)(f[off] << 8 | f[off + 1]);
  if (et == 0x8100 && len >= 18) {
    off += 4;
    et = (uint16_t)(f[off] << 8 | f[off + 1]);
  }
  off += 2;
  size_t l4;
  if (et == 0x0800) {
    if (len < off + 20 || (f[off] >> 4) != 4) return false;
    size_t ihl = (size_t)(f[off] & 15) * 4;
    if (ihl < 20 || len < off + ihl) return false;
    k->ipver = 4;
    k->proto = f[off + 9];
    memcpy(k->src, f + off + 12, 4);
    memcpy(k->dst, f + off + 16, 4);
    if ((((f[off + 6] & 0x1f) << 8) | f[off + 7]) != 0) return true; /* a later fragment: no ports */
    l4 = off + ihl;
  } else if (et == 0x86dd) {
    if (len < off + 40) return false;
    k->ipver = 6;
    k->proto = f[off + 6];
    memcpy(k->src, f + off + 8, 16);
    memcpy(k->dst, f + off + 24, 16);
    l4 = off + 40;
  } else {
    return false;
  }
  if ((k->proto == 6 || k->proto == 17 || k->proto == 132) && len >= l4 + 4) {
    k->sport = (uint16_t)(f[l4] << 8 | f[l4 + 1]);
    k->dport = (uint16_t)(f[l4 + 2] << 8 | f[l4 + 3]);
  }
  return true;
}

static bool put(int fd, const uint8_t *buf, size_t len) {
  ssize_t r;
  do {
    r = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  return r == (ssize_t)len;
}

static int lock(struct fn_shm *s) {
  int r = pthread_mutex_lock(&s->lock);
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(&s->lock);
    r = 0;
  }
  return r;
}

#define ADD(field, n) __atomic_add_fetch(&(field), (n), __ATOMIC_RELAXED)

/* A frame from VF vf's VM: a flow forwards (or drops) it here; a miss goes up the representor. */
static void from_vm(struct fn *n, uint32_t vf, const uint8_t *buf, size_t len) {
  struct fn_shm *s = n->shm;
  struct fn_key k;
  uint8_t action = 0;
  uint32_t out = FN_NO_VF;
  if (parse(buf, len, vf, &k) && lock(s) == 0) {
    for (uint32_t i = 0; i < n->max_flows; i++) {
      struct fn_flow *e = &s->flows[i];
      if (!e->used || memcmp(&e->key, &k, sizeof(k)) != 0) continue;
      action = e->action;
      out = e->out_vf;
      e->packets++;
      e->bytes += len;
      e->last_ns = now_ns();
      break;
    }
    pthread_mutex_unlock(&s->lock);
  }
  struct fn_vf_stats *v = &s->vf[vf];
  if (action == DP_OFFLOAD_DROP) {
    ADD(v->rx_packets, 1);
    ADD(v->rx_bytes, len);
    ADD(v->drops, 1);
  } else if (action == DP_OFFLOAD_FORWARD && out < n->nvf) {
    ADD(v->rx_packets, 1);
    ADD(v->rx_bytes, len);
    if (put(n->wire_nic[out], buf, len)) {
      ADD(s->vf[out].tx_packets, 1);
      ADD(s->vf[out].tx_bytes, len);
    } else {
      ADD(s->vf[out].lost, 1);
    }
  } else if (put(n->rep_nic[vf], buf, len)) {
    ADD(v->missed, 1);
  } else {
    ADD(v->lost, 1);
  }
}

static void *fn_main(void *arg) {
  struct fn *n = arg;
  uint8_t *buf = malloc(FN_BUF);
  if (!buf) return NULL;
  for (;;) {
    struct epoll_event evs[64];
    int ne = epoll_wait(n->ep_fd, evs, 64, 1000);
    if (ne < 0 && errno != EINTR) break;
    bool stop = false;
    for (int i = 0; i < ne; i++) {
      uint32_t tag = evs[i].data.u32;
      if (tag == UINT32_MAX) {
        stop = true;
        continue;
      }
      uint32_t vf = tag & 0xffff;
      bool rep = tag >> 16;
      int fd = rep ? n->rep_nic[vf] : n->wire_nic[vf];
      for (int b = 0; b < FN_BURST; b++) {
        ssize_t r = recv(fd, buf, FN_BUF, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (rep) {
          if (put(n->wire_nic[vf], buf, (size_t)r))
            ADD(n->shm->vf[vf].from_host, 1);
          else
            ADD(n->shm->vf[vf].lost, 1);
        } else {
          from_vm(n, vf, buf, (size_t)r);
        }
      }
    }
    if (stop) break;
  }
  free(buf);
  return NULL;
}

static void bufs(int fd) {
  int sz = FN_SOCKBUF;
  /* Room for a freeze's worth of frames; FORCE beyond wmem_max needs CAP_NET_ADMIN. */
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

static void fn_close(struct fn *n) {
  if (n->running) {
    uint64_t one = 1;
    if (write(n->stop_fd, &one, sizeof(one)) < 0) {
    }
    pthread_join(n->thread, NULL);
  }
  for (uint32_t i = 0; i < FN_MAX_VF; i++) {
    int *fds[4] = {&n->wire_nic[i], &n->wire_vm[i], &n->rep_nic[i], &n->rep_host[i]};
    for (int j = 0; j < 4; j++)
      if (*fds[j] >= 0) close(*fds[j]);
  }
  if (n->ep_fd >= 0) close(n->ep_fd);
  if (n->stop_fd >= 0) close(n->stop_fd);
  if (n->shm) munmap(n->shm, n->size);
  if (n->shm_fd >= 0) close(n->shm_fd);
  free(n);
}

static void fn_finalize(napi_env env, void *data, void *hint) {
  struct fn **h = data;
  if (*h) fn_close(*h);
  free(h);
}

static struct fn **get_fn(napi_env env, napi_value v) {
  bool ok = false;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_check_object_type_tag(env, v, &FN_TAG, &ok) != napi_ok || !ok) {
    napi_throw_type_error(env, NULL, "ziu native: expected a fake NIC handle from fnCreate");
    return NULL;
  }
  struct fn **h;
  napi_get_value_external(env, v, (void **)&h);
  return h;
}

/* fnCreate(vfs, maxFlows): the shared state, the VFs' socketpairs and the forwarding thread. */
static napi_value n_create(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  int32_t nvf, max_flows;
  if (!ziu_get_i32(env, argv[0], &nvf) || !ziu_get_i32(env, argv[1], &max_flows)) return NULL;
  if (nvf < 1 || nvf > FN_MAX_VF || max_flows < 1 || max_flows > FN_MAX_FLOWS) return ziu_errno(env, EINVAL);
  struct fn *n = calloc(1, sizeof(*n));
  if (!n) return ziu_errno(env, ENOMEM);
  n->shm_fd = n->ep_fd = n->stop_fd = -1;
  for (int i = 0; i < FN_MAX_VF; i++) n->wire_nic[i] = n->wire_vm[i] = n->rep_nic[i] = n->rep_host[i] = -1;
  n->nvf = (uint32_t)nvf;
  n->max_flows = (uint32_t)max_flows;
  n->size = fn_bytes((uint32_t)max_flows);
  int err = 0;
  n->shm_fd = memfd_create("ziu-fakenic", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (n->shm_fd < 0 || ftruncate(n->shm_fd, (off_t)n->size) < 0) err = errno;
  /* Attached datapaths map it: it may never shrink under them. */
  if (!err) fcntl(n->shm_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  if (!err) {
    void *m = mmap(NULL, n->size, PROT_READ | PROT_WRITE, MAP_SHARED, n->shm_fd, 0);
    if (m == MAP_FAILED)
      err = errno;
    else
      n->shm = m;
  }
  if (!err) {
    struct fn_shm *s = n->shm;
    s->magic = FN_MAGIC;
    s->version = FN_VERSION;
    s->nvf = n->nvf;
    s->max_flows = s->capacity = (uint32_t)max_flows;
    s->size = n->size;
    s->inj_rng = 0x2545f4914f6cdd1dull;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s->lock, &a);
    pthread_mutexattr_destroy(&a);
  }
  if (!err && ((n->ep_fd = epoll_create1(EPOLL_CLOEXEC)) < 0 || (n->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)) err = errno;
  for (uint32_t i = 0; !err && i < n->nvf; i++) {
    int w[2], r[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, w) < 0) {
      err = errno;
      break;
    }
    n->wire_nic[i] = w[0];
    n->wire_vm[i] = w[1];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, r) < 0) {
      err = errno;
      break;
    }
    n->rep_nic[i] = r[0];
    n->rep_host[i] = r[1];
    int all[4] = {w[0], w[1], r[0], r[1]};
    for (int j = 0; j < 4; j++) bufs(all[j]);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    struct epoll_event ev2 = {.events = EPOLLIN, .data.u32 = (1u << 16) | i};
    if (epoll_ctl(n->ep_fd, EPOLL_CTL_ADD, w[0], &ev) < 0 || epoll_ctl(n->ep_fd, EPOLL_CTL_ADD, r[0], &ev2) < 0) err = errno;
  }
  if (!err) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (epoll_ctl(n->ep_fd, EPOLL_CTL_ADD, n->stop_fd, &ev) < 0) err = errno;
  }
  if (!err) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&n->thread, NULL, fn_main, n);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    n->running = err == 0;
    if (!err) pthread_setname_np(n->thread, "ziu-fakenic");
  }
  if (err) {
    fn_close(n);
    return ziu_errno(env, err);
  }
  struct fn **h = malloc(sizeof(*h));
  *h = n;
  napi_value ext;
  if (napi_create_external(env, h, fn_finalize, NULL, &ext) != napi_ok || napi_type_tag_object(env, ext, &FN_TAG) != napi_ok) {
    napi_throw_error(env, NULL, "ziu native: cannot create the fake NIC handle");
    return NULL;
  }
  return ext;
}

static napi_value n_destroy(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct fn **h = get_fn(env, argv[0]);
  if (!h) return NULL;
  if (*h) fn_close(*h);
  *h = NULL;
  return ziu_int(env, 0);
}

static napi_value fd_array(napi_env env, const int *fds, uint32_t n) {
  napi_value arr;
  napi_create_array_with_length(env, n, &arr);
  for (uint32_t i = 0; i < n; i++) napi_set_element(env, arr, i, ziu_int(env, fds[i]));
  return arr;
}

/* fnFds(h): {shm, vm: [...], host: [...]}, the NIC's own fds (send duplicates, never close them). */
static napi_value n_fds(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct fn **h = get_fn(env, argv[0]);
  if (!h) return NULL;
  if (!*h) return ziu_errno(env, EBADF);
  struct fn *n = *h;
  napi_value o;
  napi_create_object(env, &o);
  ziu_set_prop(env, o, "shm", ziu_int(env, n->shm_fd));
  ziu_set_prop(env, o, "vm", fd_array(env, n->wire_vm, n->nvf));
  ziu_set_prop(env, o, "host", fd_array(env, n->rep_host, n->nvf));
  return o;
}

/* fnInject(h, {failNext, failPpm, slowUs, ops, capacity}): -1 leaves a value as it is. */
static napi_value n_inject(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  struct fn **h = get_fn(env, argv[0]);
  if (!h) return NULL;
  if (!*h) return ziu_errno(env, EBADF);
  struct fn_shm *s = (*h)->shm;
  static const char *const names[5] = {"failNext", "failPpm", "slowUs", "ops", "capacity"};
  int64_t v[5];
  for (int i = 0; i < 5; i++) {
    napi_value x;
    if (napi_get_named_property(env, argv[1], names[i], &x) != napi_ok || !ziu_get_i64(env, x, &v[i])) return NULL;
  }
  if (v[1] > 1000000 || v[2] > 10000000 || v[4] > (int64_t)(*h)->max_flows) return ziu_errno(env, EINVAL);
  if (v[0] >= 0) __atomic_store_n(&s->inj_fail_next, (uint32_t)v[0], __ATOMIC_RELAXED);
  if (v[1] >= 0) __atomic_store_n(&s->inj_fail_ppm, (uint32_t)v[1], __ATOMIC_RELAXED);
  if (v[2] >= 0) __atomic_store_n(&s->inj_slow_us, (uint32_t)v[2], __ATOMIC_RELAXED);
  if (v[3] >= 0) __atomic_store_n(&s->inj_ops, (uint32_t)v[3], __ATOMIC_RELAXED);
  if (v[4] >= 0) {
    if (lock(s) != 0) return ziu_errno(env, EIO);
    s->capacity = (uint32_t)v[4];
    pthread_mutex_unlock(&s->lock);
  }
  return ziu_int(env, 0);
}

#define NUM(o, name, v) ziu_set_prop(env, o, name, ziu_double(env, (double)(v)))

/* fnStatus(h): ownership, counters, per-VF counters and every flow with its counters (VF numbers, not ports). */
static napi_value n_status(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  struct fn **h = get_fn(env, argv[0]);
  if (!h) return NULL;
  if (!*h) return ziu_errno(env, EBADF);
  struct fn *n = *h;
  struct fn_shm *s = n->shm;
  if (lock(s) != 0) return ziu_errno(env, EIO);
  napi_value o, vfs, flows, bridge;
  napi_create_object(env, &o);
  NUM(o, "vfs", s->nvf);
  NUM(o, "maxFlows", s->max_flows);
  NUM(o, "capacity", s->capacity);
  NUM(o, "ownerEpoch", s->owner_epoch);
  NUM(o, "ownerPid", s->owner_pid);
  NUM(o, "claims", s->claims);
  NUM(o, "adopts", s->adopts);
  NUM(o, "softResets", s->soft_resets);
  NUM(o, "flowSets", s->flow_sets);
  NUM(o, "flowDels", s->flow_dels);
  NUM(o, "bridgeAdds", s->bridge_adds);
  NUM(o, "bridgeDels", s->bridge_dels);
  NUM(o, "portAdds", s->port_adds);
  NUM(o, "portDels", s->port_dels);
  NUM(o, "injectedFailures", s->inj_failed);
  napi_create_array(env, &vfs);
  for (uint32_t i = 0; i < n->nvf; i++) {
    const struct fn_vf_stats *v = &s->vf[i];
    napi_value vo;
    napi_create_object(env, &vo);
    NUM(vo, "vf", i);
    NUM(vo, "rxPackets", v->rx_packets);
    NUM(vo, "rxBytes", v->rx_bytes);
    NUM(vo, "txPackets", v->tx_packets);
    NUM(vo, "txBytes", v->tx_bytes);
    NUM(vo, "drops", v->drops);
    NUM(vo, "missed", v->missed);
    NUM(vo, "fromHost", v->from_host);
    NUM(vo, "lost", v->lost);
    napi_set_element(env, vfs, i, vo);
  }
  napi_create_array(env, &flows);
  uint32_t k = 0;
  for (uint32_t i = 0; i < n->max_flows; i++) {
    const struct fn_flow *e = &s->flows[i];
    if (!e->used) continue;
    napi_value fo, buf;
    void *data;
    napi_create_object(env, &fo);
    NUM(fo, "vf", e->key.vf);
    NUM(fo, "ipver", e->key.ipver);
    NUM(fo, "proto", e->key.proto);
    NUM(fo, "sport", e->key.sport);
    NUM(fo, "dport", e->key.dport);
    napi_create_buffer_copy(env, 16, e->key.src, &data, &buf);
    ziu_set_prop(env, fo, "src", buf);
    napi_create_buffer_copy(env, 16, e->key.dst, &data, &buf);
    ziu_set_prop(env, fo, "dst", buf);
    NUM(fo, "action", e->action);
    ziu_set_prop(env, fo, "outVf", ziu_int(env, e->out_vf == FN_NO_VF ? -1 : (int64_t)e->out_vf));
    NUM(fo, "packets", e->packets);
    NUM(fo, "bytes", e->bytes);
    NUM(fo, "setEpoch", e->set_epoch);
    napi_set_element(env, flows, k++, fo);
  }
  napi_create_array(env, &bridge);
  k = 0;
  for (uint32_t i = 0; i < FN_MAX_BRIDGE; i++) {
    const struct fn_bridge *b = &s->bridge[i];
    if (!b->used) continue;
    napi_value bo, buf;
    void *data;
    napi_create_object(env, &bo);
    napi_create_buffer_copy(env, 6, b->mac, &data, &buf);
    ziu_set_prop(env, bo, "mac", buf);
    NUM(bo, "vf", b->vf);
    napi_set_element(env, bridge, k++, bo);
  }
  pthread_mutex_unlock(&s->lock);
  ziu_set_prop(env, o, "vfStats", vfs);
  ziu_set_prop(env, o, "flows", flows);
  ziu_set_prop(env, o, "bridge", bridge);
  return o;
}

napi_value ziu_init_fakenic(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "FN_MAX_VF", FN_MAX_VF);
  ziu_register_const(env, exports, "FN_MAX_FLOWS", FN_MAX_FLOWS);
  ziu_register(env, exports, "fnCreate", n_create);
  ziu_register(env, exports, "fnDestroy", n_destroy);
  ziu_register(env, exports, "fnFds", n_fds);
  ziu_register(env, exports, "fnInject", n_inject);
  ziu_register(env, exports, "fnStatus", n_status);
  return exports;
}
