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
