import { ZiuError } from '../errors.js';
import { encodeLengthPrefixed, type Frame } from '../net/framing.js';

/**
 * A datapath's control socket: a unix stream socket carrying JSON documents,
 * each framed by a u32 little-endian length, with fds attached by SCM_RIGHTS
 * where a message names them (docs/handover-protocol.md). A request is
 * {"op": ..., ...}; a reply is {"ok": true, ...} or {"ok": false, "error":
 * {"code", "message"}}.
 */
export interface ControlRequest {
  op: string;
  [key: string]: unknown;
}

export type ControlReply = { ok: true; [key: string]: unknown } | { ok: false; error: { code: string; message: string } };

export interface ControlMessage<T> {
  body: T;
  fds: number[];
}

export function encodeControl(body: unknown): Buffer {
  return encodeLengthPrefixed(Buffer.from(JSON.stringify(body, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))));
}

export function decodeControl<T>(frame: Frame, what: string): T {
  try {
    return JSON.parse(frame.body.toString('utf8')) as T;
  } catch (cause) {
    throw new ZiuError('ERR_ZIU_CONTROL_BAD_MESSAGE', `${what}: not a JSON document`, { cause });
  }
}

/**
 * fd batches (docs/handover-protocol.md, section 2): a message with more fds
 * than one sendmsg carries (SCM_MAX_FD) travels in batches of at most this
 * many, each acknowledged before the next, so that no more than one batch is
 * ever in flight (far below the ~16k in-flight fds at which the kernel's
 * unix-socket garbage collector runs in every sender's path).
 */
export const FD_BATCH = 253;
/** A client's request: hold these fds for my next request (count = fds attached). */
export const PUSH_FDS = 'pushFds';
/** A client's request: the next batch of the fds my last reply announced in `moreFds`. */
export const PULL_FDS = 'pullFds';
/** At most this many fds pushed ahead of one request, per connection. */
export const MAX_PUSHED_FDS = 65_536;
