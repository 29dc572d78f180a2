/*
 * Datapath engine: N-API glue, lifecycle and control (see dp.h for the
 * threading model). Every control call takes dp->lock, so it runs between two
 * worker passes, then bumps the generation and wakes the worker so that it
 * rebuilds its epoll set before it next sleeps.
 */
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "dp.h"
#include "ziu.h"

#define DP_HDR_BYTES 4096ull

void dp_mem_register(napi_env env, napi_value exports); /* dp_mem.c */
void dp_offload_register_napi(napi_env env, napi_value exports); /* dp_offload.c */

static const napi_type_tag DP_TAG = {0x7a69752d64702d68ull, 0x616e646c65000001ull};

/* What JS holds: dp becomes NULL at dpDestroy, so later calls get -EBADF. */
struct dp_handle {
  struct dp *dp;
};

/* The mem file holds the staging buffers (the tables have files of their own). */
static uint64_t mem_required(void) { return DP_HDR_BYTES + (uint64_t)DP_BATCH * DP_SLOT_SIZE; }

void dp_lock_ctl(struct dp *dp) {
  __atomic_add_fetch(&dp->ctl_waiting, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_lock(&dp->lock);
  __atomic_sub_fetch(&dp->ctl_waiting, 1, __ATOMIC_SEQ_CST);
}

/* After a change the worker must see: unlock and wake it. */
void dp_changed_unlock(struct dp *dp) {
  dp->gen++;
  pthread_mutex_unlock(&dp->lock);
  dp_kick_worker(dp);
}

#define lock_ctl dp_lock_ctl
#define changed_unlock dp_changed_unlock

static void unmap_regions(struct dp_port *p) {
  dp_mem_unmap(p->regions, p->nregions);
  p->nregions = 0;
}

/* A ring stops: the worker is out of it (we hold the lock) and everything it
 * consumed is completed. Let the guest kick again, so that whoever runs the
 * ring next finds the kick pending instead of a silent ring. */
static void stop_ring(struct dp *dp, struct dp_vring *vr, int q) {
  /* Frozen: guest memory is someone else's to write now (or again). */
  if (vr->started && vr->addr_set && DP_RING_TX(q) && !dp->frozen) dp_ring_set_no_notify(vr, false);
  vr->started = false;
}

/* Take a ring over from shared memory: used->idx is the truth about what was
 * completed (a frontend reconnecting in server mode sends BASE 0 even after
 * traffic; a predecessor process, or a successor that was rolled back, may
 * have run the ring). Since every consumed chain is completed, last_avail
 * must equal it too. */
static void resync_ring(struct dp_vring *vr, int q) {
  uint16_t u = __atomic_load_n(&vr->used->idx, __ATOMIC_ACQUIRE);
  vr->used_idx = vr->used_pub = u;
  vr->last_avail = u;
  /* RX kicks ("buffers added") are never needed: we don't queue frames. */
  dp_ring_set_no_notify(vr, !DP_RING_TX(q));
}

static void disarm(struct dp *dp) {
  if (dp->baton) munmap(dp->baton, 4096);
  dp->baton = NULL;
  dp->go_fd = dp->done_fd = -1;
}

static void beat_off(struct dp *dp) {
  if (dp->beat) munmap((char *)dp->beat - DP_BEAT_OFFSET, 4096);
  dp->beat = NULL;
}

static void destroy(struct dp *dp) {
  lock_ctl(dp);
  dp->stopping = true;
  pthread_mutex_unlock(&dp->lock);
  dp_kick_worker(dp);
  pthread_join(dp->worker, NULL);
  dp_offload_destroy(dp); /* the module keeps what it holds */
  disarm(dp);
  beat_off(dp);
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (p->in_use && p->kind == DP_KIND_VHOST)
      for (int q = 0; q < DP_MAX_RINGS; q++) stop_ring(dp, &p->rings[q], q);
    unmap_regions(p);
  }
  dp_tables_destroy(dp);
  munmap(dp->mem, dp->mem_size);
  close(dp->ctl_fd);
  close(dp->fault_fd);
  if (dp->ep_fd >= 0) close(dp->ep_fd);
  pthread_cond_destroy(&dp->warmed);
  pthread_mutex_destroy(&dp->lock);
  free(dp->ports);
  free(dp);
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  struct dp_handle *h = data;
  if (h->dp) destroy(h->dp); /* JS dropped it without dpDestroy: don't leak the thread */
  free(h);
}

/* ---- argument helpers ---- */

/* The dp behind a handle; NULL with *res set to the value to return. */
static struct dp_handle *get_handle(napi_env env, napi_value v, napi_value *res) {
  bool ok = false;
  napi_valuetype t;
  *res = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_check_object_type_tag(env, v, &DP_TAG, &ok) != napi_ok || !ok) {
    napi_throw_type_error(env, NULL, "ziu native: expected a datapath handle from dpCreate");
    return NULL;
  }
  struct dp_handle *h;
  napi_get_value_external(env, v, (void **)&h);
  if (!h->dp) {
    *res = ziu_errno(env, EBADF);
    return NULL;
  }
  return h;
}

/* For the other N-API files (dp_offload.c): the dp behind a handle, or NULL with *res set. */
struct dp *dp_from_handle(napi_env env, napi_value v, napi_value *res) {
  struct dp_handle *h = get_handle(env, v, res);
  return h ? h->dp : NULL;
}

struct dp *dp_from_value(napi_env env, napi_value v) {
  napi_value res;
  struct dp_handle *h = get_handle(env, v, &res);
  if (!h) {
    /* A destroyed handle: a TypeError here too (the caller returns NULL). */
    if (res) napi_throw_error(env, "EBADF", "ziu native: the datapath handle was destroyed");
    return NULL;
  }
  return h->dp;
}

#define GET_DP(var, value)                              \
  struct dp *var;                                       \
  do {                                                  \
    napi_value res_;                                    \
    struct dp_handle *h_ = get_handle(env, value, &res_); \
    if (!h_) return res_;                               \
    var = h_->dp;                                       \
  } while (0)

static bool get_prop_u64(napi_env env, napi_value obj, const char *name, uint64_t *out) {
  napi_value v;
  bool lossless = false;
  if (!ziu_get_prop(env, obj, name, &v)) return false;
  if (napi_get_value_bigint_uint64(env, v, out, &lossless) != napi_ok || !lossless) {
    char msg[96];
    snprintf(msg, sizeof(msg), "ziu native: '%s' must be a u64 bigint", name);
    napi_throw_type_error(env, NULL, msg);
    return false;
  }
  return true;
}


/* A port in use, or NULL (-ENOENT). Call with the lock held. */
static struct dp_port *port_at(struct dp *dp, int32_t port) {
  if (port < 0 || (uint32_t)port >= dp->max_ports || !dp->ports[port].in_use) return NULL;
  return &dp->ports[port];
}

/* A vhost port, or NULL with *err set: ENOENT (no such port), EINVAL (a tap). Call with the lock held. */
static struct dp_port *vhost_port_at(struct dp *dp, int32_t port, int *err) {
  struct dp_port *p = port_at(dp, port);
  *err = !p ? ENOENT : p->kind != DP_KIND_VHOST ? EINVAL : 0;
  return *err ? NULL : p;
}

/* A vhost port's ring, or NULL with *err set. Call with the lock held. */
static struct dp_vring *ring_at(struct dp *dp, int32_t port, int32_t q, int *err) {
  struct dp_port *p = vhost_port_at(dp, port, err);
  if (!p) return NULL;
  if (q < 0 || q >= DP_MAX_RINGS) {
    *err = EINVAL;
    return NULL;
  }
  return &p->rings[q];
}

/* The ring is configured (an address, a kick or call fd, enabled): the
 * per-pass loops must reach it. Call with the lock held. */
static void ring_in_use(struct dp *dp, int32_t port, int32_t q) {
  struct dp_port *p = &dp->ports[port];
  if ((uint32_t)q >= p->nrings) p->nrings = (uint32_t)q + 1;
}

/* ---- lifecycle ---- */

static napi_value n_dp_mem_required(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  int32_t entries;
  if (!ziu_get_i32(env, argv[0], &entries)) return NULL;
  if (entries < 1 || (uint32_t)entries > DP_MAX_MAC_ENTRIES) return ziu_errno(env, EINVAL);
  return ziu_int(env, (int64_t)mem_required());
}

static napi_value n_dp_create(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  int32_t fd;
  int64_t size, mac_entries, max_ports;
  if (!ziu_get_i32(env, argv[0], &fd) || !ziu_get_i64(env, argv[1], &size) ||
      !ziu_get_prop_i64(env, argv[2], "macEntries", &mac_entries) || !ziu_get_prop_i64(env, argv[2], "maxPorts", &max_ports))
    return NULL;
  if (size <= 0 || mac_entries < 1 || mac_entries > DP_MAX_MAC_ENTRIES || max_ports < 1 || max_ports > DP_MAX_PORTS)
    return ziu_errno(env, EINVAL);
  if ((uint64_t)size < mem_required()) return ziu_errno(env, ENOSPC);
  /* Touching a MAP_SHARED page beyond the end of the file is SIGBUS, not an error. */
  struct stat st;
  if (fstat(fd, &st) < 0) return ziu_errno(env, errno);
  if (st.st_size < size) return ziu_errno(env, EINVAL);
  /* Guest memory is guarded against a frontend that shrinks its file (dp_mem.c). */
  int gerr = dp_mem_install();
  if (gerr < 0) return ziu_errno(env, -gerr);

  struct dp *dp = calloc(1, sizeof(*dp));
  struct dp_handle *h = calloc(1, sizeof(*h));
  struct dp_port *ports = calloc((size_t)max_ports, sizeof(*ports));
  if (!dp || !h || !ports) {
    free(dp);
    free(h);
    free(ports);
    return ziu_errno(env, ENOMEM);
  }
  void *mem = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  int err = errno;
  int ctl = mem == MAP_FAILED ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ctl < 0) err = errno;
  int fault = ctl < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ctl >= 0 && fault < 0) {
    err = errno;
    close(ctl);
    ctl = -1;
  }
  if (mem == MAP_FAILED || ctl < 0) {
    if (mem != MAP_FAILED) munmap(mem, (size_t)size);
    if (ctl >= 0) close(ctl);
    free(dp);
    free(h);
    free(ports);
    return ziu_errno(env, err);
  }

  dp->mem = mem;
  dp->mem_size = (size_t)size;
  dp->ctl_fd = ctl;
  dp->fault_fd = fault;
  dp->ep_fd = -1;
  dp->go_fd = dp->done_fd = -1;
  dp->gen = 1;
  dp->ports = ports;
  dp->max_ports = (uint32_t)max_ports;
  for (uint32_t i = 0; i < dp->max_ports; i++)
    for (int q = 0; q < DP_MAX_RINGS; q++) ports[i].rings[q].kick_fd = ports[i].rings[q].call_fd = -1;

  /* Carve the mem file: header page, staging buffers. The tables come with dpTablesAttach. */
  struct dp_shm_hdr *hdr = mem;
  memset(hdr, 0, DP_HDR_BYTES);
  hdr->magic = DP_SHM_MAGIC;
  hdr->version = 2;
  hdr->staging_off = DP_HDR_BYTES;
  hdr->slot_size = DP_SLOT_SIZE;
  hdr->slots = DP_BATCH;
  dp->staging = dp->mem + hdr->staging_off;
  for (uint32_t i = 0; i < DP_TABLE_PORTS; i++) dp->tables.tmap[i] = -1;
  dp->t0_ns = dp_now_ns();
  dp->now_s = dp_now_s();
  pthread_mutex_init(&dp->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&dp->warmed, &ca);
  pthread_condattr_destroy(&ca);

  /* The worker takes no signals: they belong to Node's threads. Except
   * SIGBUS, which it raises itself on guest memory a frontend truncated:
   * blocked, the kernel would kill the process instead (dp_mem.c). */
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGBUS);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  err = pthread_create(&dp->worker, NULL, dp_worker_main, dp);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err) {
    pthread_cond_destroy(&dp->warmed);
    pthread_mutex_destroy(&dp->lock);
    munmap(mem, (size_t)size);
    close(ctl);
    close(fault);
    free(dp);
    free(h);
    free(ports);
    return ziu_errno(env, err);
  }
  pthread_setname_np(dp->worker, "ziu-dp");
  /* Its tid is what placing it (schedSet) needs: known before we return. */
  while (!__atomic_load_n(&dp->worker_tid, __ATOMIC_ACQUIRE)) sched_yield();

  h->dp = dp;
  napi_value ext;
  if (napi_create_external(env, h, handle_finalize, NULL, &ext) != napi_ok ||
      napi_type_tag_object(env, ext, &DP_TAG) != napi_ok) {
    napi_throw_error(env, NULL, "ziu native: cannot create the datapath handle");
    return NULL;
  }
  return ext;
}

static napi_value n_dp_destroy(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  napi_value res;
  struct dp_handle *h = get_handle(env, argv[0], &res);
  if (!h) return res;
  destroy(h->dp);
  h->dp = NULL;
  return ziu_int(env, 0);
}

/* ---- ports ---- */

static napi_value n_dp_add_port(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  GET_DP(dp, argv[0]);
  int32_t kind, fd, hw = DP_OFFLOAD_NO_HW; /* hw (optional 5th, after the name): the hardware behind a representor */
  char name[DP_PORT_NAME + 1];
  size_t nlen = 0;
  if (!ziu_get_i32(env, argv[1], &kind) || !ziu_get_i32(env, argv[2], &fd) || !ziu_get_str(env, argv[3], name, sizeof(name), &nlen)) return NULL;
  size_t argc5 = 5;
  napi_value argv5[5];
  if (napi_get_cb_info(env, info, &argc5, argv5, NULL, NULL) == napi_ok && argc5 >= 5) {
    napi_valuetype t;
    if (napi_typeof(env, argv5[4], &t) == napi_ok && t != napi_undefined && !ziu_get_i32(env, argv5[4], &hw)) return NULL;
  }
  if (kind != DP_KIND_VHOST && kind != DP_KIND_TAP) return ziu_errno(env, EINVAL);
  if (kind == DP_KIND_TAP && fd < 0) return ziu_errno(env, EBADF);
  lock_ctl(dp);
  int32_t id = -1;
  for (uint32_t i = 0; i < dp->max_ports && id < 0; i++)
    if (!dp->ports[i].in_use) id = (int32_t)i;
  if (id < 0) {
    pthread_mutex_unlock(&dp->lock);
    return ziu_errno(env, ENOSPC);
  }
  struct dp_port *p = &dp->ports[id];
  memset(p, 0, sizeof(*p));
  p->kind = kind;
  p->tap_fd = kind == DP_KIND_TAP ? fd : -1;
  p->hdr_len = 12;
  for (int q = 0; q < DP_MAX_RINGS; q++) p->rings[q].kick_fd = p->rings[q].call_fd = -1;
  p->nrings = 2; /* one queue pair: what every frontend sets up */
  p->offload_hw = hw;
  memcpy(p->name, name, nlen + 1);
  /* Its id in the tables by name; a frozen engine (read-only tables) gets a new name an id when it thaws. */
  p->tport = dp_tables_port_id(dp, p->name);
  if (p->tport < DP_TABLE_PORTS) dp->tables.tmap[p->tport] = (int16_t)id;
  p->in_use = true;
  if ((uint32_t)id >= dp->ports_hi) dp->ports_hi = (uint32_t)id + 1;
  dp_offload_port_add(dp, (uint32_t)id, hw);
  changed_unlock(dp);
  return ziu_int(env, id);
}

static napi_value n_dp_remove_port(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  GET_DP(dp, argv[0]);
  int32_t port;
  if (!ziu_get_i32(env, argv[1], &port)) return NULL;
  lock_ctl(dp);
  struct dp_port *p = port_at(dp, port);
  if (!p) {
    pthread_mutex_unlock(&dp->lock);
    return ziu_errno(env, ENOENT);
  }
  if (p->kind == DP_KIND_VHOST)
    for (int q = 0; q < DP_MAX_RINGS; q++) stop_ring(dp, &p->rings[q], q);
  unmap_regions(p);
  /* Only the writer forgets: a frozen instance's port goes with it, not from the shared tables. */
  if (!dp->frozen && p->tport < DP_TABLE_PORTS) dp_bridge_forget_port(dp, p->tport);
  if (p->tport < DP_TABLE_PORTS && dp->tables.tmap[p->tport] == port) dp->tables.tmap[p->tport] = -1;
  dp_offload_port_del(dp, (uint32_t)port, p->offload_hw);
  p->in_use = false;
  while (dp->ports_hi > 0 && !dp->ports[dp->ports_hi - 1].in_use) dp->ports_hi--;
  changed_unlock(dp);
  return ziu_int(env, 0);
}

static napi_value n_dp_set_features(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  GET_DP(dp, argv[0]);
  int32_t port, hdr_len;
  bool mrg;
  if (!ziu_get_i32(env, argv[1], &port) || !ziu_get_i32(env, argv[2], &hdr_len)) return NULL;
  if (napi_get_value_bool(env, argv[3], &mrg) != napi_ok) {
    napi_throw_type_error(env, NULL, "ziu native: mrgRxbuf must be a boolean");
    return NULL;
  }
  if (hdr_len != 10 && hdr_len != 12) return ziu_errno(env, EINVAL);
  if (mrg && hdr_len != 12) return ziu_errno(env, EINVAL); /* num_buffers needs the 12-byte header */
  lock_ctl(dp);
  int err;
  struct dp_port *p = vhost_port_at(dp, port, &err);
  if (!err) {
    p->hdr_len = (uint32_t)hdr_len;
    p->mrg = mrg;
  }
  changed_unlock(dp);
  return ziu_int(env, -err);
}

/* dpSetMemTable(h, port, regions, {maxBytes, maxRegions}): the mapping and
 * its guard are dp_mem.c's; here the arguments and the swap. */
static napi_value n_dp_set_mem_table(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  GET_DP(dp, argv[0]);
  int32_t port;
  if (!ziu_get_i32(env, argv[1], &port)) return NULL;
  bool is_array = false;
  uint32_t n = 0;
  napi_is_array(env, argv[2], &is_array);
  if (!is_array) {
    napi_throw_type_error(env, NULL, "ziu native: regions must be an array");
    return NULL;
  }
  napi_get_array_length(env, argv[2], &n);
  if (n > DP_MAX_REGIONS) return ziu_errno(env, EINVAL);
  struct dp_mem_limits lim;
  int64_t max_regions;
  if (!get_prop_u64(env, argv[3], "maxBytes", &lim.max_bytes) || !ziu_get_prop_i64(env, argv[3], "maxRegions", &max_regions))
    return NULL;
  if (max_regions < 0 || max_regions > DP_MAX_REGIONS) return ziu_errno(env, EINVAL);
  lim.max_regions = (uint32_t)max_regions;

  struct dp_region nr[DP_MAX_REGIONS];
  int32_t fds[DP_MAX_REGIONS];
  uint64_t offs[DP_MAX_REGIONS];
  for (uint32_t i = 0; i < n; i++) {
    napi_value r;
    int64_t fd;
    napi_get_element(env, argv[2], i, &r);
    if (!get_prop_u64(env, r, "gpa", &nr[i].gpa) || !get_prop_u64(env, r, "size", &nr[i].size) ||
        !get_prop_u64(env, r, "uaddr", &nr[i].uaddr) || !get_prop_u64(env, r, "offset", &offs[i]) ||
        !ziu_get_prop_i64(env, r, "fd", &fd))
      return NULL;
    if (fd < 0 || fd > INT32_MAX) return ziu_errno(env, EBADF);
    fds[i] = (int32_t)fd;
    /* Non-empty, no wrap-around, mappable length, no overlap in either address space. */
    const uint64_t lim2 = (uint64_t)SIZE_MAX / 2;
    if (nr[i].size == 0 || nr[i].size > lim2 || offs[i] > lim2 || nr[i].gpa + nr[i].size < nr[i].gpa ||
        nr[i].uaddr + nr[i].size < nr[i].uaddr)
      return ziu_errno(env, EINVAL);
    for (uint32_t j = 0; j < i; j++) {
      bool gpa_overlap = nr[i].gpa < nr[j].gpa + nr[j].size && nr[j].gpa < nr[i].gpa + nr[i].size;
      bool ua_overlap = nr[i].uaddr < nr[j].uaddr + nr[j].size && nr[j].uaddr < nr[i].uaddr + nr[i].size;
      if (gpa_overlap || ua_overlap) return ziu_errno(env, EINVAL);
    }
  }

  /* Map outside the lock (the worker keeps running on the old table); only
   * the swap is under it. Nothing is faulted in: a new instance faults in the
   * rings and the buffers they name once they are set (dpPrefault), the rest
   * faults in when touched. The caps are checked first: nothing is mapped for
   * a table that is refused. */
  int merr = dp_mem_map(dp, (uint32_t)port, nr, fds, offs, n, &lim);
  if (merr < 0) return ziu_errno(env, -merr);

  lock_ctl(dp);
  int err;
  struct dp_port *p = vhost_port_at(dp, port, &err);
  if (err) {
    pthread_mutex_unlock(&dp->lock);
    dp_mem_unmap(nr, n);
    return ziu_errno(env, err);
  }
  struct dp_region old[DP_MAX_REGIONS];
  uint32_t nold = p->nregions;
  memcpy(old, p->regions, sizeof(old));
  for (int q = 0; q < DP_MAX_RINGS; q++) stop_ring(dp, &p->rings[q], q);
  memcpy(p->regions, nr, sizeof(nr[0]) * n);
  p->nregions = n;
  /* New memory: a fault on the old table no longer stops the rings. */
  memset(&p->mem_fault, 0, sizeof(p->mem_fault));
  for (int q = 0; q < DP_MAX_RINGS; q++) p->rings[q].faulted = false;
  /* Ring addresses were given as user addresses: keep them if they still
   * translate, so the control plane need not resend SET_VRING_ADDR. */
  for (int q = 0; q < DP_MAX_RINGS; q++)
    if (p->rings[q].addr_set) p->rings[q].addr_set = dp_ring_translate(p, &p->rings[q]) == 0;
  changed_unlock(dp);
  dp_mem_unmap(old, nold);
  return ziu_int(env, 0);
}

/* dpPrefault(h, port): a port taken over at import: its rings and the buffers
 * their descriptors name, faulted in before the worker touches them
 * (dp_prefault_port). Returns the bytes faulted in, or -errno. */
static napi_value n_dp_prefault(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  GET_DP(dp, argv[0]);
  int32_t port;
  if (!ziu_get_i32(env, argv[1], &port)) return NULL;
  lock_ctl(dp);
  int err;
  struct dp_port *p = vhost_port_at(dp, port, &err);
  uint64_t bytes = err ? 0 : dp_prefault_port(p);
  pthread_mutex_unlock(&dp->lock);
  return err ? ziu_errno(env, err) : ziu_int(env, (int64_t)bytes);
}

/* Faults the SIGBUS handler absorbed since the last call, one per port:
 * [{port, region, code, offset}]. The fault fd is drained first, so a fault
 * after this call wakes the reader again. */
static napi_value n_dp_mem_faults(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP(dp, argv[0]);
  dp_drain(dp->fault_fd);
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t k = 0;
  lock_ctl(dp);
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    uint32_t region = __atomic_load_n(&p->mem_fault.region, __ATOMIC_ACQUIRE);
    if (!p->in_use || region == 0 || p->mem_fault.reported) continue;
    p->mem_fault.reported = true;
    napi_value o;
    napi_create_object(env, &o);
    ziu_set_prop(env, o, "port", ziu_int(env, i));
    ziu_set_prop(env, o, "region", ziu_int(env, region - 1));
    ziu_set_prop(env, o, "code", ziu_int(env, p->mem_fault.code));
    ziu_set_prop(env, o, "offset", ziu_bigint_u64(env, p->mem_fault.offset));
    napi_set_element(env, arr, k++, o);
  }
  pthread_mutex_unlock(&dp->lock);
  return arr;
}

/* ---- rings ---- */

static napi_value n_dp_set_vring(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  GET_DP(dp, argv[0]);
  int32_t port, q;
  int64_t nn, la;
  uint64_t desc, avail, used;
  if (!ziu_get_i32(env, argv[1], &port) || !ziu_get_i32(env, argv[2], &q) || !ziu_get_prop_i64(env, argv[3], "num", &nn) ||
      !get_prop_u64(env, argv[3], "desc", &desc) || !get_prop_u64(env, argv[3], "avail", &avail) ||
      !get_prop_u64(env, argv[3], "used", &used) || !ziu_get_prop_i64(env, argv[3], "lastAvail", &la))
    return NULL;
  if (nn < 1 || nn > VIRTQ_MAX_SIZE || (nn & (nn - 1)) || la < 0 || la > 0xffff) return ziu_errno(env, EINVAL);
  lock_ctl(dp);
  int err = 0;
  struct dp_vring *vr = ring_at(dp, port, q, &err);
  if (vr && vr->started) err = EBUSY;
  if (!err) {
    struct dp_vring next = *vr;
    next.num = (uint32_t)nn;
    next.desc_ua = desc;
    next.avail_ua = avail;
    next.used_ua = used;
    int r = dp_ring_translate(&dp->ports[port], &next);
    if (r < 0) {
      err = -r;
    } else {
      next.addr_set = true;
      next.last_avail = (uint16_t)la;
      /* Set up again: a ring a bad chain broke is served again. */
      next.broken = false;
      if (next.fault == DP_FAULT_CHAIN) next.fault = DP_FAULT_NONE, next.fault_new = false;
      *vr = next;
      ring_in_use(dp, port, q);
    }
  }
  changed_unlock(dp);
  return ziu_int(env, -err);
}

static napi_value set_ring_fd(napi_env env, napi_callback_info info, bool kick) {
  ZIU_ARGS(env, info, 4);
  GET_DP(dp, argv[0]);
  int32_t port, q, fd;
  if (!ziu_get_i32(env, argv[1], &port) || !ziu_get_i32(env, argv[2], &q) || !ziu_get_i32(env, argv[3], &fd)) return NULL;
  if (fd < -1) return ziu_errno(env, EBADF);
  lock_ctl(dp);
  int err = 0;
  struct dp_vring *vr = ring_at(dp, port, q, &err);
  if (vr) {
    /* A new fd clears what the old one did. */
    uint8_t mine = kick ? DP_FAULT_KICK_FAILED : DP_FAULT_CALL_BLOCKED;
    if (vr->fault == mine || (!kick && vr->fault == DP_FAULT_CALL_FAILED)) vr->fault = DP_FAULT_NONE, vr->fault_new = false;
    if (fd >= 0) ring_in_use(dp, port, q);
    if (kick) {
      vr->kick_fd = fd;
    } else {
      vr->call_fd = fd; /* under the lock: the worker is between passes, not inside a publish */
      vr->call_dead = false;
      vr->signal_once = false;
    }
  }
  changed_unlock(dp);
  return ziu_int(env, -err);
}

static napi_value n_dp_set_kick(napi_env env, napi_callback_info info) { return set_ring_fd(env, info, true); }
static napi_value n_dp_set_call(napi_env env, napi_callback_info info) { return set_ring_fd(env, info, false); }

static napi_value n_dp_set_enabled(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  GET_DP(dp, argv[0]);
  int32_t port, q;
  bool en;
  if (!ziu_get_i32(env, argv[1], &port) || !ziu_get_i32(env, argv[2], &q)) return NULL;
  if (napi_get_value_bool(env, argv[3], &en) != napi_ok) {
    napi_throw_type_error(env, NULL, "ziu native: enabled must be a boolean");
    return NULL;
  }
  lock_ctl(dp);
  int err = 0;
  struct dp_vring *vr = ring_at(dp, port, q, &err);
  if (vr) vr->enabled = en;
  if (vr && en) ring_in_use(dp, port, q);
  changed_unlock(dp);
  return ziu_int(env, -err);
}

static napi_value n_dp_start(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  GET_DP(dp, argv[0]);
  int32_t port, q;
  if (!ziu_get_i32(env, argv[1], &port) || !ziu_get_i32(env, argv[2], &q)) return NULL;
  lock_ctl(dp);
  int err = 0;
  struct dp_vring *vr = ring_at(dp, port, q, &err);
  if (vr && !vr->addr_set) err = EINVAL;
  if (!err && !vr->started) {
    vr->started = true;
    /* A frozen engine resyncs when it thaws: until then the ring may still be
     * another process's, and its memory is not ours to read as final. */
    if (!dp->frozen) resync_ring(vr, q);
  }
  changed_unlock(dp);
  return ziu_int(env, -err);
}

static napi_value n_dp_stop(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  GET_DP(dp, argv[0]);
  int32_t port, q;
  if (!ziu_get_i32(env, argv[1], &port) || !ziu_get_i32(env, argv[2], &q)) return NULL;
  lock_ctl(dp);
  int err = 0;
  struct dp_vring *vr = ring_at(dp, port, q, &err);
  int64_t res = -err;
  if (vr) {
    stop_ring(dp, vr, q);
    res = vr->last_avail;
  }
  changed_unlock(dp);
  return ziu_int(env, res);
}

/* ---- handover ---- */

/* Freeze: when this returns the worker is between passes (every chain it
 * consumed is completed and published) and will run no more passes until
 * dpThaw. TX rings get NO_NOTIFY cleared so that the guest kicks whoever runs
 * them next. Returns the CLOCK_MONOTONIC time the engine stopped serving. */
static napi_value n_dp_freeze(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  GET_DP(dp, argv[0]);
  int32_t signal_fd;
  if (!ziu_get_i32(env, argv[1], &signal_fd)) return NULL;
  lock_ctl(dp);
  if (!dp->frozen) {
    for (uint32_t i = 0; i < dp->ports_hi; i++) {
      struct dp_port *p = &dp->ports[i];
      for (uint32_t q = 1; p->in_use && p->kind == DP_KIND_VHOST && q < p->nrings; q += 2)
        if (p->rings[q].started && p->rings[q].addr_set) dp_ring_set_no_notify(&p->rings[q], false);
    }
    dp->frozen = true;
    dp->frozen_ns = dp_now_ns();
    dp->first_pass_ns = 0;
    dp->want_first_pass = false;
    /* Straight to the successor's worker: nothing else sits in the gap. */
    if (signal_fd >= 0) {
      uint64_t one = 1;
      ssize_t r;
      do {
        r = write(signal_fd, &one, sizeof(one));
      } while (r < 0 && errno == EINTR);
    }
    /* The tables are the successor's to write now: a stray write of ours would fault, not corrupt. */
    dp_tables_freeze(dp);
  }
  uint64_t t = dp->frozen_ns;
  changed_unlock(dp);
  return ziu_bigint_u64(env, t);
}

/* Thaw: every started ring is resynced from shared memory (whoever ran it in
 * between completed what it consumed), then passes resume; the first one is
 * stamped. Returns the thaw time. */
void dp_thaw_locked(struct dp *dp) {
  if (!dp->frozen) return;
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use || p->kind != DP_KIND_VHOST) continue;
    for (uint32_t q = 0; q < p->nrings; q++)
      if (p->rings[q].started && p->rings[q].addr_set) resync_ring(&p->rings[q], (int)q);
  }
  dp_tables_thaw(dp);
  dp->frozen = false;
  dp->thawed_ns = dp_now_ns();
  dp->first_pass_ns = 0;
  dp->want_first_pass = true;
}

/* Arm (or with goFd -1, disarm) the direct takeover of a frozen engine. The
 * fds stay owned by JavaScript; the baton page is mapped here until disarmed. */
static napi_value n_dp_arm_takeover(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  GET_DP(dp, argv[0]);
  int32_t go, baton, done;
  if (!ziu_get_i32(env, argv[1], &go) || !ziu_get_i32(env, argv[2], &baton) || !ziu_get_i32(env, argv[3], &done)) return NULL;
  void *map = NULL;
  if (go >= 0) {
    map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, baton, 0);
    if (map == MAP_FAILED) return ziu_errno(env, errno);
  }
  lock_ctl(dp);
  if (go >= 0 && !dp->frozen) {
    pthread_mutex_unlock(&dp->lock);
    munmap(map, 4096);
    return ziu_errno(env, EBUSY);
  }
  disarm(dp);
  if (go < 0) {
    changed_unlock(dp);
    return ziu_int(env, 0);
  }
  dp->go_fd = go;
  dp->done_fd = done;
  dp->baton = map;
  dp->taken_over = false;
  /* The go signal comes soon after this returns: let the worker read every
   * ring now, so that its thaw does not pay the first touch (dp_ring_warm).
   * Bounded: a worker that does not get to it only makes the thaw slower. */
  dp->armed_ns = dp_now_ns();
  uint64_t want = ++dp->warm_req;
  changed_unlock(dp);
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_nsec += DP_WARM_WAIT_MS * 1000000L;
  until.tv_sec += until.tv_nsec / 1000000000L;
  until.tv_nsec %= 1000000000L;
  lock_ctl(dp);
  while (dp->warm_done < want && !dp->stopping)
    if (pthread_cond_timedwait(&dp->warmed, &dp->lock, &until) == ETIMEDOUT) break;
  pthread_mutex_unlock(&dp->lock);
  return ziu_int(env, 0);
}

/* Start (baton fd) or stop (-1) the worker's heartbeat in the baton page.
 * The fd stays owned by JavaScript; the page is mapped here until stopped. */
static napi_value n_dp_set_beat(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  GET_DP(dp, argv[0]);
  int32_t fd;
  if (!ziu_get_i32(env, argv[1], &fd)) return NULL;
  char *map = NULL;
  if (fd >= 0) {
    map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return ziu_errno(env, errno);
    __atomic_store_n((uint64_t *)(map + DP_BEAT_OFFSET), dp_now_ns(), __ATOMIC_RELEASE);
  }
  lock_ctl(dp);
  beat_off(dp);
  if (map) dp->beat = (uint64_t *)(map + DP_BEAT_OFFSET);
  changed_unlock(dp); /* the worker's sleep gets the shorter timeout at once */
  return ziu_int(env, 0);
}

static napi_value n_dp_thaw(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP(dp, argv[0]);
  lock_ctl(dp);
  dp_thaw_locked(dp);
  uint64_t t = dp->thawed_ns;
  changed_unlock(dp);
  return ziu_bigint_u64(env, t);
}

static napi_value n_dp_times(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP(dp, argv[0]);
  lock_ctl(dp);
  bool frozen = dp->frozen, taken = dp->taken_over;
  uint64_t f = dp->frozen_ns, t = dp->thawed_ns, p = dp->first_pass_ns;
  pthread_mutex_unlock(&dp->lock);
  napi_value o;
  napi_create_object(env, &o);
  ziu_set_prop(env, o, "frozen", ziu_bool(env, frozen));
  ziu_set_prop(env, o, "frozenNs", ziu_bigint_u64(env, f));
  ziu_set_prop(env, o, "thawedNs", ziu_bigint_u64(env, t));
  ziu_set_prop(env, o, "firstPassNs", ziu_bigint_u64(env, p));
  ziu_set_prop(env, o, "takenOver", ziu_bool(env, taken));
  return o;
}

/* ---- status ---- */

static napi_value n_dp_stats(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP(dp, argv[0]);
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t k = 0;
  lock_ctl(dp);
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use) continue;
    napi_value o;
    napi_create_object(env, &o);
    ziu_set_prop(env, o, "port", ziu_int(env, i));
    ziu_set_prop(env, o, "kind", ziu_int(env, p->kind));
    ziu_set_prop(env, o, "rxPackets", ziu_double(env, (double)p->st.rx_packets));
    ziu_set_prop(env, o, "rxBytes", ziu_double(env, (double)p->st.rx_bytes));
    ziu_set_prop(env, o, "txPackets", ziu_double(env, (double)p->st.tx_packets));
    ziu_set_prop(env, o, "txBytes", ziu_double(env, (double)p->st.tx_bytes));
    ziu_set_prop(env, o, "dropsNoBuffer", ziu_double(env, (double)p->st.drops_no_buffer));
    ziu_set_prop(env, o, "dropsInvalid", ziu_double(env, (double)p->st.drops_invalid));
    ziu_set_prop(env, o, "floods", ziu_double(env, (double)p->st.floods));
    napi_set_element(env, arr, k++, o);
  }
  pthread_mutex_unlock(&dp->lock);
  return arr;
}

static napi_value n_dp_worker_stats(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP(dp, argv[0]);
  clockid_t cid;
  struct timespec ts = {0, 0};
  /* The thread is alive until dpDestroy, so its CPU clock is valid here. */
  if (pthread_getcpuclockid(dp->worker, &cid) == 0) clock_gettime(cid, &ts);
  lock_ctl(dp);
  double passes = (double)dp->passes, cut = (double)dp->passes_cut, sleeps = (double)dp->sleeps, wakeups = (double)dp->wakeups;
  struct dp_table bridge = dp->tables.bridge;
  pthread_mutex_unlock(&dp->lock);
  /* Counted outside the lock: a big table's scan must not stall the worker (see dpTablesInfo). */
  double macs = dp_bridge_count_table(&bridge);
  napi_value o;
  napi_create_object(env, &o);
  ziu_set_prop(env, o, "workerCpuMs", ziu_double(env, (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6));
  ziu_set_prop(env, o, "passes", ziu_double(env, passes));
  ziu_set_prop(env, o, "passesCut", ziu_double(env, cut));
  ziu_set_prop(env, o, "sleeps", ziu_double(env, sleeps));
  ziu_set_prop(env, o, "wakeups", ziu_double(env, wakeups));
  ziu_set_prop(env, o, "macEntries", ziu_double(env, macs));
  ziu_set_prop(env, o, "tid", ziu_int(env, dp->worker_tid));
  return o;
}

static napi_value n_dp_port_rings(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  GET_DP(dp, argv[0]);
  int32_t port;
  if (!ziu_get_i32(env, argv[1], &port)) return NULL;
  lock_ctl(dp);
  struct dp_port *p = port_at(dp, port);
  if (!p) {
    pthread_mutex_unlock(&dp->lock);
    return ziu_errno(env, ENOENT);
  }
  napi_value arr, null;
  napi_create_array(env, &arr);
  napi_get_null(env, &null);
  for (uint32_t q = 0; p->kind == DP_KIND_VHOST && q < p->nrings; q++) {
    struct dp_vring *vr = &p->rings[q];
    napi_value o;
    napi_create_object(env, &o);
    ziu_set_prop(env, o, "q", ziu_int(env, q));
    ziu_set_prop(env, o, "num", ziu_int(env, vr->num));
    ziu_set_prop(env, o, "started", ziu_bool(env, vr->started));
    ziu_set_prop(env, o, "enabled", ziu_bool(env, vr->enabled));
    ziu_set_prop(env, o, "lastAvail", ziu_int(env, vr->last_avail));
    ziu_set_prop(env, o, "broken", ziu_bool(env, vr->broken));
    ziu_set_prop(env, o, "fault", ziu_int(env, vr->fault));
    ziu_set_prop(env, o, "packets", ziu_double(env, (double)vr->packets));
    ziu_set_prop(env, o, "usedIdx",
                 vr->addr_set ? ziu_int(env, __atomic_load_n(&vr->used->idx, __ATOMIC_ACQUIRE)) : null);
    ziu_set_prop(env, o, "availIdx",
                 vr->addr_set ? ziu_int(env, __atomic_load_n(&vr->avail->idx, __ATOMIC_ACQUIRE)) : null);
    napi_set_element(env, arr, (uint32_t)q, o);
  }
  pthread_mutex_unlock(&dp->lock);
  return arr;
}

/* ---- faults ---- */

/* The eventfd the worker (dpTakeFaults) and the SIGBUS handler (dpMemFaults) write: poll it, then call both. */
static napi_value n_dp_fault_fd(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP(dp, argv[0]);
  return ziu_int(env, dp->fault_fd);
}

static napi_value fault_obj(napi_env env, uint32_t port, int q, uint8_t code, int err) {
  napi_value o;
  napi_create_object(env, &o);
  ziu_set_prop(env, o, "port", ziu_int(env, port));
  ziu_set_prop(env, o, "q", ziu_int(env, q));
  ziu_set_prop(env, o, "code", ziu_int(env, code));
  ziu_set_prop(env, o, "errno", ziu_int(env, err));
  return o;
}

/* Faults recorded since the last call, each reported once. */
static napi_value n_dp_take_faults(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP(dp, argv[0]);
  dp_drain(dp->fault_fd);
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t k = 0;
  lock_ctl(dp);
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    struct dp_port *p = &dp->ports[i];
    if (!p->in_use) continue;
    if (p->fault_new) {
      napi_set_element(env, arr, k++, fault_obj(env, i, -1, p->fault, p->fault_errno));
      p->fault_new = false;
    }
    for (uint32_t q = 0; p->kind == DP_KIND_VHOST && q < p->nrings; q++) {
      struct dp_vring *vr = &p->rings[q];
      if (!vr->fault_new) continue;
      napi_set_element(env, arr, k++, fault_obj(env, i, q, vr->fault, vr->fault_errno));
      vr->fault_new = false;
    }
  }
  pthread_mutex_unlock(&dp->lock);
  return arr;
}

/* Write every call fd of the port once, from the worker on its next pass (a
 * guest's fd is written only under the worker's guard, never from the JS
 * thread, which must not block on it either). */
static napi_value n_dp_signal_calls(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  GET_DP(dp, argv[0]);
  int32_t port;
  if (!ziu_get_i32(env, argv[1], &port)) return NULL;
  lock_ctl(dp);
  int err;
  struct dp_port *p = vhost_port_at(dp, port, &err);
  if (!err) {
    for (uint32_t q = 0; q < p->nrings; q++) p->rings[q].signal_once = p->rings[q].call_fd >= 0;
    dp->signal_pending = true;
  }
  changed_unlock(dp);
  return ziu_int(env, -err);
}

/* ---- tap ---- */

/* A tap device (IFF_TAP | IFF_NO_PI: plain Ethernet frames), non-blocking.
 * Not persistent: the device disappears with the last fd. */
static napi_value n_tap_open(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  char name[IFNAMSIZ];
  size_t len;
  if (!ziu_get_str(env, argv[0], name, sizeof(name), &len)) return NULL;
  if (len == 0) return ziu_errno(env, EINVAL);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return ziu_errno(env, errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  memcpy(ifr.ifr_name, name, len);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    return ziu_errno(env, err);
  }
  return ziu_int(env, fd);
}

napi_value ziu_init_dp(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "DP_KIND_VHOST", DP_KIND_VHOST);
  ziu_register_const(env, exports, "DP_KIND_TAP", DP_KIND_TAP);
  ziu_register_const(env, exports, "DP_MAX_FRAME", DP_MAX_FRAME);
  ziu_register_const(env, exports, "DP_MAX_REGIONS", DP_MAX_REGIONS);
  ziu_register_const(env, exports, "DP_MAX_QP", DP_MAX_QP);
  ziu_register_const(env, exports, "DP_MAX_PORTS", DP_MAX_PORTS);
  ziu_register_const(env, exports, "DP_MAX_MAC_ENTRIES", DP_MAX_MAC_ENTRIES);
  ziu_register(env, exports, "dpMemRequired", n_dp_mem_required);
  ziu_register(env, exports, "dpCreate", n_dp_create);
  ziu_register(env, exports, "dpDestroy", n_dp_destroy);
  ziu_register(env, exports, "dpAddPort", n_dp_add_port);
  ziu_register(env, exports, "dpRemovePort", n_dp_remove_port);
  ziu_register(env, exports, "dpSetFeatures", n_dp_set_features);
  ziu_register(env, exports, "dpSetMemTable", n_dp_set_mem_table);
  ziu_register(env, exports, "dpPrefault", n_dp_prefault);
  ziu_register(env, exports, "dpMemFaults", n_dp_mem_faults);
  ziu_register(env, exports, "dpFaultFd", n_dp_fault_fd);
  ziu_register(env, exports, "dpSetVring", n_dp_set_vring);
  ziu_register(env, exports, "dpSetKick", n_dp_set_kick);
  ziu_register(env, exports, "dpSetCall", n_dp_set_call);
  ziu_register(env, exports, "dpSetEnabled", n_dp_set_enabled);
  ziu_register(env, exports, "dpStart", n_dp_start);
  ziu_register(env, exports, "dpStop", n_dp_stop);
  ziu_register(env, exports, "dpFreeze", n_dp_freeze);
  ziu_register(env, exports, "dpThaw", n_dp_thaw);
  ziu_register(env, exports, "dpArmTakeover", n_dp_arm_takeover);
  ziu_register(env, exports, "dpSetBeat", n_dp_set_beat);
  ziu_register_const(env, exports, "DP_BEAT_OFFSET", DP_BEAT_OFFSET);
  ziu_register(env, exports, "dpTimes", n_dp_times);
  ziu_register(env, exports, "dpStats", n_dp_stats);
  ziu_register(env, exports, "dpWorkerStats", n_dp_worker_stats);
  ziu_register(env, exports, "dpPortRings", n_dp_port_rings);
  ziu_register(env, exports, "dpTakeFaults", n_dp_take_faults);
  ziu_register(env, exports, "dpSignalCalls", n_dp_signal_calls);
  ziu_register_const(env, exports, "DP_MAX_CHAIN", DP_MAX_CHAIN);
  ziu_register(env, exports, "tapOpen", n_tap_open);
  dp_mem_register(env, exports);
  dp_table_register(env, exports);
  dp_offload_register_napi(env, exports);
  return exports;
}
