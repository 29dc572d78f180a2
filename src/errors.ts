import { getSystemErrorMap } from 'node:util';
import { ERRORS, EXIT, isErrorCode, type ErrorCode } from './error-codes.js';

export { EXIT, type ErrorCode } from './error-codes.js';

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

declare const foreign: unique symbol;

/** A code from outside ziu's own (a system error's 'EBADF', another library's), passed on as is. */
export type ForeignCode = string & { readonly [foreign]: true };

/**
 * An error ziu raises itself (bad input, a refused operation, a protocol
 * violation). `code` is stable and meant for programs; the message for people.
 * Only registered codes are accepted (error-codes.ts); a code that arrives
 * from elsewhere goes through relayedCode().
 */
export class ZiuError extends Error {
  readonly code: ErrorCode | ForeignCode;
  constructor(code: ErrorCode | ForeignCode, message: string, options?: { cause?: unknown }) {
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

/**
 * The code to give an error built from another one's (a datapath's reply, a
 * wrapped cause): a registered code stays, an ERR_ZIU_ code this ziu does not
 * know (a newer datapath's) or no code at all becomes ERR_ZIU_INTERNAL, and a
 * code from outside ziu ('EBADF') is passed on.
 */
export function relayedCode(code: unknown): ErrorCode | ForeignCode {
  if (isErrorCode(code)) return code;
  if (typeof code !== 'string' || code.startsWith('ERR_ZIU_')) return 'ERR_ZIU_INTERNAL';
  return code as ForeignCode;
}

/**
 * The exit code for an error that ends a command: its registered class for a
 * ZiuError, 1 (failed) for anything else.
 */
export function exitCodeFor(err: unknown): number {
  if (!(err instanceof ZiuError) || !isErrorCode(err.code)) return EXIT.failed;
  return EXIT[ERRORS[err.code].class];
}
