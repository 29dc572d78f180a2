import { ZiuError, type ErrorCode } from '../errors.js';

/** A handover document arrives as untrusted JSON: every read checks its type and names the field. */
export type Doc = Record<string, unknown>;

const NAME = /^[A-Za-z0-9._-]{1,32}$/;

/**
 * Typed reads from an untrusted JSON document (a handover message or the
 * device state it carries). Every error is a ZiuError with the reader's code
 * and names the field, e.g. "freeze reply.rings.a[0].usedIdx: expected a
 * non-negative integer".
 */
export class Reader {
  readonly obj: Doc;
  readonly where: string;
  readonly code: ErrorCode;

  constructor(v: unknown, where: string, code: ErrorCode) {
    this.where = where;
    this.code = code;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw this.fail(`${where}: expected an object`);
    this.obj = v as Doc;
  }

  fail(message: string): ZiuError {
    return new ZiuError(this.code, message);
  }

  has(k: string): boolean {
    return k in this.obj && this.obj[k] !== undefined;
  }

  #get(k: string): unknown {
    if (!(k in this.obj)) throw this.fail(`${this.where}.${k}: missing`);
    return this.obj[k];
  }

  /** The raw value, for a part another codec validates (a state document in its format). */
  raw(k: string): unknown {
    return this.#get(k);
  }

  nullable(k: string): boolean {
    return this.#get(k) === null;
  }

  str(k: string): string {
    const v = this.#get(k);
    if (typeof v !== 'string') throw this.fail(`${this.where}.${k}: expected a string`);
    return v;
  }

  name(k: string): string {
    const v = this.str(k);
    this.checkName(v, `${this.where}.${k}`);
    return v;
  }

  checkName(name: string, where: string): void {
    if (!NAME.test(name)) throw this.fail(`${where}: device name '${name}' must be 1-32 of [A-Za-z0-9._-]`);
  }

  num(k: string): number {
    const v = this.#get(k);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw this.fail(`${this.where}.${k}: expected a non-negative integer`);
    return v;
  }

  bool(k: string): boolean {
    const v = this.#get(k);
    if (typeof v !== 'boolean') throw this.fail(`${this.where}.${k}: expected true or false`);
    return v;
  }

  big(k: string): bigint {
    return this.toBig(this.#get(k), `${this.where}.${k}`);
  }

  oneOf<T extends string | number>(k: string, allowed: readonly T[]): T {
    const v = this.#get(k);
    if (!allowed.includes(v as T)) throw this.fail(`${this.where}.${k}: expected one of ${allowed.join(', ')}`);
    return v as T;
  }

  child(k: string): Reader {
    return new Reader(this.#get(k), `${this.where}.${k}`, this.code);
  }

  list(k: string): Reader[] {
    const v = this.#get(k);
    if (!Array.isArray(v)) throw this.fail(`${this.where}.${k}: expected a list`);
    return v.map((x, i) => new Reader(x, `${this.where}.${k}[${i}]`, this.code));
  }

  strs(k: string): string[] {
    const v = this.#get(k);
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw this.fail(`${this.where}.${k}: expected a list of strings`);
    return v as string[];
  }

  nums(k: string): number[] {
    const v = this.#get(k);
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) {
      throw this.fail(`${this.where}.${k}: expected a list of non-negative integers`);
    }
    return v as number[];
  }

  entries(k: string): Array<[string, Reader]> {
    const c = this.child(k);
    return Object.entries(c.obj).map(([n, v]) => [n, new Reader(v, `${c.where}.${n}`, this.code)]);
  }

  bigs(k: string, n: number): bigint[] {
    const v = this.#get(k);
    if (!Array.isArray(v) || v.length !== n) throw this.fail(`${this.where}.${k}: expected a list of ${n} numbers`);
    return v.map((x, i) => this.toBig(x, `${this.where}.${k}[${i}]`));
  }

  tuples(k: string, n: number): bigint[][] {
    const v = this.#get(k);
    if (!Array.isArray(v)) throw this.fail(`${this.where}.${k}: expected a list`);
    return v.map((x, i) => {
      if (!Array.isArray(x) || x.length !== n) throw this.fail(`${this.where}.${k}[${i}]: expected a list of ${n} numbers`);
      return x.map((y, j) => this.toBig(y, `${this.where}.${k}[${i}][${j}]`));
    });
  }

  /** A u64 as the protocol spells it: "0x<hex>", or a JSON number up to 2^53-1. */
  toBig(v: unknown, where: string): bigint {
    if (typeof v === 'string' && /^0x[0-9a-f]{1,16}$/i.test(v)) return BigInt(v);
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
    throw this.fail(`${where}: expected a u64 as a "0x..." string`);
  }
}

/** A u64 or nanosecond value as the protocol spells it. */
export function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}
