// The probe's part of the native boundary (native/probe.c, native/probe_loop.c).
// Like the rest of the addon: results or -errno, never a throw for a syscall.
import type { Errno } from './native.js';

/** Opaque probe handle: mappings, loop threads and counters of one probe. Release it with probeDestroy. */
export interface ProbeHandle {
  readonly __brand: 'ProbeHandle';
}

/** Where one split ring lives, as addresses in our process (= guest-physical for the back-end). */
export interface ProbeRingLayout {
  num: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
}

/** A port (one vhost-user device) as laid out by probeAddPort: ring 2k RX of queue pair k, 2k+1 TX. */
export interface ProbePortLayout {
  port: number;
  /** the C mapping's address: guest_phys_addr and userspace_addr of the one memory region */
  base: bigint;
  size: number;
  rings: ProbeRingLayout[];
}

export interface ProbeRingState {
  /** what we published on the avail ring */
  availIdx: number;
  /** what the device published on the used ring: the SET_VRING_BASE of a reconnect */
  usedIdx: number;
  /** the next used entry our loop will take */
  lastUsed: number;
}

export interface ProbeLatencyStats {
  count: number;
  minNs: number;
  meanNs: number;
  p50Ns: number;
  p90Ns: number;
  p99Ns: number;
  p999Ns: number;
  maxNs: number;
}

/** Counters of one probe; every time is CLOCK_MONOTONIC ns (the clock of process.hrtime). */
export interface ProbeNativeStats {
  nowNs: number;
  createdNs: number;
  sent: number;
  /** schedule slots skipped because no TX descriptor was free */
  txRingFull: number;
  txKicks: number;
  /** used entries naming a descriptor we did not publish */
  txBadUsed: number;
  /** probe frames of our stream, each sequence number once */
  received: number;
  duplicated: number;
  reordered: number;
  /** sequence numbers skipped so far and not filled in later */
  lostGaps: number;
  /** frames older than the 65536-frame duplicate window (counted as reordered) */
  tooOld: number;
  /** frames without the probe marker (echo: frames that are not ARP/ICMP requests for us) */
  unknown: number;
  /** probe frames of another stream */
  foreign: number;
  rxBadUsed: number;
  rxKicks: number;
  rxSleeps: number;
  rxWakeups: number;
  arpReplies: number;
  icmpReplies: number;
  echoRingFull: number;
  /** RARPs sent announcing the receiving port's MAC */
  announces: number;
  /** RARPs received from other ports (not counted as unknown) */
  announcesSeen: number;
  /** one past the highest sequence number received */
  nextSeq: number;
  /** the largest time between two consecutive probe frames, and when it started */
  maxGapNs: number;
  maxGapAtNs: number;
  firstRxNs: number;
  lastRxNs: number;
  /** CPU time of the loop threads (per-thread clocks) */
  txCpuNs: number;
  rxCpuNs: number;
  /** frames on our TX rings the device has not consumed */
  txPending: number;
  latency: ProbeLatencyStats;
  /** TX stamp of the frame with the largest latency (CLOCK_MONOTONIC ns) */
  latencyMaxAtNs: number;
  /** the sender's own lateness: each frame's TX stamp minus its slot in the schedule */
  lateness: ProbeLatenessStats;
  /** thread ids of the TX and RX loops (0 when not running), for placing them */
  txTid: number;
  rxTid: number;
  /** probe frames of our stream received on each RX queue pair (summed over ports) */
  rxQueues: number[];
  /** frames older than the last one received on the same RX queue: reordering within a flow (across queues it is expected) */
  reorderedInQueue: number;
}

export interface ProbeLatenessStats {
  count: number;
  meanNs: number;
  p50Ns: number;
  p90Ns: number;
  p99Ns: number;
  p999Ns: number;
  maxNs: number;
  /** the slot (CLOCK_MONOTONIC ns) of the latest frame */
  maxAtNs: number;
}

export interface ProbeAddon {
  readonly PROBE_ETHERTYPE: number;
  readonly PROBE_MAGIC: number;
  /** Ethernet header + marker + stream + seq + timestamp */
  readonly PROBE_FRAME_MIN_BYTES: number;
  /** virtio_net_hdr bytes in front of every frame (VERSION_1) */
  readonly PROBE_NET_HDR: number;
  readonly PROBE_BUF_SIZE: number;
  readonly PROBE_MAX_FRAME: number;
  readonly PROBE_MAX_QP: number;

  /** bytes of guest memory one port needs for `queues` queue pairs of rings of this size */
  probeMemSize(ringSize: number, queues: number): number | Errno;
  /** every port of the probe gets `queues` queue pairs (1..PROBE_MAX_QP) */
  probeCreate(ringSize: number, queues: number): ProbeHandle | Errno;
  /** map the memfd (borrowed: keep it open until probeDestroy), lay out and stock the rings; one kick and one call eventfd per ring */
  probeAddPort(h: ProbeHandle, memFd: number, memSize: number, kicks: number[], calls: number[]): ProbePortLayout | Errno;
  /** start the paced TX thread on `port` */
  probeStartTx(h: ProbeHandle, port: number, rate: number, size: number, streamId: number, srcMac: Uint8Array, dstMac: Uint8Array): 0 | Errno;
  /**
   * start the RX thread over every port's RX ring; echoIp != 0 answers ARP/ICMP for that IPv4 (host order) instead.
   * announcePort >= 0: that port (one the TX thread does not use) sends a RARP from `mac` every PROBE_ANNOUNCE_NS, so a switch learns it.
   */
  probeStartRx(h: ProbeHandle, streamId: number, echoIp: number, mac: Uint8Array, announcePort: number): 0 | Errno;
  /** join the thread (returns within ~10 ms); no-op when it is not running */
  probeStopTx(h: ProbeHandle): 0;
  probeStopRx(h: ProbeHandle): 0;
  probeStats(h: ProbeHandle): ProbeNativeStats;
  probeRingState(h: ProbeHandle, port: number, ring: number): ProbeRingState | Errno;
  /** Test hook: the TX thread sleeps ns once at its next turn, as a descheduled vCPU would (-EBADF if not sending). */
  probeStallTx(h: ProbeHandle, ns: number): 0 | Errno;
  /** stop both threads, unmap; idempotent. The fds stay the caller's. */
  probeDestroy(h: ProbeHandle): 0;
}
