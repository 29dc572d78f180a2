/*
 * ziu probe: the frontend ("VM") side of a vhost-user device, shared between
 * the N-API glue (probe.c) and the packet loops (probe_loop.c).
 *
 * One probe has one or two ports; a port is one vhost-user device: a memfd
 * mapped here (guest memory; gpa = userspace_addr = our address, as DPDK's
 * virtio-user does), with 1..PROBE_MAX_QP queue pairs in virtio-net
 * numbering: ring 2k = RX of pair k (the device writes to us), 2k+1 = TX.
 * The fds (memfd, kick and call eventfds) belong to TypeScript; C borrows them
 * and must be destroyed before they are closed.
 */
#ifndef ZIU_PROBE_H
#define ZIU_PROBE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "virtq.h"

#define PROBE_MAX_PORTS 2
#define PROBE_MAX_QP 8
#define PROBE_MAX_RINGS (2 * PROBE_MAX_QP)
/* Every buffer holds virtio_net_hdr (12 bytes with VERSION_1) + a jumbo frame. */
#define PROBE_BUF_SIZE 10240u
#define PROBE_NET_HDR 12u
#define PROBE_ETHERTYPE 0x88B5u
#define PROBE_ETHERTYPE_RARP 0x8035u
/* A receiving port announces its MAC this often, as QEMU's announce-self does
 * after a migration (a RARP from it to broadcast): a port that only receives
 * is otherwise never learnt by a switch, which floods every frame to it. */
#define PROBE_ANNOUNCE_NS 1000000000ull
#define PROBE_MAGIC 0x5A495550u /* "ZIUP" read as a big-endian u32 */
/* eth (14) + magic u32 + stream u32 + seq u64 + timestamp u64 */
#define PROBE_FRAME_MIN_BYTES 38u
#define PROBE_MAX_FRAME (PROBE_BUF_SIZE - PROBE_NET_HDR)

/* Log-linear latency histogram: values < 256 ns exact, above that 128
 * sub-buckets per power of two (< 1% relative error), up to 2^48 ns. */
#define HIST_SUB 128u
#define HIST_BUCKETS (256u + (48u - 8u) * HIST_SUB)
/* duplicate detection window, in sequence numbers */
#define SEQ_WINDOW 65536u

struct probe_ring {
  uint32_t num;
  uint64_t desc_off, avail_off, used_off, bufs_off;
  struct vring_desc *desc;
  struct vring_avail *avail;
  struct vring_used *used;
  uint8_t *bufs;
  uint16_t avail_idx; /* shadow of avail->idx: only we write it */
  uint16_t last_used; /* next used entry to take */
  uint16_t *free_ids; /* TX: descriptors we may publish */
  uint32_t nfree;
  uint8_t *outstanding; /* descriptor is with the device */
  int kick_fd, call_fd;
};

struct probe_port {
  uint8_t *base;
  size_t size;
  struct probe_ring rings[PROBE_MAX_RINGS]; /* 2 * probe.nq of them used */
};

/* Counters: one writer thread each, read at any time with relaxed loads. */
struct probe_stats {
  uint64_t sent, tx_ring_full, tx_kicks, tx_bad_used;
  uint64_t received, duplicated, reordered, lost_gaps, too_old, unknown, foreign, rx_bad_used;
  uint64_t rx_kicks, rx_sleeps, rx_wakeups;
  uint64_t arp_replies, icmp_replies, echo_ring_full;
  /* RARP self-announcements of the receiving port's MAC: sent, and seen from others */
  uint64_t announces, announces_seen;
  uint64_t lat_count, lat_min, lat_max, lat_sum;
  uint64_t lat_max_at_ns; /* TX stamp of the frame with the largest latency */
  /* The sender's own lateness: TX stamp minus the frame's slot in the
   * schedule. A VM whose TX thread was descheduled sends late; that was never
   * the switch's doing. */
  uint64_t late_count, late_max_ns, late_max_at_ns, late_sum;
  uint64_t max_gap_ns, max_gap_at_ns, first_rx_ns, last_rx_ns, next_seq;
  uint64_t tx_cpu_ns, rx_cpu_ns; /* final values, written when a thread exits */
  /* Per RX queue pair (summed over ports): frames of our stream received
   * there, and those older than the last one received on that queue. A
   * stream spread over several queues is reordered across them by design;
   * within one queue (one flow) it must not be. */
  uint64_t rx_queue[PROBE_MAX_QP], reordered_in_queue;
  uint64_t hist[HIST_BUCKETS];
  uint64_t late_hist[HIST_BUCKETS];
};

struct probe_tx_cfg {
  int port;
  uint64_t rate; /* frames per second */
  uint32_t size; /* Ethernet frame bytes (no FCS) */
  uint32_t stream;
  uint8_t src[6], dst[6];
};

struct probe_rx_cfg {
  uint32_t stream;
  bool echo;
  uint32_t ip; /* host order */
  uint8_t mac[6];
  int announce_port; /* the port whose MAC is announced every PROBE_ANNOUNCE_NS; -1: none */
};

struct probe {
  uint32_t magic;
  bool destroyed;
  uint32_t ring_size;
  uint32_t nq; /* queue pairs per port */
  int nports;
  struct probe_port ports[PROBE_MAX_PORTS];
  int wake_fd; /* eventfd: wakes the RX thread to stop */
  uint64_t start_ns;

  pthread_t tx_thread;
  bool tx_started;
  int tx_stop;
  int tx_tid, rx_tid; /* gettid() of the loops, for placing them (sched.c) */
  uint64_t tx_stall_ns; /* test hook: the TX thread sleeps this long once, as a descheduled vCPU would */
  struct probe_tx_cfg tx;

  pthread_t rx_thread;
  bool rx_started;
  int rx_stop;
  struct probe_rx_cfg rx;
  uint64_t *seq_window; /* SEQ_WINDOW bits */
  uint64_t rx_last_seq[PROBE_MAX_QP]; /* 1 + the last sequence number received on each RX queue; 0 none */

  struct probe_stats st;
};

#define PROBE_STRUCT_MAGIC 0x7a697570u

static inline uint64_t ld64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
/* single writer: a relaxed load+store is enough and avoids a locked add */
static inline void add64(uint64_t *p, uint64_t n) { __atomic_store_n(p, *p + n, __ATOMIC_RELAXED); }
static inline void st64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

uint64_t probe_now_ns(void);
size_t probe_mem_size(uint32_t ring_size, uint32_t nq);
/* lays out and initialises one port's 2 * nq rings in its mapped memory */
void probe_port_init(struct probe_port *pt, uint32_t ring_size, uint32_t nq, uint8_t *base, size_t size, const int *kick,
                     const int *call);
void *probe_tx_main(void *arg);
void *probe_rx_main(void *arg);
uint64_t probe_hist_percentile(const uint64_t *hist, uint64_t count, uint64_t max, double q);

/* The histogram bucket of a value (ns): in the header, since it is on the
 * probe's per-frame path and the host-noise meter (sched.c) fills one too. */
static inline unsigned hist_index(uint64_t v) {
  if (v < 256) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v);
  unsigned sub = (unsigned)(v >> (e - 7)); /* 128..255 */
  unsigned idx = 256u + (e - 8u) * HIST_SUB + (sub - HIST_SUB);
  return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

#endif
