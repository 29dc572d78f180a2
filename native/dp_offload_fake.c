/*
 * The fake accelerator module (docs/offload.md): implements the offload hook
 * API on the fake NIC's shared state (fakenic.h), which a separate process
 * (ziu-fakenic, fakenic.c) forwards with. It runs on the engine's module
 * thread (dp_offload.c), so its injected slowness never reaches a frame.
 *
 * What it can do: bind a representor port to its VF, hold bridge entries of
 * ports it backs, and hold up to `capacity` flows between its VFs (forward
 * to a VF or drop); -EOPNOTSUPP for anything else (a flow from or to a
 * vhost-user port), -ENOSPC when full. Every call checks that this engine
 * still owns the NIC (its epoch): a predecessor taken over gets -ESTALE.
 *
 * Error injection (set in the shared state by the NIC process, from tests):
 * sleep inj_slow_us in every call, fail the next inj_fail_next calls, fail
 * inj_fail_ppm per million, all with -EIO, for the ops in inj_ops.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include "dp.h"
#include "dp_offload.h"
#include "fakenic.h"

struct fake {
  struct fn_shm *shm;
  size_t size;
  uint64_t epoch; /* ours once claimed; 0 before */
  /* Read once at attach and checked against the mapping: every other process
   * can write the shared header, so sizes and bounds are never re-read from it. */
  uint32_t nvf, max_flows;
  uint32_t vf_port[FN_MAX_VF];   /* UINT32_MAX: no port bound */
  int32_t port_vf[DP_MAX_PORTS]; /* -1: not ours */
};

static int fn_lock(struct fn_shm *s) {
  int r = pthread_mutex_lock(&s->lock);
  if (r == EOWNERDEAD) { /* a datapath died holding it: every write is a single store or a whole entry */
    pthread_mutex_consistent(&s->lock);
    r = 0;
  }
  return -r;
}

/* Lock and check that we still own the NIC. 0, or -errno with the lock released. */
static int owned(struct fake *f) {
  int r = fn_lock(f->shm);
  if (r < 0) return r;
  if (f->shm->owner_epoch != f->epoch || f->epoch == 0) {
    pthread_mutex_unlock(&f->shm->lock);
    return -ESTALE;
  }
  return 0;
}

/* Whether this call is to fail on purpose (after sleeping, if asked to be slow). */
static int injected(struct fake *f, uint32_t op) {
  struct fn_shm *s = f->shm;
  uint32_t ops = __atomic_load_n(&s->inj_ops, __ATOMIC_RELAXED);
  if (ops && !(ops & op)) return 0;
  uint32_t slow = __atomic_load_n(&s->inj_slow_us, __ATOMIC_RELAXED);
  if (slow) {
    struct timespec ts = {slow / 1000000u, (long)(slow % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
  }
  uint32_t n = __atomic_load_n(&s->inj_fail_next, __ATOMIC_RELAXED);
  while (n > 0)
    if (__atomic_compare_exchange_n(&s->inj_fail_next, &n, n - 1, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      __atomic_add_fetch(&s->inj_failed, 1, __ATOMIC_RELAXED);
      return -EIO;
    }
  uint32_t ppm = __atomic_load_n(&s->inj_fail_ppm, __ATOMIC_RELAXED);
  if (ppm) {
    /* xorshift64 in the shared state: the fraction holds across processes */
    uint64_t x = __atomic_load_n(&s->inj_rng, __ATOMIC_RELAXED), y;
    do {
      y = x ? x : 0x9e3779b97f4a7c15ull;
      y ^= y << 13;
      y ^= y >> 7;
      y ^= y << 17;
    } while (!__atomic_compare_exchange_n(&s->inj_rng, &x, y, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    if (y % 1000000u < ppm) {
      __atomic_add_fetch(&s->inj_failed, 1, __ATOMIC_RELAXED);
      return -EIO;
    }
  }
  return 0;
}

static int fake_attach(void **ctx, int fd, const char *instance) {
  (void)instance;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if ((uint64_t)st.st_size < sizeof(struct fn_shm)) return -EPROTO;
  void *map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return -errno;
  struct fn_shm *s = map;
  /* A header we do not know is not ours to write into. */
  uint32_t nvf = __atomic_load_n(&s->nvf, __ATOMIC_RELAXED), mf = __atomic_load_n(&s->max_flows, __ATOMIC_RELAXED);
  if (s->magic != FN_MAGIC || s->version != FN_VERSION || nvf == 0 || nvf > FN_MAX_VF || mf > FN_MAX_FLOWS ||
      fn_bytes(mf) > (uint64_t)st.st_size) {
    munmap(map, (size_t)st.st_size);
    return -EPROTO;
  }
  struct fake *f = calloc(1, sizeof(*f));
  if (!f) {
    munmap(map, (size_t)st.st_size);
    return -ENOMEM;
  }
  f->shm = s;
  f->size = (size_t)st.st_size;
  f->nvf = nvf;
  f->max_flows = mf;
  for (uint32_t i = 0; i < FN_MAX_VF; i++) f->vf_port[i] = UINT32_MAX;
  for (uint32_t i = 0; i < DP_MAX_PORTS; i++) f->port_vf[i] = -1;
  *ctx = f;
  return 0;
}

static void fake_detach(void *ctx) {
  struct fake *f = ctx;
  munmap(f->shm, f->size);
  free(f);
}

static int fake_claim(void *ctx, bool adopt, int32_t pid) {
  struct fake *f = ctx;
  struct fn_shm *s = f->shm;
  int r = fn_lock(s);
  if (r < 0) return r;
  /* A fresh registration never takes the NIC from a live engine: that one still programs it. */
  if (!adopt && s->owner_pid > 0 && s->owner_pid != pid && kill(s->owner_pid, 0) == 0) {
    pthread_mutex_unlock(&s->lock);
    return -EBUSY;
  }
  f->epoch = ++s->owner_epoch;
  s->owner_pid = pid;
  if (adopt)
    s->adopts++;
  else
    s->claims++;
  pthread_mutex_unlock(&s->lock);
  return 0;
}

static int fake_soft_reset(void *ctx) {
  struct fake *f = ctx;
  struct fn_shm *s = f->shm;
  int r = owned(f);
  if (r < 0) return r;
  for (uint32_t i = 0; i < f->max_flows; i++) memset(&s->flows[i], 0, sizeof(s->flows[i]));
  memset(s->bridge, 0, sizeof(s->bridge));
  s->nflows = s->nbridge = 0;
  s->soft_resets++;
  pthread_mutex_unlock(&s->lock);
  return 0;
}

static int fake_port_add(void *ctx, const struct dp_offload_port *p) {
  struct fake *f = ctx;
  if (p->hw == DP_OFFLOAD_NO_HW) return -EOPNOTSUPP; /* a vhost-user or tap port: the host's */
  if (p->hw < 0 || (uint32_t)p->hw >= f->nvf || p->port >= DP_MAX_PORTS) return -EINVAL;
  int r = injected(f, FN_OP_PORT);
  if (r < 0) return r;
  /* A binding on our side only: it changes nothing the NIC forwards, so an
   * engine that does not own the NIC yet (a standby instance) binds too. */
  f->port_vf[p->port] = p->hw;
  f->vf_port[p->hw] = p->port;
  if (owned(f) == 0) {
    f->shm->port_adds++;
    pthread_mutex_unlock(&f->shm->lock);
  }
  return 0;
}

static int fake_port_del(void *ctx, const struct dp_offload_port *p) {
  struct fake *f = ctx;
  if (p->port >= DP_MAX_PORTS || f->port_vf[p->port] < 0) return -EOPNOTSUPP;
  /* Unbound whatever happens: the port is gone from the engine. */
  f->vf_port[f->port_vf[p->port]] = UINT32_MAX;
  f->port_vf[p->port] = -1;
  if (owned(f) == 0) {
    f->shm->port_dels++;
    pthread_mutex_unlock(&f->shm->lock);
  }
  return 0;
}

static int vf_of(struct fake *f, uint32_t port) { return port < DP_MAX_PORTS ? f->port_vf[port] : -1; }

static int fake_bridge_add(void *ctx, const struct dp_offload_bridge *b) {
  struct fake *f = ctx;
  int vf = vf_of(f, b->port);
  if (vf < 0) return -EOPNOTSUPP;
  int r = injected(f, FN_OP_BRIDGE);
  if (r < 0) return r;
  if ((r = owned(f)) < 0) return r;
  struct fn_shm *s = f->shm;
  struct fn_bridge *free_slot = NULL, *e = NULL;
  for (uint32_t i = 0; i < FN_MAX_BRIDGE && !e; i++) {
    if (!s->bridge[i].used) {
      if (!free_slot) free_slot = &s->bridge[i];
    } else if (memcmp(s->bridge[i].mac, b->mac, 6) == 0) {
      e = &s->bridge[i];
    }
  }
  if (!e && !free_slot) r = -ENOSPC;
  if (!e && free_slot) {
    e = free_slot;
    memcpy(e->mac, b->mac, 6);
    e->used = 1;
    s->nbridge++;
  }
  if (e) {
    e->vf = (uint32_t)vf;
    s->bridge_adds++;
  }
  pthread_mutex_unlock(&s->lock);
  return r;
}

static int fake_bridge_del(void *ctx, const struct dp_offload_bridge *b) {
  struct fake *f = ctx;
  if (vf_of(f, b->port) < 0) return -EOPNOTSUPP;
  int r = injected(f, FN_OP_BRIDGE);
  if (r < 0) return r;
  if ((r = owned(f)) < 0) return r;
  struct fn_shm *s = f->shm;
  r = -ENOENT;
  for (uint32_t i = 0; i < FN_MAX_BRIDGE; i++)
    if (s->bridge[i].used && memcmp(s->bridge[i].mac, b->mac, 6) == 0) {
      memset(&s->bridge[i], 0, sizeof(s->bridge[i]));
      s->nbridge--;
      s->bridge_dels++;
      r = 0;
      break;
    }
  pthread_mutex_unlock(&s->lock);
  return r;
}

/* The NIC's key for a flow key, or false if a port is not one of our VFs. */
static bool to_fn_key(struct fake *f, const struct dp_offload_flow_key *k, struct fn_key *out) {
  int vf = vf_of(f, k->in_port);
  if (vf < 0) return false;
  memset(out, 0, sizeof(*out));
  out->vf = (uint32_t)vf;
  out->ipver = k->ipver;
  out->proto = k->proto;
  out->sport = k->sport;
  out->dport = k->dport;
  memcpy(out->src, k->src, 16);
  memcpy(out->dst, k->dst, 16);
  return true;
}

static struct fn_flow *find(struct fake *f, const struct fn_key *k) {
  struct fn_shm *s = f->shm;
  for (uint32_t i = 0; i < f->max_flows; i++)
    if (s->flows[i].used && memcmp(&s->flows[i].key, k, sizeof(*k)) == 0) return &s->flows[i];
  return NULL;
}

static int fake_flow_set(void *ctx, const struct dp_offload_flow_key *k, const struct dp_offload_flow_action *a) {
  struct fake *f = ctx;
  struct fn_key key;
  int out = a->kind == DP_OFFLOAD_FORWARD ? vf_of(f, a->out_port) : 0;
  if (!to_fn_key(f, k, &key) || out < 0) return -EOPNOTSUPP; /* from or to a port the NIC does not have */
  int r = injected(f, FN_OP_FLOW_SET);
  if (r < 0) return r;
  if ((r = owned(f)) < 0) return r;
  struct fn_shm *s = f->shm;
  struct fn_flow *e = find(f, &key);
  if (!e) {
    if (s->nflows >= s->capacity) {
      pthread_mutex_unlock(&s->lock);
      return -ENOSPC;
    }
    for (uint32_t i = 0; i < f->max_flows && !e; i++)
      if (!s->flows[i].used) e = &s->flows[i];
    if (!e) {
      pthread_mutex_unlock(&s->lock);
      return -ENOSPC;
    }
    memset(e, 0, sizeof(*e));
    e->key = key;
    s->nflows++;
  }
  /* Set, or replaced in place: never a second entry, and its counters go on. */
  e->action = a->kind;
  e->out_vf = a->kind == DP_OFFLOAD_FORWARD ? (uint32_t)out : FN_NO_VF;
  e->set_epoch = f->epoch;
  __atomic_store_n(&e->used, 1, __ATOMIC_RELEASE);
  s->flow_sets++;
  pthread_mutex_unlock(&s->lock);
  return 0;
}

static int fake_flow_del(void *ctx, const struct dp_offload_flow_key *k) {
  struct fake *f = ctx;
  struct fn_key key;
  if (!to_fn_key(f, k, &key)) return -EOPNOTSUPP;
  int r = injected(f, FN_OP_FLOW_DEL);
  if (r < 0) return r;
  if ((r = owned(f)) < 0) return r;
  struct fn_shm *s = f->shm;
  struct fn_flow *e = find(f, &key);
  if (e) {
    memset(e, 0, sizeof(*e));
    s->nflows--;
    s->flow_dels++;
  }
  pthread_mutex_unlock(&s->lock);
  return e ? 0 : -ENOENT;
}

static int fake_flow_dump(void *ctx, struct dp_offload_flow_entry *out, uint32_t max) {
  struct fake *f = ctx;
  struct fn_shm *s = f->shm;
  int r = fn_lock(s);
  if (r < 0) return r;
  uint32_t n = 0;
  for (uint32_t i = 0; i < f->max_flows && n < max; i++) {
    const struct fn_flow *e = &s->flows[i];
    if (!e->used) continue;
    struct dp_offload_flow_entry *o = &out[n++];
    memset(o, 0, sizeof(*o));
    o->key.in_port = e->key.vf < FN_MAX_VF ? f->vf_port[e->key.vf] : UINT32_MAX;
    o->key.ipver = e->key.ipver;
    o->key.proto = e->key.proto;
    o->key.sport = e->key.sport;
    o->key.dport = e->key.dport;
    memcpy(o->key.src, e->key.src, 16);
    memcpy(o->key.dst, e->key.dst, 16);
    o->action.kind = e->action;
    o->action.out_port = e->action == DP_OFFLOAD_FORWARD && e->out_vf < FN_MAX_VF ? f->vf_port[e->out_vf] : UINT32_MAX;
    o->counters.packets = e->packets;
    o->counters.bytes = e->bytes;
    o->counters.last_ns = e->last_ns;
  }
  pthread_mutex_unlock(&s->lock);
  return (int)n;
}

static int fake_stats_get(void *ctx, const struct dp_offload_port *p, struct dp_offload_stats *out) {
  struct fake *f = ctx;
  int vf = vf_of(f, p->port);
  if (vf < 0) return -EOPNOTSUPP;
  const struct fn_vf_stats *v = &f->shm->vf[vf];
  out->rx_packets = __atomic_load_n(&v->rx_packets, __ATOMIC_RELAXED);
  out->rx_bytes = __atomic_load_n(&v->rx_bytes, __ATOMIC_RELAXED);
  out->tx_packets = __atomic_load_n(&v->tx_packets, __ATOMIC_RELAXED);
  out->tx_bytes = __atomic_load_n(&v->tx_bytes, __ATOMIC_RELAXED);
  out->drops = __atomic_load_n(&v->drops, __ATOMIC_RELAXED);
  return 0;
}

const struct dp_offload_ops dp_offload_fake_ops = {
    .name = "fake",
    .attach = fake_attach,
    .detach = fake_detach,
    .claim = fake_claim,
    .soft_reset = fake_soft_reset,
    .port_add = fake_port_add,
    .port_del = fake_port_del,
    .bridge_add = fake_bridge_add,
    .bridge_del = fake_bridge_del,
    .flow_set = fake_flow_set,
    .flow_del = fake_flow_del,
    .flow_dump = fake_flow_dump,
    .stats_get = fake_stats_get,
};
