// The whole native boundary: everything the C addon (native/*.c) exposes.
// Functions return a result or a negative errno and never throw for syscall
// failures; src/native/index.ts turns -errno into Node-style errors.
// Arguments are validated in TypeScript before they get here; C keeps only
// assert-style backstops that answer -EINVAL.

export type Errno = number; // always < 0 when it is an error

export interface RecvResult {
  /** bytes read; 0 means the peer closed (stream) or sent an empty packet (seqpacket) */
  bytes: number;
  /** received fds, now owned by the caller; always [] when ctrunc is set */
  fds: number[];
  /** control data was truncated (MSG_CTRUNC): every fd that did arrive was closed in C */
  ctrunc: boolean;
  /** datagram/packet data was truncated (MSG_TRUNC, seqpacket only) */
  trunc: boolean;
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface StatResult {
  size: number;
  /** st_blocks * 512: bytes the file really holds */
  allocated: number;
  mode: number;
  dev: number;
  ino: number;
}

/** Opaque handle of a host-noise thread (noiseStart). */
export interface NoiseHandle {
  readonly __brand: 'NoiseHandle';
}

export interface NoiseResult {
  samples: number;
  maxNs: number;
  /** the scheduled wake-up (CLOCK_MONOTONIC ns) that came latest */
  maxAtNs: number;
  meanNs: number;
  /** from a log-linear histogram (< 1% relative error) */
  p99Ns: number;
  over1ms: number;
  /** the SCHED_FIFO priority it ran at; 0: SCHED_OTHER */
  priority: number;
}

/** Opaque poll handle owned by one JS object; free it with pollClose. */
export interface PollHandle {
  readonly __brand: 'PollHandle';
}

import type { DatapathAddon } from './datapath-native.js';
import type { ProbeAddon } from './probe-native.js';
import type { OffloadAddon } from './offload-native.js';

export interface NativeAddon extends DatapathAddon, ProbeAddon, OffloadAddon {
  // constants the TypeScript side needs to build arguments
  readonly SOCK_STREAM: number;
  readonly SOCK_SEQPACKET: number;
  readonly SCM_MAX_FD: number;
  readonly POLL_READABLE: number;
  readonly POLL_WRITABLE: number;
  readonly POLL_DISCONNECT: number;
  readonly FALLOC_FL_KEEP_SIZE: number;
  readonly MFD_HUGETLB: number;
  readonly MAP_POPULATE: number;
  readonly LOCK_EX: number;
  readonly LOCK_NB: number;

  // unix sockets (always SOCK_NONBLOCK | SOCK_CLOEXEC)
  socket(type: number): number | Errno;
  socketpair(type: number): [number, number] | Errno;
  bind(fd: number, path: string): 0 | Errno;
  listen(fd: number, backlog: number): 0 | Errno;
  accept(fd: number): number | Errno;
  connect(fd: number, path: string): 0 | Errno;
  sendmsg(fd: number, data: Uint8Array, fds: number[]): number | Errno;
  recvmsg(fd: number, into: Uint8Array, maxFds: number): RecvResult | Errno;
  peercred(fd: number): PeerCred | Errno;
  sockType(fd: number): number | Errno;
  shutdown(fd: number, how: number): 0 | Errno;

  // memory and fds
  close(fd: number): 0 | Errno;
  dup(fd: number): number | Errno;
  memfdCreate(name: string, flags: number): number | Errno;
  ftruncate(fd: number, size: number): 0 | Errno;
  fallocate(fd: number, mode: number, offset: number, length: number): 0 | Errno;
  fstat(fd: number): StatResult | Errno;
  /** flock(2) on an open file: released when the last fd to its open file description closes (also on SIGKILL) */
  flock(fd: number, op: number): 0 | Errno;
  /** MAP_SHARED mapping as an external ArrayBuffer; munmap detaches it */
  mmap(fd: number, length: number, offset: number, flags: number): ArrayBuffer | Errno;
  munmap(buf: ArrayBuffer): 0 | Errno;
  /**
   * Atomic compare-and-swap of the first u32 of a shared file (MAP_SHARED, so
   * across processes): returns the previous value; swapped iff it === expected.
   */
  casWord(fd: number, expected: number, desired: number): number | Errno;

  // thread placement (native/sched.c), by thread id
  /** highest SCHED_FIFO priority (99 on Linux) */
  readonly SCHED_FIFO_MAX: number;
  /** Affinity (cpus [] leaves it) and policy (-1 leaves it, 0 SCHED_OTHER, 1 SCHED_FIFO at priority) of one thread. */
  schedSet(tid: number, cpus: number[], policy: -1 | 0 | 1, priority: number): 0 | Errno;
  /** What the kernel applied: policy 0 SCHED_OTHER, 1 SCHED_FIFO, 2 SCHED_RR, 3 SCHED_BATCH, 5 SCHED_IDLE. */
  schedGet(tid: number): { policy: number; priority: number; cpus: number[] } | Errno;
  /** the calling thread's id */
  gettid(): number;
  /** pidfd_open(2): an fd that refers to this one process for as long as it is open (O_CLOEXEC). */
  pidfdOpen(pid: number): number | Errno;
  /** pidfd_send_signal(2): signal the process the pidfd refers to, never a reused pid. */
  pidfdSendSignal(fd: number, signal: number): 0 | Errno;
  /** A thread on `cpu` at SCHED_FIFO `priority` (0: SCHED_OTHER; FIFO falls back to it without privilege) waking every periodNs. */
  noiseStart(cpu: number, priority: number, periodNs: number): NoiseHandle | Errno;
  /** Stop it and say how late its wake-ups were. */
  noiseStop(h: NoiseHandle): NoiseResult;
  eventfd(initval: number, semaphore: boolean): number | Errno;
  eventfdRead(fd: number): bigint | Errno;
  eventfdWrite(fd: number, value: bigint): 0 | Errno;

  // readiness through libuv's uv_poll: the callback runs on the event loop
  pollStart(fd: number, events: number, cb: (status: number, events: number) => void): PollHandle | Errno;
  pollUpdate(handle: PollHandle, events: number): 0 | Errno;
  pollClose(handle: PollHandle): void;
}
