/*
 * The offload hook API's engine side (see dp_offload.h and docs/offload.md):
 * the request queue, the module thread that calls the module, reconcile,
 * and the N-API functions the control plane registers a module with.
 *
 * The queue is a bounded multi-producer queue (Vyukov's: one sequence
 * number per slot), so the worker and the JavaScript thread both post
 * without a lock and without ever waiting: a full queue refuses the request,
 * and the host keeps that work. Only the module thread takes from it.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "dp.h"
#include "dp_offload.h"
#include "ziu.h"

#define OQ_SIZE 4096u       /* requests in flight (a power of two) */
#define OFF_EVENTS_MAX 8192u /* events JavaScript has not taken yet; beyond, counted as lost */
#define OFF_STATS_NS 100000000ull /* the module's counters are read this often */
#define OFF_DUMP_MAX 16384u  /* flows read back from a module at most (reconcile, counters) */

enum {
  REQ_CLAIM,
  REQ_PORT_ADD,
  REQ_PORT_DEL,
  REQ_BRIDGE_ADD,
  REQ_BRIDGE_DEL,
  REQ_FLOW_SET,
  REQ_FLOW_DEL,
  REQ_RECONCILE,
  REQ_SOFT_RESET,
  REQ_STATS,
  REQ_COUNT
};
static const char *const REQ_NAMES[REQ_COUNT] = {"claim",      "port_add", "port_del",  "bridge_add", "bridge_del",
                                                 "flow_set",   "flow_del", "reconcile", "soft_reset", "stats_get"};

struct off_desired {
  struct dp_offload_flow_key key;
  struct dp_offload_flow_action act;
  uint64_t cookie;
};

struct off_req {
  uint8_t op;
  bool adopt;
  int32_t hw, pid;
  uint32_t port;
  uint64_t cookie;
  uint8_t mac[6];
  struct dp_offload_flow_key key;
  struct dp_offload_flow_action act;
  struct off_desired *desired; /* REQ_RECONCILE: owned by the request */
  uint32_t ndesired;
};

struct off_slot {
  uint64_t seq;
  struct off_req req;
};

#define EV_FLOW 1      /* a flow_set/flow_del with a cookie: rc */
#define EV_CLAIM 2     /* registration: rc */
#define EV_RECONCILE 3 /* counts: kept, added, updated, removed, failed, unmapped; rc of the dump */
#define EV_RESET 4     /* soft_reset: rc */

struct off_event {
  uint8_t kind, op;
  int32_t rc;
  uint64_t cookie;
  uint32_t counts[6];
};

struct off_counter {
  uint64_t calls, ok, unsupported, nospace, failed;
  int32_t last_err;
};

struct dp_offload {
  const struct dp_offload_ops *ops;
  void *ctx;
  pthread_t thread;
  int wake_fd, event_fd;
  bool stop;
  struct off_slot *q;
  uint64_t enq, deq;
  uint64_t queue_full;
  bool claimed;
  bool adopt;
  int32_t claim_rc; /* 1 while pending */
  struct off_counter cnt[REQ_COUNT];
  pthread_mutex_t ev_lock; /* events: the module thread and JavaScript, never the worker */
  struct off_event *events;
  uint32_t nevents;
  uint64_t events_lost;
  /* The module's counters as last read (every OFF_STATS_NS), per port, and its flows. */
  pthread_mutex_t snap_lock;
  uint32_t max_ports;
  int32_t *hw; /* the module thread's own copy of the port bindings */
  struct dp_offload_stats *snap;
  struct dp_offload_flow_entry *flows;
  int32_t nflows; /* -errno if the last dump failed */
  uint64_t stats_rounds;
};

/* ---- the queue ---- */

static void wake(int fd) {
  uint64_t one = 1;
  ssize_t r;
  do {
    r = write(fd, &one, sizeof(one));
  } while (r < 0 && errno == EINTR);
}

static bool q_push(struct dp_offload *o, const struct off_req *r) {
  uint64_t pos = __atomic_load_n(&o->enq, __ATOMIC_RELAXED);
  for (;;) {
    struct off_slot *s = &o->q[pos & (OQ_SIZE - 1)];
    uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    int64_t dif = (int64_t)(seq - pos);
    if (dif == 0) {
      if (__atomic_compare_exchange_n(&o->enq, &pos, pos + 1, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        s->req = *r;
        __atomic_store_n(&s->seq, pos + 1, __ATOMIC_RELEASE);
        wake(o->wake_fd);
        return true;
      }
    } else if (dif < 0) {
      __atomic_add_fetch(&o->queue_full, 1, __ATOMIC_RELAXED);
      return false; /* full: the host keeps this work */
    } else {
      pos = __atomic_load_n(&o->enq, __ATOMIC_RELAXED);
    }
  }
}

/* Only the module thread pops. */
static bool q_pop(struct dp_offload *o, struct off_req *out) {
  struct off_slot *s = &o->q[o->deq & (OQ_SIZE - 1)];
  uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
  if ((int64_t)(seq - (o->deq + 1)) < 0) return false;
  *out = s->req;
  __atomic_store_n(&s->seq, o->deq + OQ_SIZE, __ATOMIC_RELEASE);
  o->deq++;
  return true;
}

/* ---- the module thread ---- */

static void event(struct dp_offload *o, const struct off_event *e) {
  pthread_mutex_lock(&o->ev_lock);
  if (o->nevents < OFF_EVENTS_MAX)
    o->events[o->nevents++] = *e;
  else
    o->events_lost++;
  pthread_mutex_unlock(&o->ev_lock);
  wake(o->event_fd);
}

static void count(struct dp_offload *o, int op, int rc) {
  struct off_counter *c = &o->cnt[op];
  __atomic_add_fetch(&c->calls, 1, __ATOMIC_RELAXED);
  if (rc == 0)
    __atomic_add_fetch(&c->ok, 1, __ATOMIC_RELAXED);
  else if (rc == -EOPNOTSUPP)
    __atomic_add_fetch(&c->unsupported, 1, __ATOMIC_RELAXED);
  else if (rc == -ENOSPC)
    __atomic_add_fetch(&c->nospace, 1, __ATOMIC_RELAXED);
  else {
    __atomic_add_fetch(&c->failed, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&c->last_err, -rc, __ATOMIC_RELAXED);
  }
}

static bool key_eq(const struct dp_offload_flow_key *a, const struct dp_offload_flow_key *b) {
  return a->in_port == b->in_port && a->ipver == b->ipver && a->proto == b->proto && a->sport == b->sport &&
         a->dport == b->dport && memcmp(a->src, b->src, 16) == 0 && memcmp(a->dst, b->dst, 16) == 0;
}

static bool act_eq(const struct dp_offload_flow_action *a, const struct dp_offload_flow_action *b) {
  return a->kind == b->kind && (a->kind != DP_OFFLOAD_FORWARD || a->out_port == b->out_port);
}

/* A NULL callback is "the module cannot": the host does it. */
#define CALL(fn, ...) ((fn) ? (fn)(__VA_ARGS__) : -EOPNOTSUPP)

static int flow_set(struct dp_offload *o, const struct dp_offload_flow_key *k, const struct dp_offload_flow_action *a) {
  int rc = CALL(o->ops->flow_set, o->ctx, k, a);
  count(o, REQ_FLOW_SET, rc);
  return rc;
}

static int flow_del(struct dp_offload *o, const struct dp_offload_flow_key *k) {
  int rc = CALL(o->ops->flow_del, o->ctx, k);
  count(o, REQ_FLOW_DEL, rc);
  return rc;
}

/*
 * Make the module hold exactly the desired flows, touching only what
 * differs: a flow it already holds with the same action is left alone (its
 * counters go on, no duplicate), one with another action is set again, a
 * missing one is set, one nobody wants is deleted. A flow whose set fails
 * stays with the host. Flows on ports the module has no binding for
 * (in_port UINT32_MAX in the dump) cannot be named here and are counted.
 */
static void reconcile(struct dp_offload *o, struct off_req *r) {
  struct off_event ev = {.kind = EV_RECONCILE};
  struct dp_offload_flow_entry *have = calloc(OFF_DUMP_MAX, sizeof(*have));
  bool *matched = calloc(OFF_DUMP_MAX, sizeof(*matched));
  int n = !have || !matched ? -ENOMEM : CALL(o->ops->flow_dump, o->ctx, have, OFF_DUMP_MAX);
  if (n < 0) {
    /* Nothing to compare with: set every desired flow (set replaces, never duplicates). */
    ev.rc = n;
    n = 0;
  }
  for (uint32_t i = 0; i < r->ndesired; i++) {
    struct off_desired *d = &r->desired[i];
    int j = -1;
    for (int k = 0; k < n && j < 0; k++)
      if (!matched[k] && key_eq(&have[k].key, &d->key)) j = k;
    int rc = 0;
    if (j >= 0 && act_eq(&have[j].action, &d->act)) {
      ev.counts[0]++;
    } else {
      rc = flow_set(o, &d->key, &d->act);
      if (rc == 0)
        ev.counts[j >= 0 ? 2 : 1]++;
      else
        ev.counts[4]++;
    }
    if (j >= 0) matched[j] = true;
    if (d->cookie) {
      struct off_event fe = {.kind = EV_FLOW, .op = REQ_FLOW_SET, .rc = rc, .cookie = d->cookie};
      event(o, &fe);
    }
  }
  for (int k = 0; k < n; k++) {
    if (matched[k]) continue;
    if (have[k].key.in_port == UINT32_MAX) {
      ev.counts[5]++;
      continue;
    }
    if (flow_del(o, &have[k].key) == 0)
      ev.counts[3]++;
    else
      ev.counts[4]++;
  }
  free(have);
  free(matched);
  event(o, &ev);
}

/* Read the module's counters for every bound port and its flows. */
static void stats_round(struct dp_offload *o) {
  struct dp_offload_stats *tmp = calloc(o->max_ports, sizeof(*tmp));
  struct dp_offload_flow_entry *flows = o->ops->flow_dump ? calloc(OFF_DUMP_MAX, sizeof(*flows)) : NULL;
  if (!tmp) {
    free(flows);
    return;
  }
  for (uint32_t p = 0; p < o->max_ports && o->ops->stats_get; p++) {
    if (o->hw[p] == DP_OFFLOAD_NO_HW) continue;
    struct dp_offload_port port = {.port = p, .hw = o->hw[p]};
    int rc = o->ops->stats_get(o->ctx, &port, &tmp[p]);
    count(o, REQ_STATS, rc);
    if (rc != 0) memset(&tmp[p], 0, sizeof(tmp[p]));
  }
  int nf = flows ? o->ops->flow_dump(o->ctx, flows, OFF_DUMP_MAX) : -EOPNOTSUPP;
  pthread_mutex_lock(&o->snap_lock);
  struct dp_offload_stats *old = o->snap;
  struct dp_offload_flow_entry *old_flows = o->flows;
  o->snap = tmp;
  o->flows = flows;
  o->nflows = nf;
  o->stats_rounds++;
  pthread_mutex_unlock(&o->snap_lock);
  free(old);
  free(old_flows);
}

static void run(struct dp_offload *o, struct off_req *r) {
  if (r->op == REQ_CLAIM) {
    int rc = CALL(o->ops->claim, o->ctx, r->adopt, r->pid);
    if (o->ops->claim == NULL) rc = 0; /* a module without owners: nothing to claim */
    count(o, REQ_CLAIM, rc);
    o->claimed = rc == 0;
    __atomic_store_n(&o->claim_rc, rc, __ATOMIC_RELEASE);
    struct off_event ev = {.kind = EV_CLAIM, .op = r->adopt, .rc = rc};
    event(o, &ev);
    /* A fresh registration starts from an empty module: whatever a crashed predecessor left goes. */
    if (rc == 0 && !r->adopt) {
      int rr = CALL(o->ops->soft_reset, o->ctx);
      count(o, REQ_SOFT_RESET, rr);
      struct off_event re = {.kind = EV_RESET, .rc = rr};
      event(o, &re);
    }
    return;
  }
  if (r->op == REQ_PORT_ADD && r->port < o->max_ports) o->hw[r->port] = r->hw;
  /* Binding ports and reading counters need no ownership (a standby engine
   * reads what the NIC forwards for its ports); changing what it holds does. */
  if (!o->claimed && r->op != REQ_PORT_ADD && r->op != REQ_PORT_DEL && r->op != REQ_STATS) {
    /* Not (or no longer) the module's owner: the host does everything. */
    int rc = -ENOTCONN;
    if (r->op != REQ_STATS) count(o, r->op, rc);
    if (r->op == REQ_RECONCILE) {
      struct off_event ev = {.kind = EV_RECONCILE, .rc = rc};
      event(o, &ev);
    }
    if ((r->op == REQ_FLOW_SET || r->op == REQ_FLOW_DEL) && r->cookie) {
      struct off_event ev = {.kind = EV_FLOW, .op = r->op, .rc = rc, .cookie = r->cookie};
      event(o, &ev);
    }
    free(r->desired);
    return;
  }
  struct dp_offload_port port = {.port = r->port, .hw = r->hw};
  struct dp_offload_bridge br = {.port = (uint16_t)r->port};
  memcpy(br.mac, r->mac, 6);
  int rc = 0;
  switch (r->op) {
  case REQ_PORT_ADD:
    rc = CALL(o->ops->port_add, o->ctx, &port);
    count(o, r->op, rc);
    break;
  case REQ_PORT_DEL:
    rc = CALL(o->ops->port_del, o->ctx, &port);
    count(o, r->op, rc);
    if (r->port < o->max_ports) o->hw[r->port] = DP_OFFLOAD_NO_HW;
    break;
  case REQ_BRIDGE_ADD:
    rc = CALL(o->ops->bridge_add, o->ctx, &br);
    count(o, r->op, rc);
    break;
  case REQ_BRIDGE_DEL:
    rc = CALL(o->ops->bridge_del, o->ctx, &br);
    count(o, r->op, rc);
    break;
  case REQ_FLOW_SET:
  case REQ_FLOW_DEL:
    rc = r->op == REQ_FLOW_SET ? flow_set(o, &r->key, &r->act) : flow_del(o, &r->key);
    if (r->cookie) {
      struct off_event ev = {.kind = EV_FLOW, .op = r->op, .rc = rc, .cookie = r->cookie};
      event(o, &ev);
    }
    break;
  case REQ_RECONCILE:
    reconcile(o, r);
    break;
  case REQ_SOFT_RESET: {
    rc = CALL(o->ops->soft_reset, o->ctx);
    count(o, r->op, rc);
    struct off_event ev = {.kind = EV_RESET, .rc = rc};
    event(o, &ev);
    break;
  }
  case REQ_STATS:
    stats_round(o);
    break;
  }
  free(r->desired);
}

static void *off_main(void *arg) {
  struct dp_offload *o = arg;
  uint64_t next = dp_now_ns() + OFF_STATS_NS;
  while (!__atomic_load_n(&o->stop, __ATOMIC_ACQUIRE)) {
    struct off_req r;
    while (!__atomic_load_n(&o->stop, __ATOMIC_ACQUIRE) && q_pop(o, &r)) run(o, &r);
    uint64_t now = dp_now_ns();
    if (now >= next) {
      stats_round(o);
      next = now + OFF_STATS_NS;
    }
    struct pollfd pfd = {.fd = o->wake_fd, .events = POLLIN};
    int ms = (int)((next - now) / 1000000ull) + 1;
    if (poll(&pfd, 1, ms) > 0) dp_drain(o->wake_fd);
  }
  /* Requests still queued are dropped (the host does their work); free what they own. */
  struct off_req r;
  while (q_pop(o, &r)) free(r.desired);
  return NULL;
}

/* ---- the engine's call sites (dp_offload.h) ---- */

void dp_offload_port_add(struct dp *dp, uint32_t port, int32_t hw) {
  struct dp_offload *o = dp->offload;
  if (!o) return;
  struct off_req r = {.op = REQ_PORT_ADD, .port = port, .hw = hw};
  q_push(o, &r);
}

void dp_offload_port_del(struct dp *dp, uint32_t port, int32_t hw) {
  struct dp_offload *o = dp->offload;
  if (!o) return;
  struct off_req r = {.op = REQ_PORT_DEL, .port = port, .hw = hw};
  q_push(o, &r);
}

void dp_offload_bridge_add(struct dp *dp, const uint8_t *mac, uint16_t port) {
  struct dp_offload *o = dp->offload;
  if (!o) return;
  struct off_req r = {.op = REQ_BRIDGE_ADD, .port = port};
  memcpy(r.mac, mac, 6);
  q_push(o, &r);
}

void dp_offload_bridge_del(struct dp *dp, const uint8_t *mac, uint16_t port) {
  struct dp_offload *o = dp->offload;
  if (!o) return;
  struct off_req r = {.op = REQ_BRIDGE_DEL, .port = port};
  memcpy(r.mac, mac, 6);
  q_push(o, &r);
}

bool dp_offload_flow_set(struct dp *dp, const struct dp_offload_flow_key *k, const struct dp_offload_flow_action *a, uint64_t cookie) {
  struct dp_offload *o = dp->offload;
  if (!o) return false;
  struct off_req r = {.op = REQ_FLOW_SET, .key = *k, .act = *a, .cookie = cookie};
  return q_push(o, &r);
}

bool dp_offload_flow_del(struct dp *dp, const struct dp_offload_flow_key *k, uint64_t cookie) {
  struct dp_offload *o = dp->offload;
  if (!o) return false;
  struct off_req r = {.op = REQ_FLOW_DEL, .key = *k, .cookie = cookie};
  return q_push(o, &r);
}

uint64_t dp_offload_flow_last_ns(struct dp *dp, const struct dp_offload_flow_key *k) {
  struct dp_offload *o = dp->offload;
  if (!o) return 0;
  if (pthread_mutex_trylock(&o->snap_lock) != 0) return UINT64_MAX;
  uint64_t ns = 0;
  for (int32_t i = 0; i < o->nflows && o->flows; i++)
    if (key_eq(&o->flows[i].key, k)) {
      ns = o->flows[i].counters.last_ns;
      break;
    }
  pthread_mutex_unlock(&o->snap_lock);
  return ns;
}

const struct dp_offload_ops *dp_offload_find(const char *name) {
  static const struct dp_offload_ops *const modules[] = {&dp_offload_fake_ops};
  for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
    if (strcmp(modules[i]->name, name) == 0) return modules[i];
  return NULL;
}

static void off_free(struct dp_offload *o) {
  if (o->wake_fd >= 0) close(o->wake_fd);
  if (o->event_fd >= 0) close(o->event_fd);
  pthread_mutex_destroy(&o->ev_lock);
  pthread_mutex_destroy(&o->snap_lock);
  free(o->q);
  free(o->events);
  free(o->hw);
  free(o->snap);
  free(o->flows);
  free(o);
}

/* Stop the module thread (after the callback it is in, if any), detach, free. Nothing is wiped. */
static void off_stop(struct dp_offload *o) {
  __atomic_store_n(&o->stop, true, __ATOMIC_RELEASE);
  wake(o->wake_fd);
  pthread_join(o->thread, NULL);
  if (o->ops->detach) o->ops->detach(o->ctx);
  off_free(o);
}

/* The lock as dp.c's control calls take it (the worker lets a waiting control call in). */
static void lock_dp(struct dp *dp) {
  __atomic_add_fetch(&dp->ctl_waiting, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_lock(&dp->lock);
  __atomic_sub_fetch(&dp->ctl_waiting, 1, __ATOMIC_SEQ_CST);
}

void dp_offload_destroy(struct dp *dp) {
  struct dp_offload *o = dp->offload;
  dp->offload = NULL;
  if (o) off_stop(o);
}

/* ---- N-API ---- */

struct dp *dp_from_handle(napi_env env, napi_value v, napi_value *res); /* dp.c */

#define GET_DP_OR_RETURN(var, value)             \
  napi_value res_;                               \
  struct dp *var = dp_from_handle(env, value, &res_); \
  if (!var) return res_

static bool prop_bytes16(napi_env env, napi_value obj, const char *name, uint8_t *out) {
  napi_value v;
  void *data;
  size_t len;
  if (!ziu_get_prop(env, obj, name, &v) || !ziu_get_bytes(env, v, &data, &len)) return false;
  if (len != 16) {
    napi_throw_range_error(env, NULL, "ziu native: a flow address is 16 bytes");
    return false;
  }
  memcpy(out, data, 16);
  return true;
}

/* {inPort, ipver, proto, sport, dport, src, dst}; false with an exception, or *bad for a value out of range. */
static bool get_key(napi_env env, napi_value v, struct dp_offload_flow_key *k, bool *bad) {
  int64_t in, ipver, proto, sport, dport;
  memset(k, 0, sizeof(*k));
  if (!ziu_get_prop_i64(env, v, "inPort", &in) || !ziu_get_prop_i64(env, v, "ipver", &ipver) || !ziu_get_prop_i64(env, v, "proto", &proto) ||
      !ziu_get_prop_i64(env, v, "sport", &sport) || !ziu_get_prop_i64(env, v, "dport", &dport) || !prop_bytes16(env, v, "src", k->src) ||
      !prop_bytes16(env, v, "dst", k->dst))
    return false;
  *bad = in < 0 || in >= DP_MAX_PORTS || (ipver != 4 && ipver != 6) || proto < 0 || proto > 255 || sport < 0 || sport > 65535 ||
         dport < 0 || dport > 65535;
  k->in_port = (uint32_t)in;
  k->ipver = (uint8_t)ipver;
  k->proto = (uint8_t)proto;
  k->sport = (uint16_t)sport;
  k->dport = (uint16_t)dport;
  return true;
}

static bool get_action(napi_env env, napi_value v, struct dp_offload_flow_action *a, bool *bad) {
  int64_t kind, out;
  if (!ziu_get_prop_i64(env, v, "kind", &kind) || !ziu_get_prop_i64(env, v, "outPort", &out)) return false;
  *bad = (kind != DP_OFFLOAD_FORWARD && kind != DP_OFFLOAD_DROP) || (kind == DP_OFFLOAD_FORWARD && (out < 0 || out >= DP_MAX_PORTS));
  a->kind = (uint8_t)kind;
  a->out_port = kind == DP_OFFLOAD_FORWARD ? (uint32_t)out : 0;
  return true;
}

static bool get_cookie(napi_env env, napi_value v, uint64_t *out) {
  bool lossless = false;
  if (napi_get_value_bigint_uint64(env, v, out, &lossless) != napi_ok || !lossless) {
    napi_throw_type_error(env, NULL, "ziu native: a cookie is a u64 bigint");
    return false;
  }
  return true;
}

/* Queue the claim, then a bridge_add for every MAC entry the engine holds
 * (under dp->lock: before any change the worker can post). */
static void queue_claim(struct dp *dp, struct dp_offload *o, bool adopt, int32_t pid) {
  struct off_req claim = {.op = REQ_CLAIM, .adopt = adopt, .pid = pid};
  o->adopt = adopt;
  q_push(o, &claim);
  /* The bridge table holds table port ids (+1, 0 free) of every instance
   * that maps it: only entries of ports here, and not aged out, are ours. */
  const struct dp_table *t = &dp->tables.bridge;
  if (!t->map) return;
  const struct dp_bridge_entry *e = (const struct dp_bridge_entry *)t->ent;
  for (uint32_t i = 0; i < t->entries; i++) {
    uint16_t stored = e[i].port;
    if (stored == 0 || stored > DP_TABLE_PORTS) continue;
    if ((int32_t)(dp->now_s - e[i].last_seen) > (int32_t)t->idle_s) continue;
    int16_t port = dp->tables.tmap[stored - 1];
    if (port < 0) continue;
    struct off_req r = {.op = REQ_BRIDGE_ADD, .port = (uint16_t)port};
    memcpy(r.mac, e[i].mac, 6);
    q_push(o, &r);
  }
}

/*
 * dpOffloadRegister(h, module, fd, instance, claim, pid): attach the module
 * (its attach callback, on this thread), start its thread, and queue a
 * port_add for every port, then (claim 1 fresh, 2 adopt; 0 not yet: see
 * dpOffloadClaim) the claim and a bridge_add per MAC entry. A fresh claim is
 * followed by a soft reset; an adopting one wipes nothing. Its outcome comes
 * as an event. 0 or -errno (-ENOENT: no such module, -EEXIST: one is
 * registered, attach's own errno: -EPROTO a NIC state it does not know).
 */
static napi_value n_register(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 6);
  GET_DP_OR_RETURN(dp, argv[0]);
  char name[32], instance[64];
  int32_t fd, pid, claim_mode;
  if (!ziu_get_str(env, argv[1], name, sizeof(name), NULL) || !ziu_get_i32(env, argv[2], &fd) ||
      !ziu_get_str(env, argv[3], instance, sizeof(instance), NULL) || !ziu_get_i32(env, argv[4], &claim_mode) ||
      !ziu_get_i32(env, argv[5], &pid))
    return NULL;
  if (claim_mode < 0 || claim_mode > 2) return ziu_errno(env, EINVAL);
  const struct dp_offload_ops *ops = dp_offload_find(name);
  if (!ops) return ziu_errno(env, ENOENT);
  if (dp->offload) return ziu_errno(env, EEXIST);
  struct dp_offload *o = calloc(1, sizeof(*o));
  if (!o) return ziu_errno(env, ENOMEM);
  o->wake_fd = o->event_fd = -1;
  pthread_mutex_init(&o->ev_lock, NULL);
  pthread_mutex_init(&o->snap_lock, NULL);
  o->ops = ops;
  o->max_ports = dp->max_ports;
  o->claim_rc = claim_mode ? 1 : -ENOTCONN;
  o->q = calloc(OQ_SIZE, sizeof(*o->q));
  o->events = calloc(OFF_EVENTS_MAX, sizeof(*o->events));
  o->hw = calloc(o->max_ports, sizeof(*o->hw));
  o->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  o->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!o->q || !o->events || !o->hw || o->wake_fd < 0 || o->event_fd < 0) {
    int err = o->wake_fd < 0 || o->event_fd < 0 ? errno : ENOMEM;
    off_free(o);
    return ziu_errno(env, err);
  }
  for (uint32_t i = 0; i < OQ_SIZE; i++) o->q[i].seq = i;
  for (uint32_t i = 0; i < o->max_ports; i++) o->hw[i] = DP_OFFLOAD_NO_HW;
  int rc = ops->attach(&o->ctx, fd, instance);
  if (rc < 0) {
    off_free(o);
    return ziu_errno(env, -rc);
  }
  /* The module thread takes no signals: they belong to Node's threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int err = pthread_create(&o->thread, NULL, off_main, o);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err) {
    ops->detach(o->ctx);
    off_free(o);
    return ziu_errno(env, err);
  }
  pthread_setname_np(o->thread, "ziu-offload");
  /* What the engine already has, queued before any change the worker can post. */
  lock_dp(dp);
  for (uint32_t i = 0; i < dp->ports_hi; i++) {
    if (!dp->ports[i].in_use) continue;
    struct off_req r = {.op = REQ_PORT_ADD, .port = i, .hw = dp->ports[i].offload_hw};
    q_push(o, &r);
  }
  if (claim_mode) queue_claim(dp, o, claim_mode == 2, pid);
  dp->offload = o;
  pthread_mutex_unlock(&dp->lock);
  return ziu_int(env, 0);
}

/* dpOffloadClaim(h, adopt, pid): a module registered without a claim (a standby instance) claims it now. */
static napi_value n_claim(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  GET_DP_OR_RETURN(dp, argv[0]);
  bool adopt;
  int32_t pid;
  if (napi_get_value_bool(env, argv[1], &adopt) != napi_ok) {
    napi_throw_type_error(env, NULL, "ziu native: adopt must be a boolean");
    return NULL;
  }
  if (!ziu_get_i32(env, argv[2], &pid)) return NULL;
  struct dp_offload *o = dp->offload;
  if (!o) return ziu_errno(env, ENOTCONN);
  __atomic_store_n(&o->claim_rc, 1, __ATOMIC_RELEASE);
  lock_dp(dp);
  queue_claim(dp, o, adopt, pid);
  pthread_mutex_unlock(&dp->lock);
  return ziu_int(env, 0);
}

/* dpOffloadUnregister(h): no more hooks; the module keeps what it holds. Waits for a callback in progress. */
static napi_value n_unregister(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP_OR_RETURN(dp, argv[0]);
  lock_dp(dp);
  struct dp_offload *o = dp->offload;
  dp->offload = NULL; /* the worker posts only with the lock held: it sees NULL from now on */
  pthread_mutex_unlock(&dp->lock);
  if (!o) return ziu_errno(env, ENOTCONN);
  off_stop(o);
  return ziu_int(env, 0);
}

/* dpOffloadFlowSet(h, key, action, cookie) / dpOffloadFlowDel(h, key, cookie): 0 queued, -ENOTCONN no module, -EAGAIN queue full. */
static napi_value n_flow_set(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 4);
  GET_DP_OR_RETURN(dp, argv[0]);
  struct dp_offload_flow_key k;
  struct dp_offload_flow_action a;
  uint64_t cookie;
  bool bad_k = false, bad_a = false;
  if (!get_key(env, argv[1], &k, &bad_k) || !get_action(env, argv[2], &a, &bad_a) || !get_cookie(env, argv[3], &cookie)) return NULL;
  if (bad_k || bad_a) return ziu_errno(env, EINVAL);
  if (!dp->offload) return ziu_errno(env, ENOTCONN);
  return ziu_int(env, dp_offload_flow_set(dp, &k, &a, cookie) ? 0 : -EAGAIN);
}

static napi_value n_flow_del(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  GET_DP_OR_RETURN(dp, argv[0]);
  struct dp_offload_flow_key k;
  uint64_t cookie;
  bool bad = false;
  if (!get_key(env, argv[1], &k, &bad) || !get_cookie(env, argv[2], &cookie)) return NULL;
  if (bad) return ziu_errno(env, EINVAL);
  if (!dp->offload) return ziu_errno(env, ENOTCONN);
  return ziu_int(env, dp_offload_flow_del(dp, &k, cookie) ? 0 : -EAGAIN);
}

/* ---- the flow table's flows in engine terms (the flow op, and reconcile from the adopted table) ---- */

/* An engine port's table port id, or DP_TPORT_NONE. */
static uint16_t tport_of(const struct dp *dp, uint32_t port) {
  return port < dp->max_ports && dp->ports[port].in_use ? dp->ports[port].tport : DP_TPORT_NONE;
}

/* The flow table's key of a module key (engine ports): false if its port has no table port. */
static bool table_key(const struct dp *dp, const struct dp_offload_flow_key *ok, struct dp_flow_key *k) {
  uint16_t in = tport_of(dp, ok->in_port);
  if (in >= DP_TABLE_PORTS) return false;
  memset(k, 0, sizeof(*k));
  k->in_port = in;
  k->family = ok->ipver == 4 ? DP_FAMILY_IP4 : DP_FAMILY_IP6;
  k->ethertype = ok->ipver == 4 ? 0x0800 : 0x86dd;
  k->proto = ok->proto;
  memcpy(k->src, ok->src, 16);
  memcpy(k->dst, ok->dst, 16);
  /* The engine keys ports only for TCP, UDP and SCTP (dp_flow_key_of). */
  if (ok->proto == 6 || ok->proto == 17 || ok->proto == 132) {
    k->sport = ok->sport;
    k->dport = ok->dport;
  }
  return true;
}

/*
 * dpFlowPin(h, key, action) / dpFlowUnpin(h, key): the flow op's flow in
 * the engine's flow table (engine ports), its action enforced by the
 * worker. 0, or -ENODEV (no flow table), -EROFS (not serving yet),
 * -ENOSPC (a window of pinned flows), -ENOENT (unpin: none), -EINVAL.
 */
static napi_value n_flow_pin(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 3);
  GET_DP_OR_RETURN(dp, argv[0]);
  struct dp_offload_flow_key ok;
  struct dp_offload_flow_action a;
  bool bad_k = false, bad_a = false;
  if (!get_key(env, argv[1], &ok, &bad_k) || !get_action(env, argv[2], &a, &bad_a)) return NULL;
  if (bad_k || bad_a) return ziu_errno(env, EINVAL);
  lock_dp(dp);
  struct dp_flow_key k;
  uint16_t out = a.kind == DP_OFFLOAD_FORWARD ? tport_of(dp, a.out_port) : 0;
  int rc = !table_key(dp, &ok, &k) || out >= DP_TABLE_PORTS ? -EINVAL
                                                              : dp_flow_pin(dp, &k, a.kind == DP_OFFLOAD_FORWARD ? DP_FLOW_FORWARD : DP_FLOW_DROP, out);
  pthread_mutex_unlock(&dp->lock);
  return ziu_int(env, rc);
}

static napi_value n_flow_unpin(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  GET_DP_OR_RETURN(dp, argv[0]);
  struct dp_offload_flow_key ok;
  bool bad = false;
  if (!get_key(env, argv[1], &ok, &bad)) return NULL;
  if (bad) return ziu_errno(env, EINVAL);
  lock_dp(dp);
  struct dp_flow_key k;
  int rc = table_key(dp, &ok, &k) ? dp_flow_unpin(dp, &k) : -ENOENT;
  pthread_mutex_unlock(&dp->lock);
  return ziu_int(env, rc);
}

/*
 * dpFlowEntries(h): the flow table's IPv4/IPv6 flows between ports this
 * instance has, in the module's terms: [{key, action, pinned, offloadable,
 * packets}] (engine ports; offloadable: it comes in on a port with hardware
 * behind it), at most OFF_DUMP_MAX. What a new instance reconciles the
 * module with at commit: the table it adopted. -ENODEV without a flow table.
 */
#define ENTRIES_CHUNK 1024u /* entries read per hold of dp->lock: the worker waits for one chunk at most */

struct table_flow {
  struct dp_offload_flow_key key;
  struct dp_offload_flow_action act;
  bool pinned, offloadable;
  uint64_t packets;
};

static napi_value key_obj(napi_env env, const struct dp_offload_flow_key *k);

static napi_value n_flow_entries(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP_OR_RETURN(dp, argv[0]);
  struct table_flow *got = calloc(OFF_DUMP_MAX, sizeof(*got));
  if (!got) return ziu_errno(env, ENOMEM);
  uint32_t n = 0;
  bool mapped = true;
  /* A chunk at a time under the lock: no torn entry, and a table of millions
   * of flows never stops the worker for more than one chunk. Ports and tmap
   * change only on this thread, so they hold between chunks. */
  for (uint32_t i = 0; n < OFF_DUMP_MAX; ) {
    lock_dp(dp);
    struct dp_table *t = &dp->tables.flow;
    if (!t->map) {
      pthread_mutex_unlock(&dp->lock);
      mapped = i > 0;
      break;
    }
    uint32_t end = t->entries - i > ENTRIES_CHUNK ? i + ENTRIES_CHUNK : t->entries;
    for (; i < end && n < OFF_DUMP_MAX; i++) {
      struct dp_flow f;
      struct table_flow *x = &got[n];
      dp_flow_read(t, i, &f);
      if ((f.state & 0xffu) != DP_FLOW_LIVE || !dp_flow_module_key(dp, &f.key, &x->key)) continue;
      int out = f.action == DP_FLOW_FORWARD ? dp_tables_port(dp, f.out_port) : 0;
      if (out < 0) continue;
      x->act = (struct dp_offload_flow_action){.kind = f.action == DP_FLOW_FORWARD ? DP_OFFLOAD_FORWARD : DP_OFFLOAD_DROP, .out_port = (uint32_t)out};
      x->pinned = (f.state & DP_FLOW_PIN) != 0;
      x->offloadable = dp->ports[x->key.in_port].offload_hw != DP_OFFLOAD_NO_HW;
      x->packets = f.packets;
      n++;
    }
    bool done = i >= t->entries;
    pthread_mutex_unlock(&dp->lock);
    if (done) break;
  }
  if (!mapped) {
    free(got);
    return ziu_errno(env, ENODEV);
  }
  napi_value list;
  napi_create_array_with_length(env, n, &list);
  for (uint32_t k = 0; k < n; k++) {
    const struct table_flow *x = &got[k];
    napi_value o, act;
    napi_create_object(env, &o);
    napi_create_object(env, &act);
    ziu_set_prop(env, act, "kind", ziu_int(env, x->act.kind));
    ziu_set_prop(env, act, "outPort", ziu_int(env, x->act.out_port));
    ziu_set_prop(env, o, "key", key_obj(env, &x->key));
    ziu_set_prop(env, o, "action", act);
    ziu_set_prop(env, o, "pinned", ziu_bool(env, x->pinned));
    ziu_set_prop(env, o, "offloadable", ziu_bool(env, x->offloadable));
    ziu_set_prop(env, o, "packets", ziu_double(env, (double)x->packets));
    napi_set_element(env, list, k, o);
  }
  free(got);
  return list;
}

/* dpOffloadReconcile(h, [{key, action, cookie}]): queue one reconcile of the module's flows with these. */
static napi_value n_reconcile(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 2);
  GET_DP_OR_RETURN(dp, argv[0]);
  bool is_array = false;
  uint32_t n = 0;
  napi_is_array(env, argv[1], &is_array);
  if (!is_array) {
    napi_throw_type_error(env, NULL, "ziu native: flows must be an array");
    return NULL;
  }
  napi_get_array_length(env, argv[1], &n);
  if (n > OFF_DUMP_MAX) return ziu_errno(env, E2BIG);
  struct off_desired *d = calloc(n ? n : 1, sizeof(*d));
  if (!d) return ziu_errno(env, ENOMEM);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e, kv, av, cv;
    bool bad_k = false, bad_a = false;
    if (napi_get_element(env, argv[1], i, &e) != napi_ok || !ziu_get_prop(env, e, "key", &kv) || !ziu_get_prop(env, e, "action", &av) ||
        !ziu_get_prop(env, e, "cookie", &cv) || !get_key(env, kv, &d[i].key, &bad_k) || !get_action(env, av, &d[i].act, &bad_a) ||
        !get_cookie(env, cv, &d[i].cookie)) {
      free(d);
      return NULL;
    }
    if (bad_k || bad_a) {
      free(d);
      return ziu_errno(env, EINVAL);
    }
  }
  if (!dp->offload) {
    free(d);
    return ziu_errno(env, ENOTCONN);
  }
  struct off_req r = {.op = REQ_RECONCILE, .desired = d, .ndesired = n};
  if (!q_push(dp->offload, &r)) {
    free(d);
    return ziu_errno(env, EAGAIN);
  }
  return ziu_int(env, 0);
}

/* dpOffloadSoftReset(h): queue a soft reset (the module wipes what it holds). */
static napi_value n_soft_reset(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP_OR_RETURN(dp, argv[0]);
  if (!dp->offload) return ziu_errno(env, ENOTCONN);
  struct off_req r = {.op = REQ_SOFT_RESET};
  return ziu_int(env, q_push(dp->offload, &r) ? 0 : -EAGAIN);
}

/* dpOffloadRefresh(h): read the module's counters now rather than within 100 ms. */
static napi_value n_refresh(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP_OR_RETURN(dp, argv[0]);
  if (!dp->offload) return ziu_errno(env, ENOTCONN);
  struct off_req r = {.op = REQ_STATS};
  return ziu_int(env, q_push(dp->offload, &r) ? 0 : -EAGAIN);
}

static napi_value n_event_fd(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP_OR_RETURN(dp, argv[0]);
  return dp->offload ? ziu_int(env, dp->offload->event_fd) : ziu_errno(env, ENOTCONN);
}

static const char *const EV_KINDS[] = {"", "flow", "claim", "reconcile", "reset"};

/* dpOffloadEvents(h): the events since the last call, in order (drains the event fd). */
static napi_value n_events(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP_OR_RETURN(dp, argv[0]);
  struct dp_offload *o = dp->offload;
  if (!o) return ziu_errno(env, ENOTCONN);
  dp_drain(o->event_fd);
  pthread_mutex_lock(&o->ev_lock);
  uint32_t n = o->nevents;
  struct off_event *copy = malloc((n ? n : 1) * sizeof(*copy));
  if (copy) {
    memcpy(copy, o->events, n * sizeof(*copy));
    o->nevents = 0;
  }
  pthread_mutex_unlock(&o->ev_lock);
  if (!copy) return ziu_errno(env, ENOMEM);
  napi_value arr;
  napi_create_array_with_length(env, n, &arr);
  for (uint32_t i = 0; i < n; i++) {
    struct off_event *e = &copy[i];
    napi_value ev, str;
    napi_create_object(env, &ev);
    napi_create_string_utf8(env, EV_KINDS[e->kind], NAPI_AUTO_LENGTH, &str);
    ziu_set_prop(env, ev, "kind", str);
    ziu_set_prop(env, ev, "rc", ziu_int(env, e->rc));
    if (e->kind == EV_FLOW) {
      napi_create_string_utf8(env, REQ_NAMES[e->op], NAPI_AUTO_LENGTH, &str);
      ziu_set_prop(env, ev, "op", str);
      ziu_set_prop(env, ev, "cookie", ziu_bigint_u64(env, e->cookie));
    }
    if (e->kind == EV_CLAIM) ziu_set_prop(env, ev, "adopt", ziu_bool(env, e->op != 0));
    if (e->kind == EV_RECONCILE) {
      static const char *const names[6] = {"kept", "added", "updated", "removed", "failed", "unmapped"};
      for (int c = 0; c < 6; c++) ziu_set_prop(env, ev, names[c], ziu_int(env, e->counts[c]));
    }
    napi_set_element(env, arr, i, ev);
  }
  free(copy);
  return arr;
}

static napi_value stats_obj(napi_env env, const struct dp_offload_stats *s) {
  napi_value o;
  napi_create_object(env, &o);
  ziu_set_prop(env, o, "rxPackets", ziu_double(env, (double)s->rx_packets));
  ziu_set_prop(env, o, "rxBytes", ziu_double(env, (double)s->rx_bytes));
  ziu_set_prop(env, o, "txPackets", ziu_double(env, (double)s->tx_packets));
  ziu_set_prop(env, o, "txBytes", ziu_double(env, (double)s->tx_bytes));
  ziu_set_prop(env, o, "drops", ziu_double(env, (double)s->drops));
  return o;
}

static napi_value key_obj(napi_env env, const struct dp_offload_flow_key *k) {
  napi_value o, buf;
  void *data;
  napi_create_object(env, &o);
  ziu_set_prop(env, o, "inPort", ziu_int(env, k->in_port == UINT32_MAX ? -1 : (int64_t)k->in_port));
  ziu_set_prop(env, o, "ipver", ziu_int(env, k->ipver));
  ziu_set_prop(env, o, "proto", ziu_int(env, k->proto));
  ziu_set_prop(env, o, "sport", ziu_int(env, k->sport));
  ziu_set_prop(env, o, "dport", ziu_int(env, k->dport));
  napi_create_buffer_copy(env, 16, k->src, &data, &buf);
  ziu_set_prop(env, o, "src", buf);
  napi_create_buffer_copy(env, 16, k->dst, &data, &buf);
  ziu_set_prop(env, o, "dst", buf);
  return o;
}

/*
 * dpOffloadStatus(h): the module, its claim, the queue, per-op counters,
 * the module's per-port counters and its flows with their counters, as last
 * read (at most ~100 ms old, or stats_rounds 0 if never). Reads snapshots
 * only: it never calls the module.
 */
static napi_value n_status(napi_env env, napi_callback_info info) {
  ZIU_ARGS(env, info, 1);
  GET_DP_OR_RETURN(dp, argv[0]);
  struct dp_offload *o = dp->offload;
  if (!o) return ziu_errno(env, ENOTCONN);
  napi_value st, str, ops, ports, flows;
  napi_create_object(env, &st);
  napi_create_string_utf8(env, o->ops->name, NAPI_AUTO_LENGTH, &str);
  ziu_set_prop(env, st, "module", str);
  ziu_set_prop(env, st, "adopt", ziu_bool(env, o->adopt));
  int32_t crc = __atomic_load_n(&o->claim_rc, __ATOMIC_ACQUIRE);
  ziu_set_prop(env, st, "claimRc", ziu_int(env, crc));
  uint64_t enq = __atomic_load_n(&o->enq, __ATOMIC_RELAXED);
  ziu_set_prop(env, st, "queued", ziu_double(env, (double)enq));
  ziu_set_prop(env, st, "queueFull", ziu_double(env, (double)__atomic_load_n(&o->queue_full, __ATOMIC_RELAXED)));
  pthread_mutex_lock(&o->ev_lock);
  ziu_set_prop(env, st, "eventsLost", ziu_double(env, (double)o->events_lost));
  pthread_mutex_unlock(&o->ev_lock);
  napi_create_object(env, &ops);
  for (int i = 0; i < REQ_COUNT; i++) {
    struct off_counter *c = &o->cnt[i];
    napi_value co;
    napi_create_object(env, &co);
    ziu_set_prop(env, co, "calls", ziu_double(env, (double)__atomic_load_n(&c->calls, __ATOMIC_RELAXED)));
    ziu_set_prop(env, co, "ok", ziu_double(env, (double)__atomic_load_n(&c->ok, __ATOMIC_RELAXED)));
    ziu_set_prop(env, co, "unsupported", ziu_double(env, (double)__atomic_load_n(&c->unsupported, __ATOMIC_RELAXED)));
    ziu_set_prop(env, co, "nospace", ziu_double(env, (double)__atomic_load_n(&c->nospace, __ATOMIC_RELAXED)));
    ziu_set_prop(env, co, "failed", ziu_double(env, (double)__atomic_load_n(&c->failed, __ATOMIC_RELAXED)));
    ziu_set_prop(env, co, "lastErrno", ziu_int(env, __atomic_load_n(&c->last_err, __ATOMIC_RELAXED)));
    ziu_set_prop(env, ops, REQ_NAMES[i], co);
  }
  ziu_set_prop(env, st, "ops", ops);
  napi_create_array(env, &ports);
  napi_create_array(env, &flows);
  pthread_mutex_lock(&o->snap_lock);
  ziu_set_prop(env, st, "statsRounds", ziu_double(env, (double)o->stats_rounds));
  uint32_t k = 0;
  for (uint32_t p = 0; o->snap && p < o->max_ports; p++) {
    const struct dp_offload_stats *s = &o->snap[p];
    if (!s->rx_packets && !s->tx_packets && !s->drops) continue;
    napi_value po = stats_obj(env, s);
    ziu_set_prop(env, po, "port", ziu_int(env, p));
    napi_set_element(env, ports, k++, po);
  }
  for (int32_t i = 0; o->flows && i < o->nflows; i++) {
    const struct dp_offload_flow_entry *f = &o->flows[i];
    napi_value fo;
    napi_create_object(env, &fo);
    ziu_set_prop(env, fo, "key", key_obj(env, &f->key));
    ziu_set_prop(env, fo, "kind", ziu_int(env, f->action.kind));
    ziu_set_prop(env, fo, "outPort", ziu_int(env, f->action.out_port == UINT32_MAX ? -1 : (int64_t)f->action.out_port));
    ziu_set_prop(env, fo, "packets", ziu_double(env, (double)f->counters.packets));
    ziu_set_prop(env, fo, "bytes", ziu_double(env, (double)f->counters.bytes));
    napi_set_element(env, flows, (uint32_t)i, fo);
  }
  ziu_set_prop(env, st, "flowsRc", ziu_int(env, o->nflows < 0 ? o->nflows : 0));
  pthread_mutex_unlock(&o->snap_lock);
  ziu_set_prop(env, st, "ports", ports);
  ziu_set_prop(env, st, "flows", flows);
  return st;
}

void dp_offload_register_napi(napi_env env, napi_value exports) {
  ziu_register_const(env, exports, "DP_OFFLOAD_FORWARD", DP_OFFLOAD_FORWARD);
  ziu_register_const(env, exports, "DP_OFFLOAD_DROP", DP_OFFLOAD_DROP);
  ziu_register(env, exports, "dpOffloadRegister", n_register);
  ziu_register(env, exports, "dpOffloadClaim", n_claim);
  ziu_register(env, exports, "dpOffloadUnregister", n_unregister);
  ziu_register(env, exports, "dpOffloadFlowSet", n_flow_set);
  ziu_register(env, exports, "dpOffloadFlowDel", n_flow_del);
  ziu_register(env, exports, "dpOffloadReconcile", n_reconcile);
  ziu_register(env, exports, "dpOffloadSoftReset", n_soft_reset);
  ziu_register(env, exports, "dpOffloadRefresh", n_refresh);
  ziu_register(env, exports, "dpOffloadEventFd", n_event_fd);
  ziu_register(env, exports, "dpOffloadEvents", n_events);
  ziu_register(env, exports, "dpOffloadStatus", n_status);
  ziu_register(env, exports, "dpFlowPin", n_flow_pin);
  ziu_register(env, exports, "dpFlowUnpin", n_flow_unpin);
  ziu_register(env, exports, "dpFlowEntries", n_flow_entries);
}
