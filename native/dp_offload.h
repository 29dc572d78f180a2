/*
 * The offload hook API (docs/offload.md; seed 004, the SmartNIC blueprint):
 * a table of possibly-NULL callbacks that an acceleration module registers
 * with one engine. The engine invokes the matching callback whenever it adds
 * or removes a port, learns or forgets a bridge entry, sets or deletes a
 * flow, and for stats and soft reset. A NULL callback, or one that fails,
 * means "the host datapath does it": the module must then leave that work to
 * the host (a SmartNIC passes a frame it has no entry for up the port's
 * representor), so nothing is lost, only not accelerated.
 *
 * Threads. No callback ever runs on the packet worker, nor with dp->lock
 * held, nor on the JavaScript thread (except attach and detach, which a
 * module keeps short: map a BAR, open a device). The worker and the control
 * plane post requests to a bounded lock-free queue and go on; one module
 * thread per engine ("ziu-offload") takes them in order and calls the
 * module. A slow callback therefore delays later offload requests, never a
 * frame: while a flow's request waits, the flow goes through the host. A
 * full queue drops the request (counted as queue_full): the host keeps that
 * work. Outcomes the control plane wants (flows it set, registration,
 * reconcile) come back as events on an eventfd it polls.
 *
 * Files: dp_offload.c (this API: queue, module thread, reconcile, N-API),
 * dp_offload_fake.c (the fake accelerator module, the one CI tests),
 * fakenic.c / fakenic.h (the fake NIC it drives: a separate process).
 */
#ifndef ZIU_DP_OFFLOAD_H
#define ZIU_DP_OFFLOAD_H

#include <stdbool.h>
#include <stdint.h>

struct dp;

#define DP_OFFLOAD_NO_HW (-1) /* a port no hardware backs (vhost-user, tap): host only */

/* A port as the module sees it: the engine's port id and, for a port that
 * represents hardware (a SmartNIC representor), the hardware port behind it
 * (a VF number). A module binds its hardware to ports by this. */
struct dp_offload_port {
  uint32_t port;
  int32_t hw; /* DP_OFFLOAD_NO_HW: not backed by hardware */
};

/* A bridge (MAC table) entry: frames for mac go out of port. */
struct dp_offload_bridge {
  uint8_t mac[6];
  uint16_t port;
};

/* A flow key: the port a frame comes in on and its 5-tuple. IPv4 addresses
 * sit in the first 4 bytes of src/dst (the rest zero). ipver 4 or 6; proto
 * an IP protocol number; ports 0 for a protocol without them. Host order. */
struct dp_offload_flow_key {
  uint32_t in_port;
  uint8_t ipver;
  uint8_t proto;
  uint16_t sport, dport;
  uint8_t src[16], dst[16];
};

#define DP_OFFLOAD_FORWARD 1 /* out of out_port */
#define DP_OFFLOAD_DROP 2

struct dp_offload_flow_action {
  uint8_t kind; /* DP_OFFLOAD_FORWARD or DP_OFFLOAD_DROP */
  uint32_t out_port;
};

/* Per-flow counters a module keeps for the frames it handled itself. */
struct dp_offload_flow_counters {
  uint64_t packets, bytes;
  uint64_t last_ns; /* CLOCK_MONOTONIC of the last frame; 0 never */
};

/* A flow as a module holds it (flow_dump). */
struct dp_offload_flow_entry {
  struct dp_offload_flow_key key;
  struct dp_offload_flow_action action;
  struct dp_offload_flow_counters counters;
};

/* What a module forwarded for a port without the host ever seeing it:
 * rx = frames it took from the port's hardware, tx = frames it delivered to
 * it, drops = frames a drop action ended. Added to the host's own counters
 * of that port (the blueprint: one coherent view). */
struct dp_offload_stats {
  uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes, drops;
};

/*
 * The callbacks. Every one returns 0 on success or -errno: -EOPNOTSUPP
 * "cannot do this one" (the host does it, nothing is logged), -ENOSPC "no
 * room" (a full hardware table: the host does it), anything else a failure
 * (the host does it, and it is logged and counted). ctx is what attach made.
 * Only attach and detach may be NULL-free requirements; any other may be NULL.
 */
struct dp_offload_ops {
  const char *name;
  /* Open the hardware (args: module-specific, e.g. an fd of the device). JS thread. */
  int (*attach)(void **ctx, int fd, const char *instance);
  /* Let go of it without changing what it holds (its flows keep forwarding). JS thread. */
  void (*detach)(void *ctx);
  /* Become the one engine that programs it: fresh (adopt false) or taking
   * over from a predecessor (adopt true: nothing is wiped). */
  int (*claim)(void *ctx, bool adopt, int32_t pid);
  /* Wipe everything the hardware holds (flows, bridge entries). */
  int (*soft_reset)(void *ctx);
  int (*port_add)(void *ctx, const struct dp_offload_port *p);
  int (*port_del)(void *ctx, const struct dp_offload_port *p);
  int (*bridge_add)(void *ctx, const struct dp_offload_bridge *b);
  int (*bridge_del)(void *ctx, const struct dp_offload_bridge *b);
  /* Install or replace (never duplicate) the flow. */
  int (*flow_set)(void *ctx, const struct dp_offload_flow_key *k, const struct dp_offload_flow_action *a);
  int (*flow_del)(void *ctx, const struct dp_offload_flow_key *k);
  /* Up to max flows it holds, with their counters; returns how many (or -errno). */
  int (*flow_dump)(void *ctx, struct dp_offload_flow_entry *out, uint32_t max);
  /* What it forwarded for this port itself. */
  int (*stats_get)(void *ctx, const struct dp_offload_port *p, struct dp_offload_stats *out);
};

/* The modules this build knows, by name (a real SmartNIC's would be added here). */
const struct dp_offload_ops *dp_offload_find(const char *name);
extern const struct dp_offload_ops dp_offload_fake_ops; /* dp_offload_fake.c */

/*
 * The engine's call sites. Each is an untaken branch without a module
 * (dp->offload == NULL), posts a request and returns at once; none blocks.
 * port_add/port_del/bridge_*: from dp.c and the bridge table (dp_bridge.c:
 * engine ports, not table port ids). flow_set/del: from the flow table
 * (dp_flow.c: a learnt flow made, changed, aged or evicted, on the worker)
 * and from the flow control op (its pinned flows, with a cookie).
 * cookie: handed back in the flow's event (0: no event wanted).
 */
void dp_offload_port_add(struct dp *dp, uint32_t port, int32_t hw);
void dp_offload_port_del(struct dp *dp, uint32_t port, int32_t hw);
void dp_offload_bridge_add(struct dp *dp, const uint8_t *mac, uint16_t port);
void dp_offload_bridge_del(struct dp *dp, const uint8_t *mac, uint16_t port);
bool dp_offload_flow_set(struct dp *dp, const struct dp_offload_flow_key *k, const struct dp_offload_flow_action *a, uint64_t cookie);
bool dp_offload_flow_del(struct dp *dp, const struct dp_offload_flow_key *k, uint64_t cookie);
/* The module's last frame of flow k as last read (CLOCK_MONOTONIC ns): 0 if
 * it does not hold the flow or never forwarded a frame of it, UINT64_MAX if
 * that cannot be told without waiting (the snapshot is being replaced).
 * Never blocks: for the worker's ageing. */
uint64_t dp_offload_flow_last_ns(struct dp *dp, const struct dp_offload_flow_key *k);
/* dpDestroy: stop the module thread and detach (nothing is wiped). */
void dp_offload_destroy(struct dp *dp);

#endif
