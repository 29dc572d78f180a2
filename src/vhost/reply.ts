/** Back-end replies: encoded by the back-end, decoded by ziu's probe (a front-end). */
import { ZiuError } from '../errors.js';
import type { Frame } from '../net/framing.js';
import { DecodeError } from './decode-error.js';
import type { Request } from './request.js';
import {
  checkInt,
  CONFIG_HEADER_SIZE,
  describeRequestId,
  encodeMessage,
  HEADER_SIZE,
  hex,
  readHeader,
  REPLY_FLAGS,
  statePayload,
  u64Payload,
  VhostUserRequest,
  type RequestName,
} from './wire.js';

/** What a back-end answers to the requests that have a reply of their own. */
export interface OwnReplyPayloads {
  GET_FEATURES: { features: bigint };
  GET_PROTOCOL_FEATURES: { features: bigint };
  GET_QUEUE_NUM: { queues: number };
  GET_MAX_MEM_SLOTS: { slots: number };
  GET_STATUS: { status: number };
  /** the ring's last avail index; the index is the request's */
  GET_VRING_BASE: { num: number };
  /** exactly the requested size, or null to report failure (an empty payload) */
  GET_CONFIG: { data: Buffer | null };
}

/** REPLY_ACK: sent as u64 0 (ok) or 1 (failed). */
export interface AckPayload {
  ok: boolean;
}

/** What encodeReply takes for a request of type T. */
export type ReplyPayload<T extends RequestName> = T extends keyof OwnReplyPayloads ? OwnReplyPayloads[T] : AckPayload;

/** A decoded reply. */
export type Reply =
  | { type: 'GET_FEATURES'; features: bigint }
  | { type: 'GET_PROTOCOL_FEATURES'; features: bigint }
  | { type: 'GET_QUEUE_NUM'; queues: number }
  | { type: 'GET_MAX_MEM_SLOTS'; slots: number }
  | { type: 'GET_STATUS'; status: number }
  | { type: 'GET_VRING_BASE'; index: number; num: number }
  | { type: 'GET_CONFIG'; offset: number; flags: number; data: Buffer | null }
  | { type: 'ACK'; request: RequestName; ok: boolean };

const ownReply: ReadonlySet<RequestName> = new Set<keyof OwnReplyPayloads>([
  'GET_FEATURES',
  'GET_PROTOCOL_FEATURES',
  'GET_QUEUE_NUM',
  'GET_MAX_MEM_SLOTS',
  'GET_STATUS',
  'GET_VRING_BASE',
  'GET_CONFIG',
]);

/** True for requests answered with a payload of their own, whatever need_reply says. */
export function hasOwnReply(type: RequestName): type is keyof OwnReplyPayloads {
  return ownReply.has(type);
}

/**
 * Whether a back-end must answer this request: its own reply, or a REPLY_ACK
 * when need_reply is set. A request with its own reply gets only that one.
 * (SET_LOG_BASE's reply exists only with LOG_SHMFD, which ziu never offers.)
 */
export function expectsReply(req: Request): boolean {
  return hasOwnReply(req.type) || req.needReply;
}

function invalid(message: string): ZiuError {
  return new ZiuError('ERR_ZIU_INVALID_ARG', message);
}

function ownPayload(req: Request, payload: ReplyPayload<RequestName>): Buffer {
  const p = payload as Partial<Record<string, unknown>>;
  switch (req.type) {
    case 'GET_FEATURES':
    case 'GET_PROTOCOL_FEATURES':
      return u64Payload(p.features as bigint, 'features');
    case 'GET_QUEUE_NUM':
      checkInt(p.queues as number, 0, Number.MAX_SAFE_INTEGER, 'queues');
      return u64Payload(BigInt(p.queues as number), 'queues');
    case 'GET_MAX_MEM_SLOTS':
      checkInt(p.slots as number, 0, Number.MAX_SAFE_INTEGER, 'slots');
      return u64Payload(BigInt(p.slots as number), 'slots');
    case 'GET_STATUS':
      checkInt(p.status as number, 0, 0xff, 'status');
      return u64Payload(BigInt(p.status as number), 'status');
    case 'GET_VRING_BASE':
      return statePayload(req.index, p.num as number);
    case 'GET_CONFIG': {
      const data = p.data as Buffer | null;
      if (data === null) return Buffer.alloc(0);
      if (data.length !== req.size) {
        throw invalid(`GET_CONFIG asked for ${req.size} bytes; the reply must carry exactly that many, got ${data.length}`);
      }
      const out = Buffer.alloc(CONFIG_HEADER_SIZE + data.length);
      out.writeUInt32LE(req.offset, 0);
      out.writeUInt32LE(data.length, 4);
      out.writeUInt32LE(req.flags, 8);
      out.set(data, CONFIG_HEADER_SIZE);
      return out;
    }
    default:
      throw invalid(`${req.type} has no reply of its own`);
  }
}

/**
 * The back-end's answer to `request`: flags exactly VERSION|REPLY (0x5), the
 * request's id, then its own reply payload or, for need_reply, an ack.
 * Throws (a bug, not a peer's fault) when the request gets no reply.
 */
export function encodeReply<R extends Request>(request: R, payload: ReplyPayload<R['type']>): Buffer {
  const id = VhostUserRequest[request.type];
  if (hasOwnReply(request.type)) return encodeMessage(id, REPLY_FLAGS, ownPayload(request, payload));
  if (!request.needReply) throw invalid(`${request.type} was sent without need_reply and gets no reply`);
  const { ok } = payload as AckPayload;
  if (typeof ok !== 'boolean') throw invalid(`an ack to ${request.type} needs ok: true or false`);
  return encodeMessage(id, REPLY_FLAGS, u64Payload(ok ? 0n : 1n, 'ack'));
}

function readCount(body: Buffer): number | undefined {
  const v = body.readBigUInt64LE(0);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(v);
}

/**
 * Check a back-end's reply to the request `sent`: flags exactly 0x5, the same
 * request id, no fds, and the size that request's reply has.
 */
export function decodeReply(frame: Frame, sent: Request): Reply | DecodeError {
  const label = `reply to ${sent.type}`;
  const fds = frame.fds;
  const refuse = (kind: DecodeError['kind'], reason: string): DecodeError => new DecodeError(kind, label, reason, fds);
  if (frame.header.length !== HEADER_SIZE) return refuse('bad-size', `header is ${frame.header.length} bytes, expected ${HEADER_SIZE}`);
  const h = readHeader(frame.header);
  if (h.size !== frame.body.length) return refuse('bad-size', `header announces ${h.size} payload bytes but ${frame.body.length} came`);
  if (h.flags !== REPLY_FLAGS) return refuse('bad-flags', `header flags are ${hex(h.flags)}, expected exactly ${hex(REPLY_FLAGS)}`);
  if (h.request !== VhostUserRequest[sent.type]) return refuse('bad-value', `it answers ${describeRequestId(h.request)}`);
  if (fds.length !== 0) return refuse('wrong-fd-count', `came with ${fds.length === 1 ? '1 fd' : `${fds.length} fds`}, expected 0`);
  if (!expectsReply(sent)) return refuse('bad-value', `${sent.type} was sent without need_reply and gets no reply`);
  const body = frame.body;
  const size = (n: number): DecodeError | undefined =>
    body.length === n ? undefined : refuse('bad-size', `payload is ${body.length} bytes, expected ${n}`);

  switch (sent.type) {
    case 'GET_FEATURES':
    case 'GET_PROTOCOL_FEATURES':
      return size(8) ?? { type: sent.type, features: body.readBigUInt64LE(0) };
    case 'GET_QUEUE_NUM':
    case 'GET_MAX_MEM_SLOTS': {
      const err = size(8);
      if (err !== undefined) return err;
      const n = readCount(body);
      if (n === undefined) return refuse('bad-value', `count ${hex(body.readBigUInt64LE(0))} is not a plausible number`);
      return sent.type === 'GET_QUEUE_NUM' ? { type: sent.type, queues: n } : { type: sent.type, slots: n };
    }
    case 'GET_STATUS': {
      const err = size(8);
      if (err !== undefined) return err;
      const v = body.readBigUInt64LE(0);
      if (v > 0xffn) return refuse('bad-value', `status ${hex(v)} does not fit the 8-bit device status`);
      return { type: sent.type, status: Number(v) };
    }
    case 'GET_VRING_BASE': {
      const err = size(8);
      if (err !== undefined) return err;
      const index = body.readUInt32LE(0);
      if (index !== sent.index) return refuse('bad-value', `it is for ring ${index}, expected ring ${sent.index}`);
      return { type: sent.type, index, num: body.readUInt32LE(4) };
    }
    case 'GET_CONFIG': {
      // An empty payload is the back-end's way to say it failed.
      if (body.length === 0) return { type: sent.type, offset: sent.offset, flags: sent.flags, data: null };
      const err = size(CONFIG_HEADER_SIZE + sent.size);
      if (err !== undefined) return err;
      const n = body.readUInt32LE(4);
      if (n !== sent.size) return refuse('bad-value', `config size ${n} differs from the ${sent.size} bytes asked for`);
      const data = Buffer.from(body.subarray(CONFIG_HEADER_SIZE));
      return { type: sent.type, offset: body.readUInt32LE(0), flags: body.readUInt32LE(8), data };
    }
    default: {
      const err = size(8);
      if (err !== undefined) return err;
      return { type: 'ACK', request: sent.type, ok: body.readBigUInt64LE(0) === 0n };
    }
  }
}
