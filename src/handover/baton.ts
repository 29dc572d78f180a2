import { ZiuError } from '../errors.js';
import { check, native } from '../native/index.js';

/**
 * Who serves the rings during a handover: a 32-bit word in a shared page (a
 * 4096-byte memfd both instances hold; docs/handover-protocol.md, section 8).
 *
 *   active (3) --freeze--> frozen (0) --takeForNew--> new (1)
 *                            frozen (0) --takeForOld--> old (2)
 *   active (3) --retire--> old (2)       new (1) --forceToOld--> old (2)
 *   active (3) --takeFromDead--> new (1)   (the old instance died unfrozen)
 *
 * Every transition is one compare-and-swap, so of the new instance (its
 * worker on the go signal, or its resume) and the old one (thaw, dead-man
 * switch) exactly one wins. The values are fixed by the protocol: the engine
 * (native/dp_worker.c) swaps frozen to new itself.
 */
export type BatonState = 'frozen' | 'new' | 'old' | 'active';

const WORD: Record<BatonState, number> = { frozen: 0, new: 1, old: 2, active: 3 };
const STATE: readonly BatonState[] = ['frozen', 'new', 'old', 'active'];

export class Baton {
  #fd: number | null;

  private constructor(fd: number) {
    this.#fd = fd;
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

  /** Old side, thaw with force once the new instance was stopped: new -> old. */
  forceToOld(): BatonState {
    return this.#cas('new', 'old', 'force back to the old instance');
  }

  /** Old side, an export forgotten: active -> old, so a new instance holding this baton can never resume. */
  retire(): void {
    this.#cas('active', 'old', 'retire');
  }

  close(): void {
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
