/*
 * ziu-datapath packet engine: an L2 learning bridge between vhost-user ports
 * (up to DP_MAX_QP queue pairs each) and tap fds, run by one worker pthread.
 *
 * Threads: the JS thread only changes configuration, always holding dp->lock;
 * the worker holds dp->lock while it runs a pass (every chain consumed in a
 * pass is completed and published before the lock is released) and drops it
 * between passes and while it sleeps. So holding the lock means "the worker
 * is not inside any ring", which is what GET_VRING_BASE and SET_VRING_CALL need.
 *
 * Files: dp.c (N-API glue, lifecycle, control), dp_worker.c (loop, idle,
 * bridge, tap I/O), dp_ring.c (guest memory, chain walk, TX/RX on split rings),
 * dp_bridge.c, dp_flow.c, dp_table.c (the bridge and flow tables, in table
 * files of their own: dp_table.h), dp_offload.c (the offload hook API:
 * dp_offload.h).
 */
#ifndef ZIU_DP_H
#define ZIU_DP_H

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "virtq.h"
#include "dp_table.h"
#include "dp_offload.h"
#include <node_api.h>

#define DP_KIND_VHOST 0
#define DP_KIND_TAP 1

#define DP_BATCH 32           /* chains or tap reads per port per pass */
#define DP_PASS_BUDGET_NS 1000000ull /* a pass stops after the port it is on once it has run this long (floods) */
#define DP_MAX_REGIONS 8      /* what SET_MEM_TABLE can carry */
#define DP_MAX_QP 8           /* queue pairs per vhost-user port (GET_QUEUE_NUM) */
#define DP_MAX_RINGS (2 * DP_MAX_QP) /* virtio-net numbering: ring 2k = RX of pair k, 2k+1 = TX of pair k */
#define DP_RING_TX(q) (((q) & 1) != 0)
#define DP_MAX_FRAME 9216     /* largest Ethernet frame, without virtio_net_hdr */
#define DP_MIN_FRAME 14       /* an Ethernet header */
#define DP_SLOT_SIZE 9280     /* one staging buffer: > DP_MAX_FRAME so an oversize tap read shows */
#define DP_MAX_PORTS 1024
#define DP_PREFAULT_DESC (64u << 10) /* bytes of one descriptor's buffer faulted in at import, at most (dp_mem.c, dp_prefault_port) */
#define DP_PREFAULT_PORT (32ull << 20) /* bytes of one port's guest memory faulted in at import, at most */
#define DP_MAX_MAC_ENTRIES (1u << 24)
#define DP_SPIN_NS 100000ull  /* keep polling this long after the last work before sleeping */
#define DP_SPIN_RT_NS 20000ull /* the same for a real-time worker: it must leave its CPU to others when idle */
#define DP_POLICY_CHECK_NS 10000000ull /* how often the worker looks at its own scheduling policy */
#define DP_SHARED_NS 1000000000ull /* preempted this recently: the CPU is shared, spin only DP_SPIN_SHARED_NS */
#define DP_SPIN_SHARED_NS 30000ull
#define DP_WARM_WAIT_MS 50    /* arming waits at most this long for the worker to warm the rings */
#define DP_REWARM_MS 2        /* armed: the worker reads the rings again this often until the go */
#define DP_REWARM_FOR_NS 10000000000ull /* ... for this long after arming at most (an orchestrator gone: no go comes) */
#define DP_SLEEP_MS 100       /* epoll timeout: rings without a kick fd are polled this often */
#define DP_BEAT_MS 10         /* the epoll timeout instead while the worker beats */
#define DP_BEAT_OFFSET 8      /* the worker's heartbeat in the baton page (a u64) */
#define DP_MAX_CHAIN 256      /* descriptors in one chain (indirect entries included) or one merged RX frame; more breaks the ring */
#define DP_RING_PASS_DESCS 8192 /* descriptors one ring may cost per pass; the rest waits for the next pass */
#define DP_GUARD_NS 1000000ull /* a write to a guest's eventfd that blocks is interrupted after at most this long */
#define DP_GUARD_SIG (SIGRTMIN + 6) /* the signal that interrupts it (a no-op handler without SA_RESTART) */

/* Why the worker gave up on a ring or a tap: reported once through fault_fd
 * (dpTakeFaults), worded in TypeScript. */
#define DP_FAULT_NONE 0
#define DP_FAULT_CALL_BLOCKED 1 /* a write to the call fd blocked (O_NONBLOCK cleared, counter saturated) */
#define DP_FAULT_CALL_FAILED 2  /* a write to the call fd failed (errno) */
#define DP_FAULT_KICK_FAILED 3  /* reading the kick fd failed (errno) */
#define DP_FAULT_CHAIN 4        /* a chain or merged frame longer than DP_MAX_CHAIN: the ring is broken */
#define DP_FAULT_TAP_GONE 5     /* the tap's device went away (EBADFD, EPOLLERR/EPOLLHUP): the port is down */

/* One SET_MEM_TABLE region, mapped. */
struct dp_region {
  uint64_t gpa, size, uaddr;
  uint8_t *host; /* the byte at gpa / uaddr (map + mmap_offset - the page-aligned offset mapped from) */
  void *map;
  size_t map_len;
  uint64_t page; /* the file's page size: 4096 (shmem), or a huge page's (hugetlbfs) */
  int guard; /* its slot in the SIGBUS guard table (dp_mem.c); -1: none */
};

/* Per-port caps on a frontend's memory table (checked before anything is mapped). */
struct dp_mem_limits {
  uint64_t max_bytes; /* sum of the regions' memory_size */
  uint32_t max_regions;
};

/* A fault on a port's guest memory that the SIGBUS handler absorbed (dp_mem.c). */
struct dp_mem_fault {
  uint32_t region; /* 0: none; else 1 + the region that faulted */
  int code;        /* si_code: BUS_ADRERR (2) past the end of its file, BUS_MCEERR_* (4, 5) memory failure */
  uint64_t offset; /* where in the region */
  bool reported;   /* handed to JavaScript by dpMemFaults */
};

struct dp_vring {
  uint32_t num; /* 0 until dpSetVring */
  bool addr_set, started, enabled;
  uint64_t desc_ua, avail_ua, used_ua; /* as received, to re-translate after a new mem table */
  struct vring_desc *desc;
  struct vring_avail *avail;
  struct vring_used *used;
  uint16_t last_avail; /* next avail slot to consume */
  uint16_t used_idx;   /* next used slot to fill */
  uint16_t used_pub;   /* used->idx as last published */
  int kick_fd, call_fd; /* -1: poll / don't signal; owned by TypeScript */
  bool broken;          /* a chain broke the rules: not served until set up again (dpSetVring) */
  bool call_dead;       /* the call fd failed or blocked: not written until dpSetCall */
  bool signal_once;     /* dpSignalCalls: write the call fd once on the next pass */
  uint8_t fault;        /* DP_FAULT_*: the first one since set up */
  bool fault_new;       /* not yet taken by dpTakeFaults */
  int fault_errno;
  uint32_t pass_descs;  /* descriptors walked in this pass */
  bool faulted; /* its port's guest memory faulted: the ring is not run again on this table (set by the SIGBUS handler) */
  uint64_t packets; /* frames through this ring: taken from it (TX) or delivered into it (RX) */
};

struct dp_stats {
  uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes;
  uint64_t drops_no_buffer, drops_invalid, floods;
};

struct dp_port {
  bool in_use;
  int kind;
  char name[DP_PORT_NAME + 1]; /* its name in the tables' port directory */
  uint16_t tport;              /* its table port id (DP_TPORT_NONE: none yet) */
  int tap_fd; /* owned by TypeScript */
  bool down;  /* tap: its device is gone; neither read nor written */
  uint8_t fault;
  bool fault_new;
  int fault_errno;
  uint32_t hdr_len;
  bool mrg;
  uint32_t nregions;
  struct dp_region regions[DP_MAX_REGIONS];
  struct dp_mem_fault mem_fault; /* its guest memory faulted (SIGBUS absorbed; dpMemFaults) */
  /* Ring 2k = RX of queue pair k (to the guest), 2k+1 = TX (from the guest).
   * nrings: one past the highest ring ever given an address, a kick, a call or
   * an enable since the port was added; the per-pass loops stop there, so a
   * single-queue port costs what it did before multi-queue. */
  uint32_t nrings;
  struct dp_vring rings[DP_MAX_RINGS];
  struct dp_stats st;
  int32_t offload_hw; /* the hardware behind it for an offload module (dp_offload.h); DP_OFFLOAD_NO_HW: none */
};

/* First page of the mem file: says how the rest is carved (version 2: the
 * MAC table moved to the bridge table file). */
#define DP_SHM_MAGIC 0x3170642d75697aull /* "ziu-dp1" */
struct dp_shm_hdr {
  uint64_t magic;
  uint32_t version;
  uint32_t pad;
  uint64_t staging_off;
  uint32_t slot_size;
  uint32_t slots;
};

struct dp_frame {
  uint8_t *data;
  uint32_t len;
};

struct dp {
  pthread_mutex_t lock;
  /* Arming asks the frozen worker to read every ring once (warm_req), and
   * waits on `warmed` until it has (warm_done): see dp_ring_warm. */
  uint64_t warm_req, warm_done;
  uint64_t armed_ns; /* when dpArmTakeover armed it */
  pthread_cond_t warmed;
  int ctl_waiting; /* JS threads queued for lock: the worker lets them in first */
  bool stopping;
  pthread_t worker;
  int ctl_fd; /* eventfd: configuration changed or stop */
  int ep_fd;
  uint64_t gen, ep_gen; /* configuration generation; the epoll set matches ep_gen */

  uint8_t *mem;
  size_t mem_size;
  uint8_t *staging;
  /* The bridge and flow tables (dp_table.h): none until attached; read-only while frozen. */
  struct dp_tables tables;
  struct dp_frame frames[DP_BATCH];

  struct dp_port *ports;
  uint32_t max_ports;
  uint32_t ports_hi; /* one past the highest port in use: the loops over ports stop here */

  /* Frozen (handover): the worker runs no passes and nobody writes to guest
   * memory; ring state is kept to be thawed or handed on. */
  bool frozen;
  bool want_first_pass;
  uint64_t frozen_ns, thawed_ns, first_pass_ns; /* CLOCK_MONOTONIC; 0 = not yet */
  /* Direct takeover (new side of a handover): while frozen the worker also
   * waits on go_fd; when the old side signals it, the worker wins the baton
   * (a shared u32: 0 frozen -> 1 new) or leaves everything as it is, then
   * tells JavaScript through done_fd. No process in between: the gap is one
   * eventfd wake-up. */
  int go_fd, done_fd;
  uint32_t *baton; /* MAP_SHARED page, or NULL when not armed */
  bool taken_over;
  /* Heartbeat (new side, from taking the rings until commit): while not
   * frozen the worker stores CLOCK_MONOTONIC ns here at least every
   * DP_BEAT_MS, so that the old instance can tell a successor that hung
   * with the rings (docs/handover-protocol.md, section 8). A u64 at offset
   * DP_BEAT_OFFSET of the baton page, mapped separately; NULL when off. */
  uint64_t *beat;

  uint64_t t0_ns;
  uint32_t now_s; /* CLOCK_MONOTONIC seconds, updated once per pass: shared by every process that maps the tables */
  uint64_t passes, sleeps, wakeups;
  uint64_t passes_cut; /* passes stopped by DP_PASS_BUDGET_NS */
  uint32_t pass_next; /* the port the next pass starts at: one cut short by DP_PASS_BUDGET_NS goes on from there */
  int worker_tid; /* gettid() of the worker, for placing it (sched.c); set before dpCreate returns */
  bool realtime;  /* the worker runs SCHED_FIFO/RR: it never spins on sched_yield, which would not let CFS threads run */
  uint64_t nivcsw, preempted_ns; /* the worker's involuntary context switches, and when they last rose */

  /* Faults are recorded where they happen and announced on fault_fd, an
   * eventfd of our own that JavaScript polls: the worker's (DP_FAULT_* on a
   * ring or port; dpTakeFaults) and the SIGBUS handler's (a port's guest
   * memory; dpMemFaults). Each reader drains it before it scans. */
  int fault_fd;
  bool signal_pending; /* some ring has signal_once set */
  /* The guard: a timer that sends DP_GUARD_SIG to the worker every
   * DP_GUARD_NS while armed, so a write to a guest's eventfd that blocks
   * returns EINTR (see dp_guest_signal). Armed lazily, disarmed to sleep. */
  timer_t guard;
  bool guard_ok, guard_armed;
  /* The registered offload module (dp_offload.c), or NULL: every hook is then an untaken branch. */
  struct dp_offload *offload;
};

/* The engine port behind a table port id (tables: a file another process may
 * write, so checked here), or -1 if this instance has no such port in use. */
static inline int dp_tables_port(const struct dp *dp, uint32_t tport) {
  int p = tport < DP_TABLE_PORTS ? dp->tables.tmap[tport] : -1;
  return p >= 0 && (uint32_t)p < dp->max_ports && dp->ports[p].in_use ? p : -1;
}


/* dp_ring.c */
void *dp_gpa(const struct dp_port *p, uint64_t addr, uint64_t len);
void *dp_uva(const struct dp_port *p, uint64_t addr, uint64_t len);
int dp_ring_translate(const struct dp_port *p, struct dp_vring *vr);
unsigned dp_vhost_tx_burst(struct dp *dp, struct dp_port *p, struct dp_vring *vr, unsigned *nframes);
void dp_vhost_rx(struct dp *dp, struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t *hash, bool *hashed);
uint32_t dp_flow_hash(const uint8_t *frame, uint32_t len);
void dp_ring_publish(struct dp *dp, struct dp_vring *vr);
bool dp_ring_pending(const struct dp_vring *vr);
void dp_ring_set_no_notify(struct dp_vring *vr, bool no_notify);
/* Touch the ring's pages once without writing (see dp_ring.c). */
void dp_ring_warm(const struct dp_vring *vr);

static inline bool dp_ring_running(const struct dp_vring *vr) {
  return vr->started && vr->enabled && vr->addr_set && !vr->broken && !__atomic_load_n(&vr->faulted, __ATOMIC_RELAXED);
}

/* dp_mem.c: guest memory (see the comment there and docs/datapath.md, "Guest memory") */
int dp_mem_install(void); /* the SIGBUS handler, once per process; 0 or -errno */
int dp_mem_map(struct dp *dp, uint32_t port, struct dp_region *nr, const int32_t *fds, const uint64_t *offs, uint32_t n,
               const struct dp_mem_limits *lim);
void dp_mem_unmap(struct dp_region *r, uint32_t n);
/* The port's working set faulted in (rings, and the buffers their descriptors name); bytes faulted. dp->lock held. */
uint64_t dp_prefault_port(struct dp_port *p);

/* dp.c: called with dp->lock held */
void dp_thaw_locked(struct dp *dp);
/* dp.c: for the other N-API files. NULL (an exception or a result pending) if v is no live handle. */
struct dp *dp_from_value(napi_env env, napi_value v);
void dp_lock_ctl(struct dp *dp);
void dp_changed_unlock(struct dp *dp);
/* dp_table.c */
void dp_table_register(napi_env env, napi_value exports);

/* dp_worker.c */
void *dp_worker_main(void *arg);
void dp_ring_fault(struct dp *dp, struct dp_vring *vr, uint8_t code, int err);
void dp_guest_signal(struct dp *dp, struct dp_vring *vr);
void dp_kick_worker(struct dp *dp);
void dp_drain(int fd); /* reset an eventfd of our own to zero */
uint64_t dp_now_ns(void);

#endif
