/**
 * The vhost-user wire format: the 12-byte header, request ids, flag and
 * feature constants, and the frame format the Framer cuts streams with.
 * Numbers are host order on the wire; ziu runs on little-endian hosts only,
 * so every read and write here says LE explicitly.
 */
import type { FrameFormat } from '../net/framing.js';
import { ZiuError } from '../errors.js';

export const HEADER_SIZE = 12;

/** Header flag bits. */
export const HeaderFlag = {
  /** the protocol version, in bits 0-1; 1 is the only one */
  VERSION: 0x1,
  VERSION_MASK: 0x3,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
} as const;

/** Flags of every reply, exactly: QEMU and virtio-user refuse anything else (an echoed NEED_REPLY too). */
export const REPLY_FLAGS = HeaderFlag.VERSION | HeaderFlag.REPLY;

/** Front-end -> back-end request ids ziu understands. */
export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

export type RequestName = keyof typeof VhostUserRequest;

const namesById = new Map<number, RequestName>(
  (Object.entries(VhostUserRequest) as [RequestName, number][]).map(([name, id]) => [id, name]),
);

// Defined by the spec but not handled by ziu; named only so errors can say what arrived.
const unhandledNames = new Map<number, string>([
  [21, 'SET_BACKEND_REQ_FD'],
  [22, 'IOTLB_MSG'],
  [23, 'SET_VRING_ENDIAN'],
  [26, 'CREATE_CRYPTO_SESSION'],
  [27, 'CLOSE_CRYPTO_SESSION'],
  [28, 'POSTCOPY_ADVISE'],
  [29, 'POSTCOPY_LISTEN'],
  [30, 'POSTCOPY_END'],
  [31, 'GET_INFLIGHT_FD'],
  [32, 'SET_INFLIGHT_FD'],
  [33, 'GPU_SET_SOCKET'],
  [34, 'RESET_DEVICE'],
  [35, 'VRING_KICK'],
]);

/** The name of a request id ziu handles, or undefined. */
export function requestName(id: number): RequestName | undefined {
  return namesById.get(id);
}

/** How an error names a request id: 'SET_MEM_TABLE', 'request 22 (IOTLB_MSG)', 'request 9999'. */
export function describeRequestId(id: number): string {
  const known = namesById.get(id);
  if (known !== undefined) return known;
  const other = unhandledNames.get(id);
  return other === undefined ? `request ${id}` : `request ${id} (${other})`;
}

const bit = (n: number): bigint => 1n << BigInt(n);

/** vhost-user protocol feature masks (GET/SET_PROTOCOL_FEATURES). */
export const ProtocolFeature = {
  MQ: bit(0),
  LOG_SHMFD: bit(1),
  RARP: bit(2),
  REPLY_ACK: bit(3),
  NET_MTU: bit(4),
  BACKEND_REQ: bit(5),
  CROSS_ENDIAN: bit(6),
  CRYPTO_SESSION: bit(7),
  PAGEFAULT: bit(8),
  CONFIG: bit(9),
  BACKEND_SEND_FD: bit(10),
  HOST_NOTIFIER: bit(11),
  INFLIGHT_SHMFD: bit(12),
  RESET_DEVICE: bit(13),
  INBAND_NOTIFICATIONS: bit(14),
  CONFIGURE_MEM_SLOTS: bit(15),
  STATUS: bit(16),
} as const;

/** Virtio (and vhost) feature masks a virtio-net back-end cares about (GET/SET_FEATURES). */
export const VirtioFeature = {
  /** VIRTIO_NET_F_MAC */
  MAC: bit(5),
  /** VIRTIO_NET_F_MRG_RXBUF */
  MRG_RXBUF: bit(15),
  /** VIRTIO_NET_F_STATUS */
  STATUS: bit(16),
  /** VIRTIO_NET_F_CTRL_VQ */
  CTRL_VQ: bit(17),
  /** VIRTIO_NET_F_MQ */
  MQ: bit(22),
  /** VIRTIO_F_NOTIFY_ON_EMPTY */
  NOTIFY_ON_EMPTY: bit(24),
  /** VHOST_F_LOG_ALL: dirty logging for live migration; ziu never offers it */
  LOG_ALL: bit(26),
  /** VIRTIO_F_ANY_LAYOUT */
  ANY_LAYOUT: bit(27),
  /** VIRTIO_RING_F_INDIRECT_DESC */
  INDIRECT_DESC: bit(28),
  /** VIRTIO_RING_F_EVENT_IDX */
  EVENT_IDX: bit(29),
  /** VHOST_USER_F_PROTOCOL_FEATURES: the back-end speaks GET/SET_PROTOCOL_FEATURES */
  F_PROTOCOL_FEATURES: bit(30),
  /** VIRTIO_F_VERSION_1 */
  VERSION_1: bit(32),
  /** VIRTIO_F_RING_PACKED */
  RING_PACKED: bit(34),
  /** VIRTIO_F_IN_ORDER */
  IN_ORDER: bit(35),
} as const;

/** SET_VRING_KICK/CALL/ERR payload: ring index in bits 0-7. */
export const VRING_INDEX_MASK = 0xff;
/** SET_VRING_KICK/CALL/ERR payload: no fd travels (poll / don't signal). */
export const VRING_NOFD = 0x100;
/** SET_VRING_ADDR flags: log used-ring writes (VHOST_VRING_F_LOG). */
export const VRING_ADDR_F_LOG = 0x1;
/** Rings a device can have: KICK/CALL/ERR carry the index in 8 bits. */
export const MAX_RINGS = 256;
/** Largest ring size of a split or packed virtqueue. */
export const MAX_RING_SIZE = 32768;
/** Regions in one SET_MEM_TABLE; more need CONFIGURE_MEM_SLOTS. */
export const MAX_MEM_REGIONS = 8;
/** Bytes of device config space one GET/SET_CONFIG can carry (QEMU's VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;
/** The {u32 offset, u32 size, u32 flags} in front of config bytes. */
export const CONFIG_HEADER_SIZE = 12;

/**
 * Framing for a vhost-user stream.
 *
 * maxBody is 4096, not the 268 bytes of the largest message ziu decodes
 * (GET/SET_CONFIG: 12 + 256; SET_MEM_TABLE: 8 + 8 x 32 = 264). A message that
 * is legal for the protocol but not handled here (crypto sessions are the
 * largest QEMU sends, under 2 KiB) must still frame, so the state machine can
 * answer it as an unknown request instead of losing the stream; a page bounds
 * what a peer can make us buffer before its header is refused.
 */
export const VHOST_USER_FRAME: FrameFormat = {
  name: 'vhost-user',
  headerSize: HEADER_SIZE,
  bodySize: (header) => header.readUInt32LE(8),
  maxBody: 4096,
};

export interface Header {
  request: number;
  flags: number;
  /** payload bytes after the header */
  size: number;
}

export function readHeader(header: Buffer): Header {
  return { request: header.readUInt32LE(0), flags: header.readUInt32LE(4), size: header.readUInt32LE(8) };
}

/** A whole message: header (size = payload length) then payload. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  checkU32(request, 'request');
  checkU32(flags, 'flags');
  const out = Buffer.alloc(HEADER_SIZE + payload.length);
  out.writeUInt32LE(request, 0);
  out.writeUInt32LE(flags, 4);
  out.writeUInt32LE(payload.length, 8);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** `0x1f` for messages. */
export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

function invalidArg(what: string, value: number | bigint, range: string): ZiuError {
  return new ZiuError('ERR_ZIU_INVALID_ARG', `${what} must be ${range}; got ${String(value)}`);
}

/** Encoders check their numbers first, so a bad one is a ZiuError naming the field rather than a RangeError. */
export function checkInt(value: number, min: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < min || value > max) throw invalidArg(what, value, `an integer in ${min}..${max}`);
}

export function checkU32(value: number, what: string): void {
  checkInt(value, 0, 0xffff_ffff, what);
}

export function checkU64(value: bigint, what: string): void {
  if (typeof value !== 'bigint' || value < 0n || value > 0xffff_ffff_ffff_ffffn) {
    throw invalidArg(what, value, 'a bigint in 0..2^64-1');
  }
}

export function u64Payload(value: bigint, what: string): Buffer {
  checkU64(value, what);
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value, 0);
  return b;
}

/** A vring state description: {u32 index, u32 num}. */
export function statePayload(index: number, num: number): Buffer {
  checkU32(index, 'index');
  checkU32(num, 'num');
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index, 0);
  b.writeUInt32LE(num, 4);
  return b;
}
