/** Front-end requests: one decode entry point for the back-end, one encoder for ziu's probe. */
import { ZiuError } from '../errors.js';
import type { Frame } from '../net/framing.js';
import { DecodeError } from './decode-error.js';
import { featureCodecs, type FeatureRequest } from './messages/features.js';
import { memoryCodecs, type MemoryRequest } from './messages/memory.js';
import { miscCodecs, type MiscRequest } from './messages/misc.js';
import type { Codec, RawRequest } from './messages/raw.js';
import { vringCodecs, type VringRequest } from './messages/vring.js';
import {
  checkInt,
  describeRequestId,
  encodeMessage,
  HEADER_SIZE,
  HeaderFlag,
  hex,
  MAX_RINGS,
  readHeader,
  requestName,
  VhostUserRequest,
  type RequestName,
} from './wire.js';

/** Every request ziu handles, discriminated by `type` (the request's name). */
export type Request = FeatureRequest | MemoryRequest | VringRequest | MiscRequest;

export type RequestOf<T extends RequestName> = Extract<Request, { type: T }>;

const codecs: { [K in RequestName]: Codec<RequestOf<K>> } = {
  ...featureCodecs,
  ...memoryCodecs,
  ...vringCodecs,
  ...miscCodecs,
};

export interface DecodeOptions {
  /** rings (not queue pairs) the device has, 1..256: a ring index must be below it */
  maxQueues: number;
}

const KNOWN_FLAGS = HeaderFlag.VERSION_MASK | HeaderFlag.REPLY | HeaderFlag.NEED_REPLY;

/**
 * Check one framed message from a front-end and type it.
 *
 * Never throws for anything the peer sent (only for bad options). It never
 * touches fds: a request carries every fd of the frame in named fields, and a
 * DecodeError lists them all in `fds` for the caller to close.
 */
export function decodeRequest(frame: Frame, options: DecodeOptions): Request | DecodeError {
  checkInt(options.maxQueues, 1, MAX_RINGS, 'maxQueues');
  const fds = frame.fds;
  if (frame.header.length !== HEADER_SIZE) {
    return new DecodeError('bad-size', 'message', `header is ${frame.header.length} bytes, expected ${HEADER_SIZE}`, fds);
  }
  const h = readHeader(frame.header);
  const label = describeRequestId(h.request);
  if (h.size !== frame.body.length) {
    return new DecodeError('bad-size', label, `header announces ${h.size} payload bytes but ${frame.body.length} came`, fds);
  }
  if ((h.flags & HeaderFlag.VERSION_MASK) !== HeaderFlag.VERSION) {
    const version = h.flags & HeaderFlag.VERSION_MASK;
    return new DecodeError('bad-flags', label, `header flags ${hex(h.flags)} say version ${version}; only version 1 exists`, fds);
  }
  if ((h.flags & HeaderFlag.REPLY) !== 0) {
    return new DecodeError('bad-flags', label, `header flags ${hex(h.flags)} have the reply bit (0x4) set on a request`, fds);
  }
  if ((h.flags & ~KNOWN_FLAGS) !== 0) {
    return new DecodeError('bad-flags', label, `header flags ${hex(h.flags)} set undefined bits ${hex(h.flags & ~KNOWN_FLAGS)}`, fds);
  }
  const name = requestName(h.request);
  if (name === undefined) return new DecodeError('unknown-request', label, 'not a request ziu handles', fds);
  const raw: RawRequest = {
    name,
    needReply: (h.flags & HeaderFlag.NEED_REPLY) !== 0,
    body: frame.body,
    fds,
    maxQueues: options.maxQueues,
  };
  return (codecs[name] as Codec<Request>).decode(raw);
}

export interface EncodedRequest {
  /** header + payload, one sendmsg */
  bytes: Buffer;
  /** the fds to send with it (SCM_RIGHTS), in wire order; still owned by the caller */
  fds: number[];
}

export interface EncodeOptions {
  /**
   * Refuse a request our own decoder would refuse (default true). Off only to
   * send a deliberately broken message to a back-end under test.
   */
  check?: boolean;
}

/** Build a request as a front-end sends it; `needReply` sets the NEED_REPLY flag. */
export function encodeRequest(req: Request, options: EncodeOptions = {}): EncodedRequest {
  const codec = codecs[req.type] as Codec<Request> | undefined;
  if (codec === undefined) {
    throw new ZiuError('ERR_ZIU_INVALID_ARG', `cannot encode a vhost-user request of type '${String(req.type)}'`);
  }
  const { payload, fds } = codec.encode(req);
  const flags = HeaderFlag.VERSION | (req.needReply ? HeaderFlag.NEED_REPLY : 0);
  const bytes = encodeMessage(VhostUserRequest[req.type], flags, payload);
  if (options.check !== false) {
    const frame = { header: bytes.subarray(0, HEADER_SIZE), body: bytes.subarray(HEADER_SIZE), fds };
    const back = decodeRequest(frame, { maxQueues: MAX_RINGS });
    if (back instanceof DecodeError) {
      throw new ZiuError('ERR_ZIU_INVALID_ARG', `cannot encode ${req.type}: ${back.reason}`, { cause: back });
    }
  }
  return { bytes, fds };
}

/** Every fd a decoded request holds, wherever it sits; for closing a request that is refused. */
export function requestFds(req: Request): number[] {
  switch (req.type) {
    case 'SET_MEM_TABLE':
      return req.regions.map((r) => r.fd);
    case 'ADD_MEM_REG':
      return [req.region.fd];
    case 'REM_MEM_REG':
      return req.strayFd === null ? [] : [req.strayFd];
    case 'SET_VRING_KICK':
    case 'SET_VRING_CALL':
    case 'SET_VRING_ERR':
    case 'SET_LOG_BASE':
      return req.fd === null ? [] : [req.fd];
    case 'SET_LOG_FD':
      return [req.fd];
    default:
      return [];
  }
}
