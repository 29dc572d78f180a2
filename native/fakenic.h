/*
 * The fake NIC's shared state (docs/offload.md, "The fake NIC"): what a
 * SmartNIC would hold in its own memory, here in a memfd that the NIC process
 * creates and every datapath instance attached to it maps. The NIC process
 * forwards with it (fakenic.c); the fake module in each datapath programs it
 * (dp_offload_fake.c). It outlives any datapath process, as hardware does.
 *
 * One process-shared robust mutex guards the tables: a datapath that dies
 * holding it leaves it EOWNERDEAD, not locked for ever. Critical sections are
 * a table scan at most; the injected slowness is slept outside the lock.
 */
#ifndef ZIU_FAKENIC_H
#define ZIU_FAKENIC_H

#include <pthread.h>
#include <stdint.h>

#define FN_MAGIC 0x63696e656b61667aull /* "zfakenic" */
#define FN_VERSION 1
#define FN_MAX_VF 64
#define FN_MAX_FLOWS 4096 /* the table is scanned per frame: a small NIC */
#define FN_MAX_BRIDGE 1024
#define FN_NO_VF 0xffffffffu

/* Ops the error injection applies to (bits of inj_ops; 0 = all of them). */
#define FN_OP_PORT 1u
#define FN_OP_BRIDGE 2u
#define FN_OP_FLOW_SET 4u
#define FN_OP_FLOW_DEL 8u

struct fn_key {
  uint32_t vf; /* the VF the frame comes in on */
  uint8_t ipver, proto;
  uint16_t sport, dport;
  uint8_t src[16], dst[16];
  uint8_t pad[2];
};

struct fn_flow {
  uint32_t used;
  uint8_t action; /* DP_OFFLOAD_FORWARD / DP_OFFLOAD_DROP */
  uint8_t pad[3];
  uint32_t out_vf;
  struct fn_key key;
  uint64_t packets, bytes, last_ns;
  uint64_t set_epoch; /* the owner epoch that last set it */
};

struct fn_bridge {
  uint8_t mac[6];
  uint16_t used;
  uint32_t vf;
};

struct fn_vf_stats {
  uint64_t rx_packets, rx_bytes; /* from the VM, forwarded by a flow */
  uint64_t tx_packets, tx_bytes; /* to the VM, by a flow */
  uint64_t drops;                /* ended by a drop flow */
  uint64_t missed;               /* no flow: sent up the representor to the host */
  uint64_t from_host;            /* written to the representor by the host: delivered to the VM */
  uint64_t lost;                 /* could not be queued (a full socket): should stay 0 */
};

struct fn_shm {
  uint64_t magic;
  uint32_t version;
  uint32_t nvf;
  uint32_t max_flows;   /* entries allocated after this header */
  uint32_t capacity;    /* entries usable (<= max_flows): the "hardware table size" */
  uint64_t size;        /* bytes of the whole mapping */
  pthread_mutex_t lock; /* PTHREAD_PROCESS_SHARED | PTHREAD_MUTEX_ROBUST */
  /* Ownership: the engine that programs it. Every module call checks its
   * own epoch against this one: a predecessor that was taken over gets
   * -ESTALE and can no longer change anything. */
  uint64_t owner_epoch;
  int32_t owner_pid;
  uint32_t pad0;
  uint64_t claims, adopts, soft_resets;
  uint64_t flow_sets, flow_dels, bridge_adds, bridge_dels, port_adds, port_dels;
  uint32_t nflows, nbridge;
  /* Error injection, set by tests through the NIC process (fnInject). */
  uint32_t inj_fail_next; /* fail the next N calls */
  uint32_t inj_fail_ppm;  /* fail this many per million calls */
  uint32_t inj_slow_us;   /* sleep this long in every call */
  uint32_t inj_ops;       /* FN_OP_* bits the injection applies to; 0 = all */
  uint64_t inj_rng;
  uint64_t inj_failed;    /* calls failed on purpose so far */
  struct fn_vf_stats vf[FN_MAX_VF];
  struct fn_bridge bridge[FN_MAX_BRIDGE];
  struct fn_flow flows[]; /* max_flows */
};

static inline uint64_t fn_bytes(uint32_t max_flows) {
  return (sizeof(struct fn_shm) + (uint64_t)max_flows * sizeof(struct fn_flow) + 4095) & ~4095ull;
}

#endif
