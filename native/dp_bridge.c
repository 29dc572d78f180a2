/*
 * The bridge table: MAC -> table port id, open addressing in the bridge file,
 * no allocation. A key lives somewhere in a window of DP_BRIDGE_WINDOW slots
 * after its hash, so lookups and learning cost a bounded number of compares
 * and a full table never fails: learning takes a free slot in the window, else
 * evicts the window's stalest entry. Lookups scan the whole window (no early
 * stop at a free slot), so forgetting an entry is just freeing its slot.
 *
 * Port ids are the file's (its port directory), not the engine's: they stay
 * the same for every instance that maps the file. Entry contents may be
 * anything (another writer's bug, a hostile file): a port id is checked where
 * it is used (dp_worker.c), nothing here indexes by it.
 */
#include <string.h>
#include "dp.h"

static inline uint64_t mac_key(const uint8_t *mac) {
  uint64_t k = 0;
  memcpy(&k, mac, 6);
  return k;
}

static inline uint32_t mac_hash(uint64_t key) { return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32); }

static inline struct dp_bridge_entry *slot(const struct dp_table *t, uint32_t h, uint32_t i) {
  uint32_t j = (uint32_t)(((uint64_t)h * t->entries) >> 32) + i;
  if (j >= t->entries) j -= t->entries;
  return (struct dp_bridge_entry *)(t->ent + (size_t)j * sizeof(struct dp_bridge_entry));
}

/* The offload hooks (dp_offload.h) take the engine's port, not the table's:
 * an entry whose port is not here (another instance's, or a hostile value)
 * is not the module's business. An untaken branch without a module. */
static inline void offload_bridge(struct dp *dp, bool add, const uint8_t *mac, uint16_t stored) {
  if (!dp->offload || stored == 0 || stored > DP_TABLE_PORTS) return;
  int16_t port = dp->tables.tmap[stored - 1];
  if (port < 0) return;
  if (add)
    dp_offload_bridge_add(dp, mac, (uint16_t)port);
  else
    dp_offload_bridge_del(dp, mac, (uint16_t)port);
}

void dp_bridge_learn(struct dp *dp, const uint8_t *mac, uint16_t tport) {
  struct dp_table *t = &dp->tables.bridge;
  if (!t->map || !t->writable || tport >= DP_TABLE_PORTS) return;
  uint64_t key = mac_key(mac);
  uint32_t h = mac_hash(key), now = dp->now_s;
  uint16_t stored = (uint16_t)(tport + 1);
  struct dp_bridge_entry *free_slot = NULL, *stalest = NULL;
  for (uint32_t i = 0; i < t->window; i++) {
    struct dp_bridge_entry *e = slot(t, h, i);
    if (e->port == 0) {
      if (!free_slot) free_slot = e;
      continue;
    }
    if (mac_key(e->mac) == key) {
      /* Write only on change: the common case touches no cache line for writing. */
      if (e->port != stored) {
        e->port = stored;
        offload_bridge(dp, true, mac, stored); /* moved */
      }
      if (e->last_seen != now) e->last_seen = now;
      return;
    }
    if (!stalest || e->last_seen < stalest->last_seen) stalest = e;
  }
  struct dp_bridge_entry *e = free_slot ? free_slot : stalest;
  if (!free_slot) offload_bridge(dp, false, e->mac, e->port); /* evicted */
  offload_bridge(dp, true, mac, stored);
  e->port = 0; /* a reader never sees the new MAC with the old port */
  __atomic_thread_fence(__ATOMIC_RELEASE);
  memcpy(e->mac, mac, 6);
  e->last_seen = now;
  __atomic_store_n(&e->port, stored, __ATOMIC_RELEASE);
}

int dp_bridge_lookup(struct dp *dp, const uint8_t *mac) {
  const struct dp_table *t = &dp->tables.bridge;
  if (!t->map) return -1;
  uint64_t key = mac_key(mac);
  uint32_t h = mac_hash(key);
  for (uint32_t i = 0; i < t->window; i++) {
    const struct dp_bridge_entry *e = slot(t, h, i);
    uint16_t port = e->port;
    if (port != 0 && mac_key(e->mac) == key) {
      /* last_seen ahead of now: written by a clock we do not share; take it as fresh */
      if ((int32_t)(dp->now_s - e->last_seen) > (int32_t)t->idle_s) return -1;
      return port - 1;
    }
  }
  return -1;
}

void dp_bridge_forget_port(struct dp *dp, uint16_t tport) {
  struct dp_table *t = &dp->tables.bridge;
  if (!t->map || !t->writable) return;
  struct dp_bridge_entry *e = (struct dp_bridge_entry *)t->ent;
  for (uint32_t i = 0; i < t->entries; i++)
    if (e[i].port == (uint16_t)(tport + 1)) {
      offload_bridge(dp, false, e[i].mac, e[i].port);
      e[i].port = 0;
    }
}

uint32_t dp_bridge_count(const struct dp *dp) { return dp_bridge_count_table(&dp->tables.bridge); }

uint32_t dp_bridge_count_table(const struct dp_table *t) {
  if (!t->map) return 0;
  const struct dp_bridge_entry *e = (const struct dp_bridge_entry *)t->ent;
  uint32_t n = 0;
  for (uint32_t i = 0; i < t->entries; i++)
    if (e[i].port != 0) n++;
  return n;
}

/*
 * The table port id of a port name (the directory in the bridge file): the
 * same name gets the same id in every instance that maps the file. assign:
 * take a free slot (only the writer may). DP_TPORT_NONE if there is none.
 */
uint16_t dp_bridge_port_id(struct dp_table *b, const char *name, bool assign) {
  if (!b->map || name[0] == 0) return DP_TPORT_NONE;
  uint32_t n = b->aux_count, free_id = DP_TPORT_NONE;
  for (uint32_t i = 0; i < n; i++) {
    const char *slot_name = (const char *)b->aux + (size_t)i * DP_PORT_NAME;
    if (slot_name[0] == 0) {
      if (free_id == DP_TPORT_NONE) free_id = i;
      continue;
    }
    if (strncmp(slot_name, name, DP_PORT_NAME) == 0) return (uint16_t)i;
  }
  if (!assign || !b->writable || free_id == DP_TPORT_NONE) return DP_TPORT_NONE;
  char *dst = (char *)b->aux + (size_t)free_id * DP_PORT_NAME;
  memset(dst, 0, DP_PORT_NAME);
  memcpy(dst, name, strnlen(name, DP_PORT_NAME)); /* 32 characters fill the slot: no NUL then */
  return (uint16_t)free_id;
}
