import { ZiuError } from '../errors.js';
import { native } from './index.js';

/**
 * Close fds the caller owns and will not use: received with a message that
 * was refused, or left over once the ones wanted were taken. `null` entries
 * (an fd that was never there) are skipped. Errors are not reported: these
 * are fds being dropped, and EBADF here would mean a double close, which the
 * owning types below exist to rule out.
 */
export function closeFds(fds: Iterable<number | null>): void {
  for (const fd of fds) if (fd !== null) native.close(fd);
}

/**
 * fds held by name, as a handover message carries them (the names in its
 * JSON, the fds in SCM_RIGHTS; docs/handover-protocol.md, sections 2 and 6).
 *
 * A set either borrows (a sender naming the fds it still owns: nothing is
 * closed, the kernel duplicates them on send) or owns (a receiver: it takes
 * the fds it wants by name and closes the rest with closeAll). Meaning comes
 * only from the name, never from the position.
 */
export class NamedFds {
  #fds = new Map<string, number>();

  /**
   * Pair the names a message gives its fds with the fds that came. A count
   * mismatch, a duplicate or a name that is not a string closes every fd and
   * throws ERR_ZIU_FD_NAMES: nothing received is leaked.
   */
  static fromWire(names: unknown, fds: readonly number[]): NamedFds {
    const list = names ?? [];
    if (!Array.isArray(list) || list.length !== fds.length || !list.every((n) => typeof n === 'string') || new Set(list).size !== list.length) {
      closeFds(fds);
      throw new ZiuError(
        'ERR_ZIU_FD_NAMES',
        `the message names ${Array.isArray(list) ? list.length : 0} fds but carries ${fds.length} (names must be unique strings)`,
      );
    }
    const set = new NamedFds();
    list.forEach((n: string, i) => set.#fds.set(n, fds[i]!));
    return set;
  }

  get size(): number {
    return this.#fds.size;
  }

  has(name: string): boolean {
    return this.#fds.has(name);
  }

  /** Add one; a name already present is a bug in the caller. */
  set(name: string, fd: number): this {
    if (this.#fds.has(name)) throw new Error(`fd '${name}' named twice`);
    this.#fds.set(name, fd);
    return this;
  }

  /** Every fd of another set, moved into this one. */
  merge(other: NamedFds): this {
    for (const [n, fd] of other.#fds) this.set(n, fd);
    other.#fds.clear();
    return this;
  }

  /** Hand one out: it is the caller's from here on. null if the message did not carry it. */
  take(name: string): number | null {
    const fd = this.#fds.get(name);
    if (fd === undefined) return null;
    this.#fds.delete(name);
    return fd;
  }

  /** take(), for an fd the message must carry: its absence is ERR_ZIU_IMPORT naming `what` and the fd. */
  need(name: string, what: string): number {
    const fd = this.take(name);
    if (fd === null) throw new ZiuError('ERR_ZIU_IMPORT', `${what}: fd '${name}' is missing from the handover`);
    return fd;
  }

  /** The subset whose names pass `pick`, moved into a new set. */
  split(pick: (name: string) => boolean): NamedFds {
    const out = new NamedFds();
    for (const [n, fd] of this.#fds) {
      if (!pick(n)) continue;
      out.#fds.set(n, fd);
      this.#fds.delete(n);
    }
    return out;
  }

  /** What goes on the wire: the names for the JSON, the fds for SCM_RIGHTS, in the same order. */
  toWire(): { names: string[]; fds: number[] } {
    return { names: [...this.#fds.keys()], fds: [...this.#fds.values()] };
  }

  /** Close every fd still held (an owning set: whatever was not taken). */
  closeAll(): void {
    closeFds(this.#fds.values());
    this.#fds.clear();
  }
}
