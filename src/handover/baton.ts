import { ZiuError } from '../errors.js';
import { check, native } from '../native/index.js';

/**
 * Who serves the rings during a handover: a 32-bit word in a shared page (a
 * 4096-byte memfd both instances hold; docs/handover-protocol.md, section 8).
 *
 *   active (3) --freeze--> frozen (0) --takeForNew--> new (1)
 *                            frozen (0) --takeForOld--> old (2)
 *   active (3) --retire--> old (2)       new (1) --forceToOld--> old (2)
 *   new (1) --handBack--> frozen (0)       (a rollback the new instance takes part in)
 *   active (3) --takeFromDead--> new (1)   (the old instance died unfrozen)
 *
 * Every transition is one compare-and-swap, so of the new instance (its
 * worker on the go signal, or its resume) and the old one (thaw, dead-man
 * switch) exactly one wins. The values are fixed by the protocol: the engine
 * (native/dp_worker.c) swaps frozen to new itself.
 */
export type BatonState = 'frozen' | 'new' | 'old' | 'active';

/**
 * The rest of the page (docs/handover-protocol.md, section 8), written by the
 * new instance and read by the old one. Byte offsets; u64 values are
 * CLOCK_MONOTONIC ns or /proc start times, all in host byte order.
 */
const PAGE = {
  /** u32 flags: bit 0, the new instance committed (the old one stops watching) */
  flags: 4,
  /** u64: the new worker's heartbeat (native/dp_worker.c, DP_BEAT_OFFSET) */
  workerBeat: 8,
  /** u64: the new instance's control thread heartbeat */
  controlBeat: 16,
  /** u32 pid and u64 start time of the new instance, written at import */
  pid: 24,
  startTime: 32,
  /** one bit per exported device (by its index in the export): the new instance consumed its socket */
  dirty: 64,
} as const;
const COMMITTED = 1;
/** devices a handover can mark (the bitmap fills the page) */
export const BATON_MAX_DEVICES = (4096 - PAGE.dirty) * 8;

const WORD: Record<BatonState, number> = { frozen: 0, new: 1, old: 2, active: 3 };
const STATE: readonly BatonState[] = ['frozen', 'new', 'old', 'active'];

export class Baton {
  #fd: number | null;
  #page: ArrayBuffer | null = null;
  #u32: Uint32Array | null = null;
  #u64: BigUint64Array | null = null;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** The page beyond the word, mapped once (MAP_SHARED: both instances see every store). */
  #map(): { u32: Uint32Array; u64: BigUint64Array } {
    if (this.#u32 === null || this.#u64 === null) {
      this.#page = check(native.mmap(this.fd, 4096, 0, 0), 'mmap of the baton page', { fd: this.fd });
      this.#u32 = new Uint32Array(this.#page);
      this.#u64 = new BigUint64Array(this.#page);
    }
    return { u32: this.#u32, u64: this.#u64 };
  }

  // ---- the new instance's side of the page ----

  /** New side, at import: who holds the rings once they are taken, so that the old side can stop exactly that process. */
  setSuccessor(ref: { pid: number; startTime: number }): void {
    const { u32, u64 } = this.#map();
    Atomics.store(u64, PAGE.startTime / 8, BigInt(ref.startTime));
    Atomics.store(u32, PAGE.pid / 4, ref.pid);
  }

  successor(): { pid: number; startTime: number } | null {
    const { u32, u64 } = this.#map();
    const pid = Atomics.load(u32, PAGE.pid / 4);
    return pid === 0 ? null : { pid, startTime: Number(Atomics.load(u64, PAGE.startTime / 8)) };
  }

  /** New side, every few ms while it serves before commit: its control thread is alive. */
  beat(nowNs: bigint): void {
    Atomics.store(this.#map().u64, PAGE.controlBeat / 8, nowNs);
  }

  /** The new instance's last heartbeats, worker and control thread (0n: none yet). */
  beats(): { worker: bigint; control: bigint } {
    const { u64 } = this.#map();
    return { worker: Atomics.load(u64, PAGE.workerBeat / 8), control: Atomics.load(u64, PAGE.controlBeat / 8) };
  }

  /** New side, before it reads a device's socket or accepts on its listener: the old copy of that device is stale from here on. */
  markDirty(device: number): void {
    if (!Number.isInteger(device) || device < 0 || device >= BATON_MAX_DEVICES) throw new ZiuError('ERR_ZIU_BATON', `device index ${device} outside the baton page`);
    Atomics.or(this.#map().u32, PAGE.dirty / 4 + (device >>> 5), 1 << (device & 31));
  }

  /** The device indices the new instance marked. */
  dirty(): number[] {
    const { u32 } = this.#map();
    const out: number[] = [];
    for (let w = 0; w < (4096 - PAGE.dirty) / 4; w++) {
      const bits = Atomics.load(u32, PAGE.dirty / 4 + w);
      if (bits === 0) continue;
      for (let b = 0; b < 32; b++) if (bits & (1 << b)) out.push(w * 32 + b);
    }
    return out;
  }

  /** New side, at commit, before it stops beating: the old side stops watching. */
  markCommitted(): void {
    Atomics.or(this.#map().u32, PAGE.flags / 4, COMMITTED);
  }

  committed(): boolean {
    return (Atomics.load(this.#map().u32, PAGE.flags / 4) & COMMITTED) !== 0;
  }

  /** Old side, at export: a fresh baton that says `active` (a resume now must fail). */
  static create(): Baton {
    const fd = check(native.memfdCreate('ziu-handover-baton', 0), 'memfd_create', {});
    try {
      check(native.ftruncate(fd, 4096), 'ftruncate', { fd });
      const b = new Baton(fd);
      // A fresh memfd reads 0 (frozen): nobody else holds it yet.
      if (b.#swap(WORD.frozen, WORD.active, 'create') !== WORD.frozen) throw new ZiuError('ERR_ZIU_BATON', 'a new baton did not read 0');
      return b;
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** New side, at import: the baton the old side created (the fd is ours now). */
  static adopt(fd: number): Baton {
    return new Baton(fd);
  }

  /** The memfd, to send at export or to arm the engine with; still owned by the baton. */
  get fd(): number {
    if (this.#fd === null) throw new Error('baton used after close');
    return this.#fd;
  }

  /** What the word says now (a swap that changes nothing). */
  read(): BatonState {
    return this.#cas('new', 'new', 'read');
  }

  /** Old side: active -> frozen, just before the engine stops. */
  freeze(): void {
    const prev = this.#cas('active', 'frozen', 'freeze');
    if (prev !== 'active') throw new ZiuError('ERR_ZIU_BATON', `freeze: the baton is ${prev}, not active`);
  }

  /** Old side: frozen -> active, when the engine could not be frozen after all. */
  unfreeze(): void {
    this.#cas('frozen', 'active', 'unfreeze');
  }

  /** New side (resume): frozen -> new. Returns the state before; the rings are ours iff it was frozen. */
  takeForNew(): BatonState {
    return this.#cas('frozen', 'new', 'take for the new instance');
  }

  /** Old side (thaw, dead-man switch): frozen -> old. Returns the state before; ours again iff it was frozen. */
  takeForOld(): BatonState {
    return this.#cas('frozen', 'old', 'take back for the old instance');
  }

  /**
   * New side, when the old instance died after export without freezing:
   * active -> new. Only the orchestrator, having seen it die, asks for this.
   */
  takeFromDead(): BatonState {
    return this.#cas('active', 'new', 'take from a dead predecessor');
  }

  /** New side, handback (a rollback after it resumed): new -> frozen, so that the old side takes them by its own CAS. */
  handBack(): BatonState {
    return this.#cas('new', 'frozen', 'hand back to the old instance');
  }

  /** Old side, thaw with force once the new instance was stopped: new -> old. */
  forceToOld(): BatonState {
    return this.#cas('new', 'old', 'force back to the old instance');
  }

  /** Old side, an export forgotten: active -> old, so a new instance holding this baton can never resume. */
  retire(): void {
    this.#cas('active', 'old', 'retire');
  }

  close(): void {
    if (this.#page !== null) native.munmap(this.#page);
    this.#page = this.#u32 = this.#u64 = null;
    if (this.#fd !== null) native.close(this.#fd);
    this.#fd = null;
  }

  #cas(expected: BatonState, desired: BatonState, what: string): BatonState {
    const prev = this.#swap(WORD[expected], WORD[desired], what);
    const state = STATE[prev];
    if (state === undefined) throw new ZiuError('ERR_ZIU_BATON', `baton ${what}: the word holds ${prev}, not a baton state`);
    return state;
  }

  #swap(expected: number, desired: number, what: string): number {
    return check(native.casWord(this.fd, expected, desired), `baton ${what} (compare-and-swap)`, { fd: this.fd });
  }
}
