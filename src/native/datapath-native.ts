// The datapath packet engine's part of the native boundary (native/dp*.c):
// an L2 learning bridge between vhost-user ports (one queue pair: ring 0 = RX
// to the guest, ring 1 = TX from the guest) and tap fds, run by one C worker
// thread. Like the rest of the addon: results or -errno, never a throw for a
// syscall failure; a throw (TypeError) only for wrong argument types.
//
// fds passed in (memory regions, kick/call eventfds, tap fds) stay owned by
// the caller; the engine only reads/writes them and never closes them. Close
// one only after the call that replaces or removes it has returned.
import type { Errno } from './native.js';

/** Opaque engine handle from dpCreate; dead after dpDestroy (calls then return -EBADF). */
export interface DpHandle {
  readonly __brand: 'DpHandle';
}

export type DpPortKind = 0 | 1; // DP_KIND_VHOST | DP_KIND_TAP
/** Ring index, virtio-net numbering: 2k = RX of queue pair k (bridge -> guest), 2k+1 = TX (guest -> bridge),
 * 0 .. 2 * DP_MAX_QP - 1. Parameters take a plain number (anything else is -EINVAL). */
export type DpQueue = number;

export interface DpCreateOptions {
  /** MAC table slots (rounded up to a power of two inside the mem file) */
  macEntries: number;
  /** port ids are 0 .. maxPorts-1 (at most DP_MAX_PORTS) */
  maxPorts: number;
}

/** One SET_MEM_TABLE region, with its fd. */
export interface DpMemRegion {
  gpa: bigint;
  size: bigint;
  uaddr: bigint;
  /** mmap_offset: where the region starts in the fd */
  offset: bigint;
  fd: number;
}

/** Per-port caps on a memory table, checked before anything is mapped. */
export interface DpMemLimits {
  /** sum of the regions' sizes */
  maxBytes: bigint;
  /** 0 .. DP_MAX_REGIONS */
  maxRegions: number;
}

/** A fault on a port's guest memory that the engine absorbed (SIGBUS on a region whose file shrank under it). */
export interface DpMemFault {
  port: number;
  /** index in the port's memory table */
  region: number;
  /** the SIGBUS si_code: 2 (BUS_ADRERR) past the end of the file; 4, 5 a memory failure */
  code: number;
  /** bytes into the region */
  offset: bigint;
}

/** SET_VRING_NUM + SET_VRING_ADDR (frontend user addresses) + SET_VRING_BASE. */
export interface DpVringConfig {
  num: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
  lastAvail: number;
}

/** Per-port counters; rx = from the port into the bridge, tx = from the bridge out to the port. */
export interface DpPortStats {
  port: number;
  kind: DpPortKind;
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  /** frames for this port lost for want of a buffer: no RX chain (or ring not running), tap queue full */
  dropsNoBuffer: number;
  /** bad chains/descriptors/frames: from this port's TX ring or taken from its RX ring, or bad tap reads */
  dropsInvalid: number;
  /** frames from this port sent to every other port (broadcast, multicast, unknown unicast) */
  floods: number;
}

export interface DpRingStatus {
  q: DpQueue;
  num: number;
  started: boolean;
  enabled: boolean;
  lastAvail: number;
  /** a chain broke the rules (DP_FAULT_CHAIN): the ring is not served until it is set up again */
  broken: boolean;
  /** the first fault since the ring was set up (DP_FAULT_*), 0 = none */
  fault: number;
  /** frames through this ring: taken from it (TX) or delivered into it (RX) */
  packets: number;
  /** read from shared memory; null until the ring has addresses */
  usedIdx: number | null;
  availIdx: number | null;
}

/** A table file's header as the engine checked it (tableCheck, tableDump). */
export interface TableHeader {
  /** 1 bridge, 2 flow */
  kind: 1 | 2;
  format: number;
  entries: number;
  entryBytes: number;
  /** MAC age (bridge) or flow idle timeout (flow), in seconds */
  idleS: number;
  /** the file's size */
  bytes: number;
  generation: bigint;
  /** the process that last took the table to write it (informational) */
  writerPid: number;
  /** live flows (0 for a bridge table) */
  live: number;
}

/** A table file that is not one: what is wrong with it, in words. */
export interface TableProblem {
  problem: string;
  errno: number;
  /** dpTablesAttach: the flow table was the bad one (else the bridge table) */
  flow?: boolean;
}

export interface BridgeDumpEntry {
  slot: number;
  mac: string;
  /** table port id (the bridge file's port directory) */
  port: number;
  /** CLOCK_MONOTONIC seconds */
  lastSeenS: number;
}

export interface FlowDumpEntry {
  slot: number;
  /** 0 L2 (MACs in src/dst), 4 IPv4, 6 IPv6 */
  family: number;
  proto: number;
  ethertype: number;
  src: Uint8Array;
  dst: Uint8Array;
  sport: number;
  dport: number;
  inPort: number;
  /** 0 forward, 1 drop */
  action: number;
  outPort: number;
  packets: number;
  bytes: number;
  createdS: number;
  lastSeenS: number;
  tcpFlags: number;
  /** the agent asked for it to be aged out (it goes if it stays idle) */
  marked: boolean;
  /** the flow op's: its action is enforced, and only the op removes it */
  pinned: boolean;
  gen: bigint;
}

export interface TableDump extends TableHeader {
  /** CLOCK_MONOTONIC seconds now (ages are nowS - lastSeenS) */
  nowS: number;
  /** bridge: the port directory (index = table port id, null = free); flow: [] */
  ports: Array<string | null>;
  list: Array<BridgeDumpEntry | FlowDumpEntry>;
}

export interface DpTableInfo {
  format: number;
  entries: number;
  bytes: number;
  live: number;
  writable: boolean;
}

export interface DpFlowTableInfo extends DpTableInfo {
  idleS: number;
  generation: bigint;
  created: number;
  changed: number;
  aged: number;
  evicted: number;
  hits: number;
  /** frames a pinned flow (the flow op's) ended: a drop flow, or a forward to a port this instance does not have */
  pinDrops: number;
  /** times ageing found an idle flow that the offload module still forwards (its last-seen time moved on) */
  keptByOffload: number;
  /** entries converted from the predecessor's table at the last catch-up */
  caughtUp: number;
  /** the format of the table converted from (0: none) */
  convertedFrom: number;
}

export interface DpTablesInfo {
  bridge: DpTableInfo | null;
  flow: DpFlowTableInfo | null;
}

export interface DpWorkerStats {
  /** CPU time the worker thread has used (its thread CPU clock) */
  workerCpuMs: number;
  /** polling passes over all ports */
  passes: number;
  /** passes stopped after DP_PASS_BUDGET_NS (a flood too big for one pass), the rest taken up by the next */
  passesCut: number;
  /** times it went to sleep in epoll, and woke up */
  sleeps: number;
  wakeups: number;
  /** MAC table entries in use */
  macEntries: number;
  /** the worker's thread id, for placing it (schedSet) */
  tid: number;
}

/**
 * What made the worker give up on a ring or a tap, recorded once:
 * 1 a write to the call fd blocked (the guest cleared O_NONBLOCK and saturated its counter),
 * 2 a write to the call fd failed, 3 reading the kick fd failed,
 * 4 a descriptor chain (or merged RX frame) longer than DP_MAX_CHAIN: the ring is broken,
 * 5 the tap's device is gone (EBADFD, EPOLLERR): the port is down.
 */
export type DpFaultCode = 1 | 2 | 3 | 4 | 5;

export interface DpFault {
  port: number;
  /** the ring, or -1 for a tap */
  q: number;
  code: DpFaultCode;
  /** what the syscall said, 0 if nothing */
  errno: number;
}

export interface DpTimes {
  frozen: boolean;
  frozenNs: bigint;
  thawedNs: bigint;
  /** start of the first pass after the last thaw */
  firstPassNs: bigint;
  /** the worker took over by itself (dpArmTakeover) */
  takenOver: boolean;
}

export interface DatapathAddon {
  readonly DP_KIND_VHOST: 0;
  readonly DP_KIND_TAP: 1;
  /** largest Ethernet frame (without virtio_net_hdr); longer ones count as dropsInvalid */
  readonly DP_MAX_FRAME: number;
  readonly DP_MAX_REGIONS: number;
  /** queue pairs per vhost-user port: rings 0 .. 2 * DP_MAX_QP - 1 */
  readonly DP_MAX_QP: number;
  readonly DP_MAX_PORTS: number;
  readonly DP_MAX_MAC_ENTRIES: number;
  /** most descriptors in one chain (indirect entries included) or one merged RX frame */
  readonly DP_MAX_CHAIN: number;

  /** Bytes of mem file dpCreate needs for this many MAC entries (-EINVAL out of range). */
  dpMemRequired(macEntries: number): number | Errno;
  /**
   * Map memFd (MAP_SHARED | MAP_POPULATE, memSize bytes, at most the file's size),
   * carve the MAC table and staging buffers out of it and start the worker.
   * -ENOSPC if memSize < dpMemRequired(macEntries).
   */
  dpCreate(memFd: number, memSize: number, opts: DpCreateOptions): DpHandle | Errno;
  /** Stop and join the worker, stop every ring, unmap everything. Later calls: -EBADF. */
  dpDestroy(h: DpHandle): 0 | Errno;

  /**
   * A new port (the lowest free id); tapFd -1 for vhost. -ENOSPC when maxPorts are in use.
   * name (at most 32 bytes) is its name in the tables' port directory: the same name has
   * the same table port id in every instance that maps the bridge file.
   * hw (optional): the hardware behind a representor port, for an offload module
   * (docs/offload.md); default none (-1).
   */
  dpAddPort(h: DpHandle, kind: DpPortKind, tapFd: number, name: string, hw?: number): number | Errno;
  /** Stop its rings, unmap its memory, forget its MAC addresses. The tap fd stays open. */
  dpRemovePort(h: DpHandle, port: number): 0 | Errno;

  /** virtio_net_hdr size: 12 when VERSION_1 or MRG_RXBUF was negotiated, else 10. mrgRxbuf needs 12. */
  dpSetFeatures(h: DpHandle, port: number, hdrLen: 10 | 12, mrgRxbuf: boolean): 0 | Errno;
  /**
   * Replace the port's memory table (up to DP_MAX_REGIONS; [] unmaps all).
   * -EINVAL for empty or overlapping regions; -ENOSPC for more than
   * limits.maxRegions; -E2BIG for more than limits.maxBytes (nothing is
   * mapped then); -EMEDIUMTYPE for a region fd that is not a shmem (memfd,
   * tmpfs) or hugetlbfs file; -EFAULT for a file that ends before its region.
   * Stops both rings; ring addresses already set are kept if they still
   * translate, else must be set again. The regions are guarded: a frontend
   * that shrinks a file later costs that port its rings (dpMemFaults), never
   * the process.
   */
  dpSetMemTable(h: DpHandle, port: number, regions: DpMemRegion[], limits: DpMemLimits): 0 | Errno;
  /**
   * A port taken over at import: fault in its rings and the buffers their
   * descriptors name (the pages the worker touches first), nothing else of
   * the guest; only pages its files hold, at most 32 MiB. Bytes faulted in.
   */
  dpPrefault(h: DpHandle, port: number): number | Errno;
  /** Faults absorbed since the last call, at most one per port (reported once). Drains dpFaultFd. */
  dpMemFaults(h: DpHandle): DpMemFault[] | Errno;
  /** An eventfd, readable after a fault (then call dpMemFaults). The engine's own: stop polling it before dpDestroy. */
  dpFaultFd(h: DpHandle): number | Errno;
  readonly F_SEAL_SHRINK: number;
  /** F_GET_SEALS: a shmem (memfd, tmpfs) or hugetlbfs file's seals; -EINVAL for any other fd. Never calls into a filesystem. */
  fileSeals(fd: number): number | Errno;
  /**
   * Close fd on a detached thread of its own (close of a FUSE or NFS file
   * waits for its server's answer to FLUSH): 0 once handed over, -EAGAIN when
   * 64 such closes are still waiting (the fd is still the caller's).
   */
  closeDetached(fd: number): 0 | Errno;
  /**
   * Ring size and addresses (frontend user addresses) and last_avail_idx.
   * -EFAULT if desc, avail or used is not wholly inside one region; -EINVAL if
   * misaligned or num is not a power of two <= 32768; -EBUSY if started.
   */
  dpSetVring(h: DpHandle, port: number, q: number, cfg: DpVringConfig): 0 | Errno;
  /** Kick eventfd for the ring; -1 = none (the ring is polled, at least every 100 ms when idle). */
  dpSetKick(h: DpHandle, port: number, q: number, fd: number): 0 | Errno;
  /** Call eventfd for the ring; -1 = never signal. Safe at any time (the worker is between passes). */
  dpSetCall(h: DpHandle, port: number, q: number, fd: number): 0 | Errno;
  /** SET_VRING_ENABLE. */
  dpSetEnabled(h: DpHandle, port: number, q: number, enabled: boolean): 0 | Errno;
  /**
   * Start processing the ring (-EINVAL without addresses). last_avail and the
   * used shadow are resynced to used->idx in guest memory, which is what was
   * really completed (a frontend may send BASE 0 after traffic).
   */
  dpStart(h: DpHandle, port: number, q: number): 0 | Errno;
  /**
   * GET_VRING_BASE: when it returns the worker no longer touches the ring and
   * every chain it consumed is completed, so the result (last_avail_idx)
   * equals used->idx. Clears the TX ring's NO_NOTIFY so the guest kicks again.
   */
  dpStop(h: DpHandle, port: number, q: number): number | Errno;

  /**
   * Handover freeze: returns when the worker is between passes (every chain
   * it consumed is completed and published) and it runs no more passes until
   * dpThaw. From then on the engine writes nothing to guest memory (dpStart
   * only marks a ring, dpStop and dpDestroy leave the flags alone). TX rings
   * get NO_NOTIFY cleared first, so the guest kicks whoever runs them next.
   * Returns the CLOCK_MONOTONIC time (ns) the engine stopped serving; freezing
   * a frozen engine returns the first time. signalFd >= 0: an eventfd written
   * once frozen (a successor's dpArmTakeover go fd), from this thread, with
   * nothing else in between.
   */
  dpFreeze(h: DpHandle, signalFd: number): bigint | Errno;
  /**
   * New side of a handover: while frozen, the worker also waits on goFd; when
   * it is signalled the worker compare-and-swaps the baton (first u32 of
   * batonFd's page) from 0 to 1 and, if it won, thaws the engine itself (as
   * dpThaw); either way it then writes doneFd. goFd -1 disarms. -EBUSY if
   * not frozen. The fds stay the caller's; keep them open while armed.
   */
  dpArmTakeover(h: DpHandle, goFd: number, batonFd: number, doneFd: number): 0 | Errno;
  /**
   * Resync every started ring from shared memory (last_avail = used->idx),
   * then run passes again; the first pass is stamped (dpTimes().firstPassNs).
   * Returns the thaw time (ns).
   */
  /**
   * Start (the baton memfd) or stop (-1) the worker's heartbeat: while not
   * frozen it stores CLOCK_MONOTONIC ns as a u64 at DP_BEAT_OFFSET of that
   * page at least every 10 ms (its idle sleep is shortened to that).
   */
  dpSetBeat(h: DpHandle, batonFd: number): 0 | Errno;
  readonly DP_BEAT_OFFSET: number;
  dpThaw(h: DpHandle): bigint | Errno;
  /** Handover timestamps (CLOCK_MONOTONIC ns, 0n = not yet). */
  dpTimes(h: DpHandle): DpTimes | Errno;

  /** Counters of every port in use, by port id. */
  dpStats(h: DpHandle): DpPortStats[] | Errno;
  /** The worker thread's own figures (CPU use, sleeps). */
  dpWorkerStats(h: DpHandle): DpWorkerStats | Errno;
  /** Ring state of a vhost port ([] for a tap port): rings 0 .. n-1, n = 2 or one past the highest ring configured. */
  dpPortRings(h: DpHandle, port: number): DpRingStatus[] | Errno;

  /**
   * An eventfd of the engine's own (keep it open only as long as the handle),
   * readable when the worker recorded a fault: then call dpTakeFaults.
   */
  dpFaultFd(h: DpHandle): number | Errno;
  /** Faults recorded since the last call, each once (and empties dpFaultFd). */
  dpTakeFaults(h: DpHandle): DpFault[] | Errno;
  /**
   * Write each of the port's call fds once, on the worker's next pass (never
   * on the calling thread: a guest's fd may block), whatever NO_INTERRUPT says.
   */
  dpSignalCalls(h: DpHandle, port: number): 0 | Errno;

  readonly DP_TABLE_BRIDGE: 1;
  readonly DP_TABLE_FLOW: 2;
  /** the default idle timeout of a flow table, and the age of a MAC, in seconds */
  readonly DP_FLOW_IDLE_S: number;
  readonly DP_MAC_AGE_S: number;
  /** a flow the agent marked goes once it has been idle this long */
  readonly DP_FLOW_GRACE_S: number;
  /**
   * Write a fresh header (kind, format, idle timeout) into a table file that
   * holds nothing yet (its first page all zero; -EEXIST otherwise) and clear
   * its entries. As many entries as its size holds (fstat), at most
   * maxEntries (0: no limit). Returns them, -ENOSPC if it is too small.
   */
  tableInit(fd: number, kind: 1 | 2, format: number, idleS: number, maxEntries: number): number | Errno;
  /** The file size a table of this many entries needs. */
  tableBytes(kind: 1 | 2, entries: number): number | Errno;
  /** Map read-only and check the header (kind 0: either kind). */
  tableCheck(fd: number, kind: 0 | 1 | 2): TableHeader | TableProblem;
  /** Map read-only: the header, the port directory and at most max live entries. */
  tableDump(fd: number, kind: 0 | 1 | 2, max: number): TableDump | TableProblem;
  /** Mark (CAS on their state words) the live flows idle at least idleS: the datapath ages them out if they stay idle. */
  tableAge(fd: number, idleS: number): { marked: number; live: number } | TableProblem | Errno;
  /** Map the engine's bridge and flow tables (replacing any); read-only while the engine is frozen whatever writable says. */
  dpTablesAttach(h: DpHandle, bridgeFd: number, flowFd: number, writable: boolean): 0 | TableProblem;
  /** New side, flow formats differ: copy srcFd's flow table into ours now, catch up at thaw. Returns the entries copied. */
  dpTablesConvertFrom(h: DpHandle, srcFd: number): number | TableProblem;
  /** Old side, at export: every flow touched from now on is logged once (a converter catches it up). */
  dpTablesTrack(h: DpHandle): 0;
  /** New side, handing back (frozen): our flow changes since the takeover go back into the converted-from table. */
  dpTablesHandback(h: DpHandle): number;
  /** Committed: let go of the converted-from table. */
  dpTablesRelease(h: DpHandle): 0;
  dpTablesInfo(h: DpHandle): DpTablesInfo;

  /** Open a non-persistent tap device (IFF_TAP | IFF_NO_PI, O_NONBLOCK): fd, gone with its last fd. */
  tapOpen(name: string): number | Errno;
}
