/*
 * The bridge and flow tables, in table files of their own that outlive an
 * instance (docs/tables.md). Each file: a 4096-byte versioned header, an aux
 * area (bridge: the port directory; flow: the change log), then the entries.
 * Everything in a file is read as hostile: the header is validated once when
 * the file is mapped and its geometry copied into struct dp_table (never
 * read from the file again); entry contents are bounds-checked where used.
 *
 * One writer at a time: the instance that holds the rings (the baton). The
 * others use the files read-only (their PROT_READ mapping, struct
 * dp_table), and so does an instance while it is frozen. The agent (`ziu tables age`) only sets one bit in a flow's
 * state word, by compare-and-swap.
 */
#ifndef ZIU_DP_TABLE_H
#define ZIU_DP_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DP_TABLE_HDR_BYTES 4096u
#define DP_TABLE_MAGIC 0x6c6261742d75697aull /* "ziu-tabl" */
#define DP_TABLE_BRIDGE 1u
#define DP_TABLE_FLOW 2u
#define DP_BRIDGE_FORMAT 1u
#define DP_FLOW_FORMAT_MIN 1u
#define DP_FLOW_FORMAT_MAX 2u

#define DP_TABLE_PORTS 1024u  /* the bridge file's port directory: names -> table port ids */
#define DP_PORT_NAME 32u
#define DP_TPORT_NONE 0xffffu
#define DP_FLOW_LOG 8192u     /* change log slots (entry indices by generation) */
#define DP_BRIDGE_WINDOW 16u
#define DP_FLOW_WINDOW 8u
#define DP_BRIDGE_MAX_ENTRIES (1u << 24)
#define DP_FLOW_MAX_ENTRIES (1u << 22)
#define DP_MAC_AGE_S 300u     /* a MAC not refreshed for this long is unknown again */
#define DP_FLOW_IDLE_S 300u   /* default: a flow idle this long is aged out by the datapath */
#define DP_FLOW_GRACE_S 1u    /* a flow the agent marked goes once idle longer than this: more than a whole second of the clock (a hit clears the mark) */
#define DP_FLOW_SWEEP 1024u   /* entries the worker looks at per sweep, at most one sweep per ms */

/* Flow state word: only these values are meaningful; anything else is a free slot. */
#define DP_FLOW_FREE 0u
#define DP_FLOW_LIVE 1u
#define DP_FLOW_MARK 0x100u   /* set by the agent: age this flow out if it stays idle */
#define DP_FLOW_PIN 0x200u    /* set by the control plane (the flow op): its action is enforced, never aged nor evicted */

#define DP_FLOW_FORWARD 0u
#define DP_FLOW_DROP 1u
#define DP_FLOW_NONE 0xffu /* dp_flow_hit: the bridge has no port for it (look for a pin only) */

#define DP_FAMILY_L2 0u
#define DP_FAMILY_IP4 4u
#define DP_FAMILY_IP6 6u

/* The first bytes of every table file (host byte order). */
struct dp_table_hdr {
  uint64_t magic;       /* 0 */
  uint32_t kind;        /* 8: DP_TABLE_BRIDGE or DP_TABLE_FLOW */
  uint32_t format;      /* 12 */
  uint32_t hdr_bytes;   /* 16: DP_TABLE_HDR_BYTES */
  uint32_t entry_bytes; /* 20 */
  uint32_t entries;     /* 24 */
  uint32_t window;      /* 28: probe window */
  uint64_t aux_off;     /* 32 */
  uint64_t entries_off; /* 40 */
  uint32_t aux_count;   /* 48: port names or log slots */
  uint32_t idle_s;      /* 52: MAC age (bridge) or flow idle timeout */
  uint32_t check;       /* 56: FNV-1a of bytes 0..55: a torn or foreign header shows */
  uint32_t pad0;        /* 60 */
  /* Written while in use (not in check). */
  uint64_t generation;  /* 64: bumped by every entry change; the entry takes the new value */
  uint64_t track_gen;   /* 72: flows with gen <= this get a new gen on their next hit */
  uint32_t writer_pid;  /* 80: who writes it now (informational) */
};

/* Bridge entry, format 1 (16 bytes). port: table port id + 1; 0 = free. */
struct dp_bridge_entry {
  uint8_t mac[6];
  uint16_t port;
  uint32_t last_seen; /* CLOCK_MONOTONIC seconds */
  uint32_t pad;
};

/* A flow's key as the engine uses it (and format 2 stores it). */
struct dp_flow_key {
  uint8_t src[16], dst[16]; /* IPv4: first 4 bytes; L2: the MACs, first 6 bytes */
  uint16_t sport, dport;
  uint16_t in_port;         /* table port id */
  uint16_t ethertype;
  uint8_t family, proto;
  uint8_t pad[6];
};

/* Flow entry, format 1 (128 bytes). */
struct dp_flow1 {
  uint32_t state;
  uint8_t action, family, proto, pad0;
  uint16_t in_port, out_port, sport, dport;
  uint16_t ethertype, pad1;
  uint32_t last_seen;
  uint64_t gen, packets, bytes;
  uint8_t src[16], dst[16];
  uint8_t pad2[48];
};

/* Flow entry, format 2 (128 bytes): the key first (one compare), when it was created, TCP flags seen. */
struct dp_flow2 {
  struct dp_flow_key key;
  uint32_t state;
  uint8_t action, tcp_flags;
  uint16_t out_port;
  uint64_t gen;
  uint64_t packets, bytes;
  uint32_t created, last_seen;
  uint8_t pad[40];
};

/* A flow as read out of either format. */
struct dp_flow {
  struct dp_flow_key key;
  uint32_t state;
  uint8_t action, tcp_flags;
  uint16_t out_port;
  uint64_t gen, packets, bytes;
  uint32_t created, last_seen;
};

/*
 * One mapped table; the geometry is ours, checked once. Mapped twice: ro
 * (PROT_READ) and rw (PROT_READ | PROT_WRITE, populated; NULL if the fd is
 * read-only). map and the pointers below are into one of them: ro while the
 * engine may not write (frozen, before it holds the rings), rw while it
 * may. Switching is a pointer swap under dp->lock, not an mprotect: an
 * mprotect in the switchover gap cost ~80 us here (page-table work under a
 * virtualised host), and a write through ro still faults.
 */
struct dp_table {
  uint8_t *map; /* the mapping in use; NULL: none */
  uint8_t *ro, *rw;
  size_t len;
  bool writable; /* map is rw */
  uint64_t aux_off, ent_off;
  uint32_t kind, format, entries, window, entry_bytes, aux_count, idle_s;
  struct dp_table_hdr *hdr;
  uint8_t *aux, *ent;
};

/* The engine's tables (struct dp.tables). */
struct dp_tables {
  struct dp_table bridge, flow;
  /* Another instance's flow table in another format, converted into ours:
   * src_from is its generation when our copy began (its track_gen). */
  struct dp_table src;
  uint64_t src_from;
  /* Our own flow table's generation when we took the rings: a handback
   * converts what changed since into src. */
  uint64_t own_from;
  bool own_from_set;
  uint64_t track; /* hits of flows with gen <= track bump their gen once (logged) */
  int16_t tmap[DP_TABLE_PORTS]; /* table port id -> engine port, -1: not here */
  uint64_t sweep_ns;
  uint32_t sweep_next;
  uint64_t flows_created, flows_changed, flows_aged, flows_evicted, flow_hits;
  uint64_t pin_drops;       /* frames a pinned drop flow ended */
  uint64_t kept_by_offload; /* times ageing found a flow the offload module still forwards */
  uint64_t caught_up; /* entries converted at the last catch-up */
};

struct dp;

/* dp_table.c: files */
uint64_t dp_table_bytes(uint32_t kind, uint32_t entries);
uint32_t dp_table_entries_for(uint32_t kind, uint64_t bytes);
const char *dp_table_check(const uint8_t *map, uint64_t size, uint32_t kind, struct dp_table *t);
int dp_table_map(int fd, uint32_t kind, bool writable, struct dp_table *t, const char **why);
void dp_table_unmap(struct dp_table *t);
int dp_table_protect(struct dp_table *t, bool writable);
void dp_tables_bind_ports(struct dp *dp);
uint16_t dp_tables_port_id(struct dp *dp, const char *name);
void dp_tables_thaw(struct dp *dp);
void dp_tables_freeze(struct dp *dp);
void dp_tables_destroy(struct dp *dp);

/* dp_bridge.c */
void dp_bridge_learn(struct dp *dp, const uint8_t *mac, uint16_t tport);
int dp_bridge_lookup(struct dp *dp, const uint8_t *mac); /* table port id, or -1 */
void dp_bridge_forget_port(struct dp *dp, uint16_t tport);
uint32_t dp_bridge_count(const struct dp *dp);
uint32_t dp_bridge_count_table(const struct dp_table *t);
uint16_t dp_bridge_port_id(struct dp_table *b, const char *name, bool assign);

/* dp_flow.c */
bool dp_flow_key_of(const uint8_t *frame, uint32_t len, uint16_t in_tport, struct dp_flow_key *k, uint8_t *tcp_flags);
/* Count a frame on its flow; returns the pinned action (*pin_out: its table
 * port) of a pinned flow, which the frame must follow, else -1. */
int dp_flow_hit(struct dp *dp, const struct dp_flow_key *k, uint32_t len, uint8_t tcp_flags, uint8_t action, uint16_t out, uint16_t *pin_out);
/* The control plane's flows (under dp->lock, table writable): 0 or -errno. */
int dp_flow_pin(struct dp *dp, const struct dp_flow_key *k, uint8_t action, uint16_t out);
int dp_flow_unpin(struct dp *dp, const struct dp_flow_key *k);
struct dp_offload_flow_key;
bool dp_flow_module_key(const struct dp *dp, const struct dp_flow_key *k, struct dp_offload_flow_key *ok);
int dp_flow_lookup(const struct dp_table *t, const struct dp_flow_key *k); /* entry index or -1 */
void dp_flow_set(struct dp *dp, uint32_t i, const struct dp_flow *f);
void dp_flow_delete(struct dp *dp, uint32_t i);
void dp_flow_sweep(struct dp *dp, uint64_t now_ns);
uint32_t dp_flow_count(const struct dp_table *t);
void dp_flow_read(const struct dp_table *t, uint32_t i, struct dp_flow *f);
void dp_flow_write(struct dp_table *t, uint32_t i, const struct dp_flow *f, uint64_t gen);
uint64_t dp_flow_copy_all(const struct dp_table *src, struct dp_table *dst);
uint64_t dp_flow_catch_up(const struct dp_table *src, uint64_t from, struct dp_table *dst);
uint32_t dp_now_s(void);

#endif
