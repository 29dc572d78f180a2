/*
 * The flow table: 5-tuple (and the input port) -> action (forward to a port,
 * or drop), with packet and byte counters and when it was last seen. Flows
 * are made by the datapath from traffic (docs/tables.md): the first unicast
 * frame to a learned MAC makes one; a flow whose destination sits behind its
 * own input port is a drop flow (the segment already has the frame). A frame
 * that is flooded makes none. IPv4 and IPv6 flows are keyed by addresses,
 * protocol and, for TCP, UDP and SCTP, ports; any other frame by its MACs and
 * ethertype.
 *
 * Two formats (dp_table.h): the same key, counters and times, laid out
 * differently; format 2 also keeps when the flow was created and the TCP
 * flags seen. Both use the same hash over the same key and the same entry
 * count, so an entry keeps its index in a converted table.
 *
 * Every change goes through dp_flow_set or dp_flow_delete (the places an
 * offload module hooks into) and takes a new generation from the header,
 * recorded in the change log: a converter catches up exactly what changed.
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include "dp.h"

uint32_t dp_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint32_t)ts.tv_sec;
}

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

bool dp_flow_key_of(const uint8_t *f, uint32_t len, uint16_t in_tport, struct dp_flow_key *k, uint8_t *tcp_flags) {
  memset(k, 0, sizeof(*k));
  *tcp_flags = 0;
  if (len < 14) return false;
  k->in_port = in_tport;
  uint32_t off = 12;
  uint16_t type = be16(f + 12);
  if ((type == 0x8100 || type == 0x88a8) && len >= 18) {
    off = 16;
    type = be16(f + 16);
  }
  off += 2;
  k->ethertype = type;
  uint32_t l4 = 0;
  if (type == 0x0800 && len >= off + 20 && (f[off] >> 4) == 4) {
    uint32_t ihl = (f[off] & 0x0fu) * 4u;
    k->family = DP_FAMILY_IP4;
    memcpy(k->src, f + off + 12, 4);
    memcpy(k->dst, f + off + 16, 4);
    k->proto = f[off + 9];
    bool later_fragment = ((f[off + 6] & 0x1f) | f[off + 7]) != 0;
    if (ihl >= 20 && !later_fragment) l4 = off + ihl;
  } else if (type == 0x86dd && len >= off + 40) {
    k->family = DP_FAMILY_IP6;
    memcpy(k->src, f + off + 8, 16);
    memcpy(k->dst, f + off + 24, 16);
    k->proto = f[off + 6];
    l4 = off + 40;
  } else {
    k->family = DP_FAMILY_L2;
    memcpy(k->src, f + 6, 6);
    memcpy(k->dst, f, 6);
    return true;
  }
  if (l4 && (k->proto == 6 || k->proto == 17 || k->proto == 132) && len >= l4 + 4) {
    k->sport = be16(f + l4);
    k->dport = be16(f + l4 + 2);
    if (k->proto == 6 && len >= l4 + 14) *tcp_flags = f[l4 + 13];
  }
  return true;
}

static uint32_t key_hash(const struct dp_flow_key *k) {
  const uint64_t *w = (const uint64_t *)k;
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < sizeof(*k) / 8; i++) {
    h ^= w[i];
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
  }
  return (uint32_t)(h >> 32);
}

static inline uint8_t *entry(const struct dp_table *t, uint32_t i) { return t->ent + (size_t)i * t->entry_bytes; }

static inline uint32_t *state_of(const struct dp_table *t, uint32_t i) {
  uint8_t *e = entry(t, i);
  return t->format == 1 ? &((struct dp_flow1 *)e)->state : &((struct dp_flow2 *)e)->state;
}

static inline uint64_t gen_of(const struct dp_table *t, uint32_t i) {
  uint8_t *e = entry(t, i);
  return __atomic_load_n(t->format == 1 ? &((struct dp_flow1 *)e)->gen : &((struct dp_flow2 *)e)->gen, __ATOMIC_ACQUIRE);
}

static inline bool live(uint32_t state) { return (state & 0xffu) == DP_FLOW_LIVE; }

void dp_flow_read(const struct dp_table *t, uint32_t i, struct dp_flow *f) {
  memset(f, 0, sizeof(*f));
  const uint8_t *e = entry(t, i);
  if (t->format == 1) {
    const struct dp_flow1 *x = (const struct dp_flow1 *)e;
    f->state = __atomic_load_n(&x->state, __ATOMIC_ACQUIRE);
    memcpy(f->key.src, x->src, 16);
    memcpy(f->key.dst, x->dst, 16);
    f->key.sport = x->sport;
    f->key.dport = x->dport;
    f->key.in_port = x->in_port;
    f->key.ethertype = x->ethertype;
    f->key.family = x->family;
    f->key.proto = x->proto;
    f->action = x->action;
    f->out_port = x->out_port;
    f->gen = x->gen;
    f->packets = x->packets;
    f->bytes = x->bytes;
    f->last_seen = x->last_seen;
  } else {
    const struct dp_flow2 *x = (const struct dp_flow2 *)e;
    f->state = __atomic_load_n(&x->state, __ATOMIC_ACQUIRE);
    f->key = x->key;
    memset(f->key.pad, 0, sizeof(f->key.pad));
    f->action = x->action;
    f->tcp_flags = x->tcp_flags;
    f->out_port = x->out_port;
    f->gen = x->gen;
    f->packets = x->packets;
    f->bytes = x->bytes;
    f->created = x->created;
    f->last_seen = x->last_seen;
  }
}

/* Write a whole entry: the state word last (release), so a reader that sees
 * it live sees the rest; then its generation. */
void dp_flow_write(struct dp_table *t, uint32_t i, const struct dp_flow *f, uint64_t gen) {
  uint8_t *e = entry(t, i);
  if (t->format == 1) {
    struct dp_flow1 *x = (struct dp_flow1 *)e;
    __atomic_store_n(&x->state, DP_FLOW_FREE, __ATOMIC_RELEASE);
    memcpy(x->src, f->key.src, 16);
    memcpy(x->dst, f->key.dst, 16);
    x->sport = f->key.sport;
    x->dport = f->key.dport;
    x->in_port = f->key.in_port;
    x->ethertype = f->key.ethertype;
    x->family = f->key.family;
    x->proto = f->key.proto;
    x->action = f->action;
    x->out_port = f->out_port;
    x->packets = f->packets;
    x->bytes = f->bytes;
    x->last_seen = f->last_seen;
    __atomic_store_n(&x->state, f->state, __ATOMIC_RELEASE);
    __atomic_store_n(&x->gen, gen, __ATOMIC_RELEASE);
  } else {
    struct dp_flow2 *x = (struct dp_flow2 *)e;
    __atomic_store_n(&x->state, DP_FLOW_FREE, __ATOMIC_RELEASE);
    x->key = f->key;
    memset(x->key.pad, 0, sizeof(x->key.pad));
    x->action = f->action;
    x->tcp_flags = f->tcp_flags;
    x->out_port = f->out_port;
    x->packets = f->packets;
    x->bytes = f->bytes;
    x->created = f->created ? f->created : f->last_seen;
    x->last_seen = f->last_seen;
    __atomic_store_n(&x->state, f->state, __ATOMIC_RELEASE);
    __atomic_store_n(&x->gen, gen, __ATOMIC_RELEASE);
  }
}

static bool key_eq(const struct dp_table *t, uint32_t i, const struct dp_flow_key *k) {
  const uint8_t *e = entry(t, i);
  if (t->format == 2) {
    const struct dp_flow2 *x = (const struct dp_flow2 *)e;
    return memcmp(&x->key, k, offsetof(struct dp_flow_key, pad)) == 0;
  }
  const struct dp_flow1 *x = (const struct dp_flow1 *)e;
  return x->in_port == k->in_port && x->sport == k->sport && x->dport == k->dport && x->ethertype == k->ethertype &&
         x->family == k->family && x->proto == k->proto && memcmp(x->src, k->src, 16) == 0 && memcmp(x->dst, k->dst, 16) == 0;
}

static inline uint32_t home(const struct dp_table *t, const struct dp_flow_key *k) {
  return (uint32_t)(((uint64_t)key_hash(k) * t->entries) >> 32);
}

static inline uint32_t at(const struct dp_table *t, uint32_t h, uint32_t i) {
  uint32_t j = h + i;
  return j >= t->entries ? j - t->entries : j;
}

int dp_flow_lookup(const struct dp_table *t, const struct dp_flow_key *k) {
  if (!t->map) return -1;
  uint32_t h = home(t, k);
  for (uint32_t i = 0; i < t->window; i++) {
    uint32_t j = at(t, h, i);
    if (live(__atomic_load_n(state_of(t, j), __ATOMIC_ACQUIRE)) && key_eq(t, j, k)) return (int)j;
  }
  return -1;
}

/* The next generation of the table, with entry i recorded in the change log. */
static uint64_t next_gen(struct dp_table *t, uint32_t i) {
  uint64_t g = t->hdr->generation + 1;
  uint32_t *log = (uint32_t *)t->aux;
  __atomic_store_n(&log[g % t->aux_count], i, __ATOMIC_RELAXED);
  return g;
}

static void publish_gen(struct dp_table *t, uint64_t g) { __atomic_store_n(&t->hdr->generation, g, __ATOMIC_RELEASE); }

/* A flow key in the offload module's terms (dp_offload.h): engine ports, IPv4
 * or IPv6 only. false: not an IP flow, or its port is not one of ours. */
bool dp_flow_module_key(const struct dp *dp, const struct dp_flow_key *k, struct dp_offload_flow_key *ok) {
  if (k->family != DP_FAMILY_IP4 && k->family != DP_FAMILY_IP6) return false;
  int in = dp_tables_port(dp, k->in_port);
  if (in < 0) return false;
  memset(ok, 0, sizeof(*ok));
  ok->in_port = (uint32_t)in;
  ok->ipver = k->family == DP_FAMILY_IP4 ? 4 : 6;
  ok->proto = k->proto;
  ok->sport = k->sport;
  ok->dport = k->dport;
  memcpy(ok->src, k->src, 16);
  memcpy(ok->dst, k->dst, 16);
  return true;
}

/* The module's business: a flow that comes in on a port with hardware behind
 * it (a representor). Any other it could only refuse, so it is not asked. */
static bool offload_key(const struct dp *dp, const struct dp_flow_key *k, struct dp_offload_flow_key *ok) {
  return dp_flow_module_key(dp, k, ok) && dp->ports[ok->in_port].offload_hw != DP_OFFLOAD_NO_HW;
}

/* A learnt flow made or changed: offered to the module (never a pinned one:
 * the control plane offers those itself, and follows the outcome). */
static void offload_set(struct dp *dp, const struct dp_flow *f) {
  struct dp_offload_flow_key ok;
  if (!dp->offload || (f->state & DP_FLOW_PIN) || !offload_key(dp, &f->key, &ok)) return;
  struct dp_offload_flow_action a = {.kind = DP_OFFLOAD_DROP};
  if (f->action == DP_FLOW_FORWARD) {
    int out = dp_tables_port(dp, f->out_port);
    if (out < 0) return;
    a.kind = DP_OFFLOAD_FORWARD;
    a.out_port = (uint32_t)out;
  }
  dp_offload_flow_set(dp, &ok, &a, 0);
}

/* Create or change flow i: the module is told of a learnt flow. */
void dp_flow_set(struct dp *dp, uint32_t i, const struct dp_flow *f) {
  struct dp_table *t = &dp->tables.flow;
  uint64_t g = next_gen(t, i);
  dp_flow_write(t, i, f, g);
  publish_gen(t, g);
  offload_set(dp, f);
}

/* Free flow i; a learnt flow the module may hold goes from it too (before the slot is reused). */
void dp_flow_delete(struct dp *dp, uint32_t i) {
  struct dp_table *t = &dp->tables.flow;
  if (dp->offload) {
    struct dp_flow f;
    struct dp_offload_flow_key ok;
    dp_flow_read(t, i, &f);
    if (live(f.state) && !(f.state & DP_FLOW_PIN) && offload_key(dp, &f.key, &ok)) dp_offload_flow_del(dp, &ok, 0);
  }
  uint64_t g = next_gen(t, i);
  __atomic_store_n(state_of(t, i), DP_FLOW_FREE, __ATOMIC_RELEASE);
  uint8_t *e = entry(t, i);
  __atomic_store_n(t->format == 1 ? &((struct dp_flow1 *)e)->gen : &((struct dp_flow2 *)e)->gen, g, __ATOMIC_RELEASE);
  publish_gen(t, g);
}

/* Flow k's probe window: its entry, the first free slot, and the least
 * recently seen learnt flow (what a full window evicts; pinned flows never
 * are). -1 for each that is not there. */
struct probe {
  int found, free_slot, stalest;
};

static struct probe probe(const struct dp_table *t, const struct dp_flow_key *k) {
  struct probe p = {-1, -1, -1};
  uint32_t h = home(t, k), stalest_seen = 0;
  for (uint32_t i = 0; i < t->window; i++) {
    uint32_t j = at(t, h, i);
    uint32_t st = __atomic_load_n(state_of(t, j), __ATOMIC_ACQUIRE);
    if (!live(st)) {
      if (p.free_slot < 0) p.free_slot = (int)j;
      continue;
    }
    if (key_eq(t, j, k)) {
      p.found = (int)j;
      break;
    }
    if (st & DP_FLOW_PIN) continue;
    struct dp_flow f;
    dp_flow_read(t, j, &f);
    if (p.stalest < 0 || (int32_t)(f.last_seen - stalest_seen) < 0) p.stalest = (int)j, stalest_seen = f.last_seen;
  }
  return p;
}

/* A slot for a new flow: the free one, else the stalest learnt flow, evicted; -1 in a window of pinned flows. */
static int make_room(struct dp *dp, const struct probe *p) {
  if (p->free_slot >= 0) return p->free_slot;
  if (p->stalest < 0) return -1;
  dp_flow_delete(dp, (uint32_t)p->stalest);
  dp->tables.flows_evicted++;
  return p->stalest;
}

/*
 * A frame of flow k: count it on its flow. A pinned flow (the control
 * plane's: the flow op) decides where the frame goes: its action is
 * returned, and the caller follows it. Otherwise the frame went as the
 * bridge says (action, out), and the flow follows the bridge: made from
 * this frame if it is the first, changed if the bridge now says otherwise
 * (a MAC moved). DP_FLOW_NONE (the bridge has no port for it) only looks
 * for a pin: no flow is made for a flooded frame. An agent's mark is
 * cleared: the flow is not idle. While a converter may be copying this
 * table (track), the first hit of a flow since then gives it a new
 * generation, so its counters are caught up too. Returns the pinned action
 * (*pin_out: its table port), or -1.
 */
int dp_flow_hit(struct dp *dp, const struct dp_flow_key *k, uint32_t len, uint8_t tcp_flags, uint8_t action, uint16_t out, uint16_t *pin_out) {
  struct dp_table *t = &dp->tables.flow;
  if (!t->map || !t->writable) return -1;
  uint32_t now = dp->now_s;
  struct probe p = probe(t, k);
  if (p.found >= 0) {
    uint32_t j = (uint32_t)p.found;
    struct dp_flow f;
    dp_flow_read(t, j, &f);
    bool pinned = (f.state & DP_FLOW_PIN) != 0;
    if (!pinned && action == DP_FLOW_NONE) return -1;
    if (!pinned && (f.action != action || (action == DP_FLOW_FORWARD && f.out_port != out))) {
      f.action = action;
      f.out_port = out;
      f.packets++;
      f.bytes += len;
      f.last_seen = now;
      f.tcp_flags |= tcp_flags;
      f.state = DP_FLOW_LIVE;
      dp_flow_set(dp, j, &f);
      dp->tables.flows_changed++;
      return -1;
    }
    uint8_t *e = entry(t, j);
    uint64_t *gen;
    if (t->format == 1) {
      struct dp_flow1 *x = (struct dp_flow1 *)e;
      x->packets++;
      x->bytes += len;
      if (x->last_seen != now) x->last_seen = now;
      gen = &x->gen;
    } else {
      struct dp_flow2 *x = (struct dp_flow2 *)e;
      x->packets++;
      x->bytes += len;
      if (x->last_seen != now) x->last_seen = now;
      if ((x->tcp_flags | tcp_flags) != x->tcp_flags) x->tcp_flags |= tcp_flags;
      gen = &x->gen;
    }
    uint32_t *st = state_of(t, j);
    if (f.state & DP_FLOW_MARK) __atomic_fetch_and(st, ~DP_FLOW_MARK, __ATOMIC_ACQ_REL);
    if (f.gen <= dp->tables.track) {
      uint64_t g = next_gen(t, j);
      __atomic_store_n(gen, g, __ATOMIC_RELEASE);
      publish_gen(t, g);
    }
    dp->tables.flow_hits++;
    if (!pinned) return -1;
    *pin_out = f.out_port;
    return f.action;
  }
  if (action == DP_FLOW_NONE) return -1;
  int j = make_room(dp, &p);
  if (j < 0) return -1; /* a window of pinned flows: this one is not kept */
  struct dp_flow f;
  memset(&f, 0, sizeof(f));
  f.key = *k;
  f.state = DP_FLOW_LIVE;
  f.action = action;
  f.out_port = out;
  f.packets = 1;
  f.bytes = len;
  f.created = f.last_seen = now;
  f.tcp_flags = tcp_flags;
  dp_flow_set(dp, (uint32_t)j, &f);
  dp->tables.flows_created++;
  return -1;
}

/*
 * The control plane's flow k (the flow op): made or changed, pinned, with
 * counters kept if it was already a flow. A full window makes room by
 * evicting its least recently seen learnt flow; a window of pinned flows is
 * -ENOSPC. Under dp->lock, so the worker (the table's writer) is between
 * passes. The module is not told here: the control plane offers the flow
 * itself and follows the outcome.
 */
int dp_flow_pin(struct dp *dp, const struct dp_flow_key *k, uint8_t action, uint16_t out) {
  struct dp_table *t = &dp->tables.flow;
  if (!t->map) return -ENODEV;
  if (!t->writable) return -EROFS;
  uint32_t now = dp_now_s();
  struct probe p = probe(t, k);
  struct dp_flow f;
  if (p.found >= 0) {
    dp_flow_read(t, (uint32_t)p.found, &f);
    f.state = DP_FLOW_LIVE | DP_FLOW_PIN;
    f.action = action;
    f.out_port = action == DP_FLOW_FORWARD ? out : 0;
    dp_flow_set(dp, (uint32_t)p.found, &f);
    return 0;
  }
  int j = make_room(dp, &p);
  if (j < 0) return -ENOSPC;
  memset(&f, 0, sizeof(f));
  f.key = *k;
  f.state = DP_FLOW_LIVE | DP_FLOW_PIN;
  f.action = action;
  f.out_port = action == DP_FLOW_FORWARD ? out : 0;
  f.created = f.last_seen = now;
  dp_flow_set(dp, (uint32_t)j, &f);
  dp->tables.flows_created++;
  return 0;
}

/* Unpin and remove the control plane's flow k: -ENOENT if there is no pinned flow k. Under dp->lock. */
int dp_flow_unpin(struct dp *dp, const struct dp_flow_key *k) {
  struct dp_table *t = &dp->tables.flow;
  if (!t->map) return -ENODEV;
  if (!t->writable) return -EROFS;
  int j = dp_flow_lookup(t, k);
  if (j < 0 || !(__atomic_load_n(state_of(t, (uint32_t)j), __ATOMIC_ACQUIRE) & DP_FLOW_PIN)) return -ENOENT;
  dp_flow_delete(dp, (uint32_t)j);
  return 0;
}

/* A newer last-seen time for flow i (the module saw it): written like a hit's, no new generation. */
static void touch(struct dp_table *t, uint32_t i, uint32_t seen) {
  uint8_t *e = entry(t, i);
  if (t->format == 1)
    ((struct dp_flow1 *)e)->last_seen = seen;
  else
    ((struct dp_flow2 *)e)->last_seen = seen;
}

/*
 * Age out, a slice at a time (at most one slice per ms): flows idle longer
 * than the table's idle_s, and flows the agent marked that stayed idle for
 * more than DP_FLOW_GRACE_S (a hit clears the mark, so a marked flow still
 * idle is one nobody sent on since it was marked). The clock has whole
 * seconds: "more than 1" is at least one whole second, never a flow that
 * was hit just before a second began and not yet again since its mark.
 */
void dp_flow_sweep(struct dp *dp, uint64_t now_ns) {
  struct dp_table *t = &dp->tables.flow;
  if (!t->map || !t->writable || now_ns - dp->tables.sweep_ns < 1000000ull) return;
  dp->tables.sweep_ns = now_ns;
  uint32_t now = dp->now_s, n = t->entries < DP_FLOW_SWEEP ? t->entries : DP_FLOW_SWEEP;
  uint32_t i = dp->tables.sweep_next;
  for (uint32_t c = 0; c < n; c++, i++) {
    if (i >= t->entries) i = 0;
    uint32_t st = __atomic_load_n(state_of(t, i), __ATOMIC_ACQUIRE);
    if (!live(st)) continue;
    if (st & DP_FLOW_PIN) continue; /* the control plane's: it removes them */
    struct dp_flow f;
    dp_flow_read(t, i, &f);
    int32_t idle = (int32_t)(now - f.last_seen);
    if (idle > (int32_t)t->idle_s || ((st & DP_FLOW_MARK) && idle > (int32_t)DP_FLOW_GRACE_S)) {
      /* A flow the module forwards is not idle though the host never sees it: its
       * last frame there counts (the module's counters as last read, every 100 ms). */
      struct dp_offload_flow_key ok;
      if (dp->offload && offload_key(dp, &f.key, &ok)) {
        uint64_t ns = dp_offload_flow_last_ns(dp, &ok);
        uint32_t seen = ns == UINT64_MAX ? now : (uint32_t)(ns / 1000000000ull);
        if (ns != 0 && (int32_t)(seen - f.last_seen) > 0) {
          touch(t, i, seen);
          dp->tables.kept_by_offload++;
          continue;
        }
      }
      dp_flow_delete(dp, i);
      dp->tables.flows_aged++;
    }
  }
  dp->tables.sweep_next = i >= t->entries ? 0 : i;
}

uint32_t dp_flow_count(const struct dp_table *t) {
  if (!t->map) return 0;
  uint32_t n = 0;
  for (uint32_t i = 0; i < t->entries; i++)
    if (live(__atomic_load_n(state_of(t, i), __ATOMIC_ACQUIRE))) n++;
  return n;
}

/* Entry i of src, converted into dst at the same index (same entries, same hash). */
static void convert(const struct dp_table *src, uint32_t i, struct dp_table *dst, uint64_t *g) {
  struct dp_flow f;
  dp_flow_read(src, i, &f);
  uint64_t next = ++*g;
  if (live(f.state)) {
    f.state &= DP_FLOW_LIVE | DP_FLOW_MARK | DP_FLOW_PIN;
    if (f.out_port >= DP_TABLE_PORTS) f.out_port = 0, f.action = DP_FLOW_DROP;
    if (f.action > DP_FLOW_DROP) f.action = DP_FLOW_DROP;
    dp_flow_write(dst, i, &f, next);
  } else {
    __atomic_store_n(state_of(dst, i), DP_FLOW_FREE, __ATOMIC_RELEASE);
  }
  uint32_t *log = (uint32_t *)dst->aux;
  log[next % dst->aux_count] = i;
}

/* Every entry of src into dst (same number of entries). Returns the entries copied. */
uint64_t dp_flow_copy_all(const struct dp_table *src, struct dp_table *dst) {
  uint64_t g = dst->hdr->generation;
  for (uint32_t i = 0; i < src->entries; i++) convert(src, i, dst, &g);
  publish_gen(dst, g);
  return src->entries;
}

/*
 * The entries of src changed after generation `from` into dst: from src's
 * change log when it still holds every generation since, else by a scan of
 * every entry's generation. src's writer must be stopped (frozen).
 */
uint64_t dp_flow_catch_up(const struct dp_table *src, uint64_t from, struct dp_table *dst) {
  uint64_t to = __atomic_load_n(&src->hdr->generation, __ATOMIC_ACQUIRE);
  uint64_t g = dst->hdr->generation, n = 0;
  if (to <= from) return 0;
  if (to - from <= src->aux_count) {
    const uint32_t *log = (const uint32_t *)src->aux;
    for (uint64_t x = from + 1; x <= to; x++) {
      uint32_t i = __atomic_load_n(&log[x % src->aux_count], __ATOMIC_RELAXED);
      if (i < src->entries && i < dst->entries) convert(src, i, dst, &g), n++;
    }
  } else {
    uint32_t m = src->entries < dst->entries ? src->entries : dst->entries;
    for (uint32_t i = 0; i < m; i++)
      if (gen_of(src, i) > from) convert(src, i, dst, &g), n++;
  }
  publish_gen(dst, g);
  return n;
}
