import util from 'node:util';
import { check, native, type PollHandle } from '../native/index.js';
import type { DpFault, DpHandle, DpMemFault, DpPortStats, DpRingStatus, DpTablesInfo, DpTimes, DpWorkerStats } from '../native/datapath-native.js';
import { ZiuError } from '../errors.js';
import { DEFAULT_GUEST_MEMORY, refuseTable, type GuestMemoryLimits } from './guest-memory.js';

/** A region of a frontend's memory as the engine maps it. */
export interface EngineRegion {
  gpa: bigint;
  size: bigint;
  uaddr: bigint;
  offset: bigint;
  fd: number;
}

export interface EngineRing {
  num: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
  lastAvail: number;
}

export type PortKind = 'vhost' | 'tap';

export type PortStats = DpPortStats;

/** The worker gave up on a ring (q) or a tap (q null), and why, in words. */
export interface EngineFault {
  port: number;
  q: number | null;
  reason: string;
}

// Errnos a guest fd or a dead tap gives that libuv has no name for.
const LINUX_ERRNO: Record<number, string> = { 77: 'EBADFD' };

function errnoName(errno: number): string {
  if (errno <= 0) return 'no errno';
  const name = LINUX_ERRNO[errno] ?? util.getSystemErrorName(-errno);
  return name.startsWith('Unknown') ? `errno ${errno}` : name;
}

/** A fault as a person reads it in a log line or `lastError`. */
export function describeFault(f: DpFault): string {
  const ring = `ring ${f.q}`;
  switch (f.code) {
    case 1:
      return `the call fd of ${ring} blocked the packet thread (the frontend cleared O_NONBLOCK and saturated its counter): it is not written again`;
    case 2:
      return `writing the call fd of ${ring} failed (${errnoName(f.errno)})`;
    case 3:
      return `reading the kick fd of ${ring} failed (${errnoName(f.errno)}): the ring is polled`;
    case 4:
      return `${ring} broken: a descriptor chain longer than ${native.DP_MAX_CHAIN} descriptors (indirect ones included, or over one merged frame)`;
    case 5:
      return `its device is gone (${errnoName(f.errno)}): the port is down`;
  }
}

/**
 * The packet engine (native/dp*.c) seen from the control plane: one C worker
 * thread forwarding between ports, configured from here. Every call is
 * synchronous and returns when the worker has seen the change; errors come
 * back as Node-style errors naming the call and the port.
 */
export class Engine {
  #h: DpHandle | null;
  #limits: GuestMemoryLimits;
  /** the engine's fault eventfd, watched on the event loop */
  #faultPoll: PollHandle | null = null;
  #faultListeners = new Map<number, (fault: DpMemFault) => void>();
  #faultCb: ((f: EngineFault) => void) | null = null;

  constructor(memFd: number, memSize: number, opts: { macEntries?: number; maxPorts?: number; guestMemory?: GuestMemoryLimits } = {}) {
    this.#limits = opts.guestMemory ?? DEFAULT_GUEST_MEMORY;
    const h = check(
      native.dpCreate(memFd, memSize, { macEntries: opts.macEntries ?? 4096, maxPorts: opts.maxPorts ?? native.DP_MAX_PORTS }),
      'dpCreate',
      { fd: memFd },
    );
    this.#h = h;
    try {
      const fd = check(native.dpFaultFd(h), 'dpFaultFd');
      this.#faultPoll = check(native.pollStart(fd, native.POLL_READABLE, () => this.#onFaults()), 'uv_poll_start', { fd });
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  /**
   * The fault eventfd is readable: the worker gave up on a ring or a tap
   * (onFault's callback), or the SIGBUS handler absorbed a fault on some
   * port's guest memory (that port's onMemFault listener). Each once.
   */
  #onFaults(): void {
    if (this.#h === null) return;
    for (const f of this.takeFaults()) this.#faultCb?.(f);
    if (this.#h === null) return;
    for (const f of check(native.dpMemFaults(this.#h), 'dpMemFaults')) this.#faultListeners.get(f.port)?.(f);
  }

  /** Tell `listener` when the port's guest memory faulted (its rings are stopped by then); null stops telling. */
  onMemFault(port: number, listener: ((fault: DpMemFault) => void) | null): void {
    if (listener) this.#faultListeners.set(port, listener);
    else this.#faultListeners.delete(port);
  }

  get #handle(): DpHandle {
    if (this.#h === null) throw new Error('packet engine already destroyed');
    return this.#h;
  }

  /**
   * name: the port's name, its key in the tables' port directory (the same id in every instance).
   * hw: the hardware behind a representor port (an offload module binds it; docs/offload.md).
   */
  addPort(kind: PortKind, tapFd: number, name: string, hw = -1): number {
    return check(native.dpAddPort(this.#handle, kind === 'vhost' ? 0 : 1, tapFd, name, hw), 'dpAddPort', tapFd >= 0 ? { fd: tapFd } : {});
  }

  /** The native handle, for the offload hooks that live on it (src/datapath/offload.ts). */
  get nativeHandle(): DpHandle {
    return this.#handle;
  }

  /** Map the bridge and flow tables (docs/tables.md); read-only while frozen. A file that is no table: ERR_ZIU_TABLE. */
  attachTables(bridgeFd: number, flowFd: number, writable: boolean): void {
    const r = native.dpTablesAttach(this.#handle, bridgeFd, flowFd, writable);
    if (r !== 0) throw new ZiuError('ERR_ZIU_TABLE', `the ${r.flow ? 'flow' : 'bridge'} table: ${r.problem}`);
  }

  /** New side: copy another format's flow table into ours now (caught up when we thaw). Returns the entries copied. */
  convertFlows(srcFd: number, what: string): number {
    const r = native.dpTablesConvertFrom(this.#handle, srcFd);
    if (typeof r !== 'number') throw new ZiuError('ERR_ZIU_TABLE', `${what}: ${r.problem}`);
    return r;
  }

  /** Old side, at export: log every flow touched from now on (a converter catches it up). */
  trackTables(): void {
    native.dpTablesTrack(this.#handle);
  }

  /** New side, frozen for a handback: our flow changes go back into the table we converted from. */
  tablesHandback(): number {
    return native.dpTablesHandback(this.#handle);
  }

  /** Committed: the table we converted from is no longer needed. */
  releaseTables(): void {
    native.dpTablesRelease(this.#handle);
  }

  tablesInfo(): DpTablesInfo {
    return native.dpTablesInfo(this.#handle);
  }

  removePort(port: number): void {
    check(native.dpRemovePort(this.#handle, port), `dpRemovePort (port ${port})`);
  }

  setFeatures(port: number, hdrLen: 10 | 12, mrgRxbuf: boolean): void {
    check(native.dpSetFeatures(this.#handle, port, hdrLen, mrgRxbuf), `dpSetFeatures (port ${port})`);
  }

  /**
   * Map a frontend's memory table for the port, replacing the last one ([]
   * unmaps). Throws, with nothing mapped, for a table beyond the port's caps
   * or a region whose file is not memfd, tmpfs or hugetlbfs.
   */
  setMemTable(port: number, regions: EngineRegion[]): void {
    const refused = refuseTable(regions, this.#limits);
    if (refused !== null) throw new Error(refused);
    check(native.dpSetMemTable(this.#handle, port, regions, this.#limits), `dpSetMemTable (port ${port})`);
  }

  /** A port taken over at import: its working set faulted in before the worker touches it. Bytes faulted in. */
  prefault(port: number): number {
    return check(native.dpPrefault(this.#handle, port), `dpPrefault (port ${port})`);
  }

  setVring(port: number, q: number, ring: EngineRing): void {
    check(native.dpSetVring(this.#handle, port, q, ring), `dpSetVring (port ${port} ring ${q})`);
  }

  setKick(port: number, q: number, fd: number): void {
    check(native.dpSetKick(this.#handle, port, q, fd), `dpSetKick (port ${port} ring ${q})`);
  }

  setCall(port: number, q: number, fd: number): void {
    check(native.dpSetCall(this.#handle, port, q, fd), `dpSetCall (port ${port} ring ${q})`);
  }

  setEnabled(port: number, q: number, enabled: boolean): void {
    check(native.dpSetEnabled(this.#handle, port, q, enabled), `dpSetEnabled (port ${port} ring ${q})`);
  }

  start(port: number, q: number): void {
    check(native.dpStart(this.#handle, port, q), `dpStart (port ${port} ring ${q})`);
  }

  /** Stop a ring (GET_VRING_BASE): the worker is out of it and every consumed chain is completed. */
  stop(port: number, q: number): number {
    return check(native.dpStop(this.#handle, port, q), `dpStop (port ${port} ring ${q})`);
  }

  /** Handover: stop serving every ring (see dpFreeze). Returns when it stopped (CLOCK_MONOTONIC ns). */
  freeze(signalFd = -1): bigint {
    return check(native.dpFreeze(this.#handle, signalFd), 'dpFreeze');
  }

  /** New side of a handover: take over by itself when goFd is signalled (see dpArmTakeover); disarm(). */
  armTakeover(goFd: number, batonFd: number, doneFd: number): void {
    check(native.dpArmTakeover(this.#handle, goFd, batonFd, doneFd), 'dpArmTakeover', { fd: goFd });
  }

  disarmTakeover(): void {
    if (this.#h !== null) check(native.dpArmTakeover(this.#h, -1, -1, -1), 'dpArmTakeover');
  }

  /** Beat into the baton page while serving (fd), or stop (null): the old side watches it until commit. */
  setBeat(batonFd: number | null): void {
    if (batonFd !== null) check(native.dpSetBeat(this.#handle, batonFd), 'dpSetBeat', { fd: batonFd });
    else if (this.#h !== null) check(native.dpSetBeat(this.#h, -1), 'dpSetBeat');
  }

  /** Serve again from the rings' state in shared memory. Returns the thaw time (ns). */
  thaw(): bigint {
    return check(native.dpThaw(this.#handle), 'dpThaw');
  }

  times(): DpTimes {
    return check(native.dpTimes(this.#handle), 'dpTimes');
  }

  stats(): PortStats[] {
    return check(native.dpStats(this.#handle), 'dpStats');
  }

  rings(port: number): DpRingStatus[] {
    return check(native.dpPortRings(this.#handle, port), `dpPortRings (port ${port})`);
  }

  workerStats(): DpWorkerStats {
    return check(native.dpWorkerStats(this.#handle), 'dpWorkerStats');
  }

  /** Write the port's call fds once, from the worker (see dpSignalCalls): never blocks this thread. */
  signalCalls(port: number): void {
    check(native.dpSignalCalls(this.#handle, port), `dpSignalCalls (port ${port})`);
  }

  /** Faults recorded since the last call. */
  takeFaults(): EngineFault[] {
    return check(native.dpTakeFaults(this.#handle), 'dpTakeFaults').map((f) => ({ port: f.port, q: f.q < 0 ? null : f.q, reason: describeFault(f) }));
  }

  /** Call cb on the event loop for every fault the worker records from now on (one callback). */
  onFault(cb: (f: EngineFault) => void): void {
    if (this.#faultCb !== null) throw new Error('engine faults are already watched');
    this.#faultCb = cb;
  }

  destroy(): void {
    if (this.#h === null) return;
    if (this.#faultPoll !== null) native.pollClose(this.#faultPoll);
    this.#faultPoll = null;
    native.dpDestroy(this.#h);
    this.#h = null;
  }
}
