/*
 * The bridge's MAC table: open addressing inside the mem file, no allocation.
 *
 * A key lives somewhere in a fixed window of DP_MAC_WINDOW slots after its
 * hash, so lookups and learning cost a bounded number of compares and a full
 * table never fails: learning a new address takes a free slot in the window,
 * else evicts the window's stalest entry. Because lookups always scan the whole
 * window (no early stop at a free slot), forgetting an entry is just freeing
 * its slot: no tombstones.
 */
#include <string.h>
#include "dp.h"

static uint32_t round_pow2(uint32_t v) {
  uint32_t n = 1;
  while (n < v) n <<= 1;
  return n;
}

uint64_t dp_mac_bytes(uint32_t entries) { return (uint64_t)round_pow2(entries) * sizeof(struct dp_mac_entry); }

void dp_mac_init(struct dp *dp, uint32_t entries) {
  uint32_t n = round_pow2(entries);
  dp->mac_mask = n - 1;
  for (uint32_t i = 0; i < n; i++) {
    memset(dp->mac[i].mac, 0, 6);
    dp->mac[i].port = DP_MAC_EMPTY;
    dp->mac[i].last_seen = 0;
  }
}

static inline uint64_t mac_key(const uint8_t *mac) {
  uint64_t k = 0;
  memcpy(&k, mac, 6);
  return k;
}

static inline uint32_t mac_hash(uint64_t key) { return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32); }

static inline uint32_t window(const struct dp *dp) {
  return dp->mac_mask + 1 < DP_MAC_WINDOW ? dp->mac_mask + 1 : DP_MAC_WINDOW;
}

void dp_mac_learn(struct dp *dp, const uint8_t *mac, uint16_t port) {
  uint64_t key = mac_key(mac);
  uint32_t h = mac_hash(key), w = window(dp);
  struct dp_mac_entry *free_slot = NULL, *stalest = NULL;
  for (uint32_t i = 0; i < w; i++) {
    struct dp_mac_entry *e = &dp->mac[(h + i) & dp->mac_mask];
    if (e->port == DP_MAC_EMPTY) {
      if (!free_slot) free_slot = e;
      continue;
    }
    if (mac_key(e->mac) == key) {
      /* Write only on change: the common case touches no cache line for writing. */
      if (e->port != port) {
        e->port = port;
        dp_offload_bridge_add(dp, mac, port); /* moved */
      }
      if (e->last_seen != dp->now_s) e->last_seen = dp->now_s;
      return;
    }
    if (!stalest || e->last_seen < stalest->last_seen) stalest = e;
  }
  struct dp_mac_entry *e = free_slot ? free_slot : stalest;
  if (!free_slot) dp_offload_bridge_del(dp, e->mac, e->port); /* evicted */
  dp_offload_bridge_add(dp, mac, port);
  memcpy(e->mac, mac, 6);
  e->port = port;
  e->last_seen = dp->now_s;
}

int dp_mac_lookup(struct dp *dp, const uint8_t *mac) {
  uint64_t key = mac_key(mac);
  uint32_t h = mac_hash(key), w = window(dp);
  for (uint32_t i = 0; i < w; i++) {
    const struct dp_mac_entry *e = &dp->mac[(h + i) & dp->mac_mask];
    if (e->port != DP_MAC_EMPTY && mac_key(e->mac) == key) {
      if (dp->now_s - e->last_seen > DP_MAC_AGE_S) return -1;
      return e->port;
    }
  }
  return -1;
}

void dp_mac_forget_port(struct dp *dp, uint16_t port) {
  for (uint32_t i = 0; i <= dp->mac_mask; i++)
    if (dp->mac[i].port == port) {
      dp_offload_bridge_del(dp, dp->mac[i].mac, port);
      dp->mac[i].port = DP_MAC_EMPTY;
    }
}

uint32_t dp_mac_count(struct dp *dp) {
  uint32_t n = 0;
  for (uint32_t i = 0; i <= dp->mac_mask; i++)
    if (dp->mac[i].port != DP_MAC_EMPTY) n++;
  return n;
}
