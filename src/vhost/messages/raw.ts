/**
 * What every message family's codec works on, and the checks they share.
 * The header has been checked already (flags, known id); a codec checks
 * payload size, fd count and values, in that order.
 */
import { DecodeError, type DecodeErrorKind } from '../decode-error.js';
import type { RequestName } from '../wire.js';

/** A request whose header was accepted, with its payload and fds still unchecked. */
export interface RawRequest {
  name: RequestName;
  needReply: boolean;
  body: Buffer;
  fds: readonly number[];
  /** rings the device has; a ring index must be below it */
  maxQueues: number;
}

/** Encoded payload and the fds to send with it, in wire order. */
export interface EncodedPayload {
  payload: Buffer;
  fds: number[];
}

/** Decoder and encoder of one request type's payload. */
export interface Codec<R> {
  decode(raw: RawRequest): R | DecodeError;
  encode(req: R): EncodedPayload;
}

export function refuse(raw: RawRequest, kind: DecodeErrorKind, reason: string): DecodeError {
  return new DecodeError(kind, raw.name, reason, raw.fds);
}

export function checkSize(raw: RawRequest, expected: number): DecodeError | undefined {
  if (raw.body.length === expected) return undefined;
  return refuse(raw, 'bad-size', `payload is ${raw.body.length} bytes, expected ${expected}`);
}

function fdCount(n: number): string {
  return n === 1 ? '1 fd' : `${n} fds`;
}

/** `why` explains an expectation that depends on the payload. */
export function checkFds(raw: RawRequest, expected: number, why?: string): DecodeError | undefined {
  if (raw.fds.length === expected) return undefined;
  const because = why === undefined ? '' : ` (${why})`;
  return refuse(raw, 'wrong-fd-count', `came with ${fdCount(raw.fds.length)}, expected ${expected}${because}`);
}

export function checkRingIndex(raw: RawRequest, index: number): DecodeError | undefined {
  if (index < raw.maxQueues) return undefined;
  const rings = raw.maxQueues === 1 ? '1 ring' : `${raw.maxQueues} rings`;
  return refuse(raw, 'bad-value', `ring index ${index} is out of range (the device has ${rings})`);
}

/** A request without payload or fds (GET_FEATURES, SET_OWNER, ...). */
export function emptyCodec<T extends RequestName>(type: T): Codec<{ type: T; needReply: boolean }> {
  return {
    decode: (raw) => checkSize(raw, 0) ?? checkFds(raw, 0) ?? { type, needReply: raw.needReply },
    encode: () => ({ payload: Buffer.alloc(0), fds: [] }),
  };
}
