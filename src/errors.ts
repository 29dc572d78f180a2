import { getSystemErrorMap } from 'node:util';

const errnoMap = getSystemErrorMap();

/** Where a failed syscall was pointed: shown in the message and kept as fields. */
export interface SyscallTarget {
  path?: string;
  dest?: string;
  fd?: number;
}

/** An error shaped like Node's own system errors (fs, net). */
export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
  dest?: string;
  fd?: number;
}

/**
 * Build a Node-style error from a negative errno returned by the addon.
 * The message reads like Node's: "EAGAIN: resource temporarily unavailable,
 * sendmsg (fd 12)".
 */
export function sysError(errno: number, syscall: string, target: SyscallTarget = {}, cause?: unknown): SystemError {
  const e = errno < 0 ? errno : -errno;
  const [code, desc] = errnoMap.get(e) ?? [`E${-e}`, `unknown error ${-e}`];
  let where = '';
  if (target.path !== undefined) where += ` '${target.path}'`;
  if (target.dest !== undefined) where += ` -> '${target.dest}'`;
  if (target.fd !== undefined) where += ` (fd ${target.fd})`;
  const err = new Error(`${code}: ${desc}, ${syscall}${where}`, cause === undefined ? undefined : { cause }) as SystemError;
  err.code = code;
  err.errno = e;
  err.syscall = syscall;
  if (target.path !== undefined) err.path = target.path;
  if (target.dest !== undefined) err.dest = target.dest;
  if (target.fd !== undefined) err.fd = target.fd;
  return err;
}

/** True when a value is a system error with the given code ('EAGAIN', ...). */
export function hasCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/**
 * An error ziu raises itself (bad input, a refused operation, a protocol
 * violation). `code` is stable and meant for programs; the message for people.
 */
export class ZiuError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ZiuError';
    this.code = code;
  }
}

/** Bad input from the operator: the CLI exits 2 and prints the message alone. */
export class UsageError extends ZiuError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_ZIU_USAGE', message, options);
    this.name = 'UsageError';
  }
}
