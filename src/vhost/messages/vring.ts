/** Per-ring setup: size, addresses, base index, event fds, enable. */
import { DecodeError } from '../decode-error.js';
import {
  checkInt,
  checkU32,
  checkU64,
  hex,
  MAX_RING_SIZE,
  MAX_RINGS,
  statePayload,
  u64Payload,
  VRING_ADDR_F_LOG,
  VRING_INDEX_MASK,
  VRING_NOFD,
} from '../wire.js';
import { checkFds, checkRingIndex, checkSize, refuse, type Codec, type RawRequest } from './raw.js';

export interface SetVringNumRequest {
  type: 'SET_VRING_NUM';
  needReply: boolean;
  index: number;
  /** ring size: a power of two, 1..32768 */
  num: number;
}

export interface SetVringAddrRequest {
  type: 'SET_VRING_ADDR';
  needReply: boolean;
  index: number;
  /** VRING_ADDR_F_LOG or 0 */
  flags: number;
  /** front-end user addresses (translate through userspaceAddr) */
  desc: bigint;
  used: bigint;
  avail: bigint;
  /** guest-physical address for used-ring dirty logging; meaningful only with VRING_ADDR_F_LOG */
  log: bigint;
}

export interface SetVringBaseRequest {
  type: 'SET_VRING_BASE';
  needReply: boolean;
  index: number;
  /**
   * The next avail index to read. Raw u32: a split ring uses the low 16 bits;
   * a packed ring puts the avail wrap counter in bit 15.
   */
  num: number;
}

export interface GetVringBaseRequest {
  type: 'GET_VRING_BASE';
  needReply: boolean;
  /** the ring to stop; the state's num field is ignored (sent as 0) */
  index: number;
}

/** SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR. */
export interface SetVringFdRequest<T extends VringFdType = VringFdType> {
  type: T;
  needReply: boolean;
  index: number;
  /** the eventfd, or null when the no-fd bit was set (poll for kicks / never signal) */
  fd: number | null;
}

export type VringFdType = 'SET_VRING_KICK' | 'SET_VRING_CALL' | 'SET_VRING_ERR';

export interface SetVringEnableRequest {
  type: 'SET_VRING_ENABLE';
  needReply: boolean;
  index: number;
  enable: boolean;
}

export type VringRequest =
  | SetVringNumRequest
  | SetVringAddrRequest
  | SetVringBaseRequest
  | GetVringBaseRequest
  | SetVringFdRequest<'SET_VRING_KICK'>
  | SetVringFdRequest<'SET_VRING_CALL'>
  | SetVringFdRequest<'SET_VRING_ERR'>
  | SetVringEnableRequest;

const ADDR_SIZE = 40;

/** A vring state description {u32 index, u32 num}: 8 bytes, no fds, index in range. */
function readState(raw: RawRequest): { index: number; num: number } | DecodeError {
  const err = checkSize(raw, 8) ?? checkFds(raw, 0);
  if (err !== undefined) return err;
  const index = raw.body.readUInt32LE(0);
  return checkRingIndex(raw, index) ?? { index, num: raw.body.readUInt32LE(4) };
}

function isRingSize(n: number): boolean {
  return n >= 1 && n <= MAX_RING_SIZE && (n & (n - 1)) === 0;
}

const vringNum: Codec<SetVringNumRequest> = {
  decode(raw) {
    const s = readState(raw);
    if (s instanceof DecodeError) return s;
    if (!isRingSize(s.num)) {
      return refuse(raw, 'bad-value', `ring size ${s.num} is not a power of two between 1 and ${MAX_RING_SIZE}`);
    }
    return { type: 'SET_VRING_NUM', needReply: raw.needReply, index: s.index, num: s.num };
  },
  encode: (req) => ({ payload: statePayload(req.index, req.num), fds: [] }),
};

const vringBase: Codec<SetVringBaseRequest> = {
  decode(raw) {
    const s = readState(raw);
    if (s instanceof DecodeError) return s;
    return { type: 'SET_VRING_BASE', needReply: raw.needReply, index: s.index, num: s.num };
  },
  encode: (req) => ({ payload: statePayload(req.index, req.num), fds: [] }),
};

const getVringBase: Codec<GetVringBaseRequest> = {
  decode(raw) {
    const s = readState(raw);
    if (s instanceof DecodeError) return s;
    return { type: 'GET_VRING_BASE', needReply: raw.needReply, index: s.index };
  },
  encode: (req) => ({ payload: statePayload(req.index, 0), fds: [] }),
};

const vringEnable: Codec<SetVringEnableRequest> = {
  decode(raw) {
    const s = readState(raw);
    if (s instanceof DecodeError) return s;
    if (s.num > 1) return refuse(raw, 'bad-value', `enable value ${s.num} is neither 0 nor 1`);
    return { type: 'SET_VRING_ENABLE', needReply: raw.needReply, index: s.index, enable: s.num === 1 };
  },
  encode: (req) => ({ payload: statePayload(req.index, req.enable ? 1 : 0), fds: [] }),
};

// The alignments every virtqueue layout guarantees (split: desc 16, avail 2,
// used 4; packed: desc 16, both event areas 4). Refusing misaligned rings here
// keeps the ring code's 16/32-bit atomics aligned.
const addrAlign: [field: 'desc' | 'avail' | 'used', what: string, align: bigint][] = [
  ['desc', 'descriptor table', 16n],
  ['avail', 'avail ring', 2n],
  ['used', 'used ring', 4n],
];

const vringAddr: Codec<SetVringAddrRequest> = {
  decode(raw) {
    const err = checkSize(raw, ADDR_SIZE) ?? checkFds(raw, 0);
    if (err !== undefined) return err;
    const b = raw.body;
    const req: SetVringAddrRequest = {
      type: 'SET_VRING_ADDR',
      needReply: raw.needReply,
      index: b.readUInt32LE(0),
      flags: b.readUInt32LE(4),
      desc: b.readBigUInt64LE(8),
      used: b.readBigUInt64LE(16),
      avail: b.readBigUInt64LE(24),
      log: b.readBigUInt64LE(32),
    };
    const bad = checkRingIndex(raw, req.index);
    if (bad !== undefined) return bad;
    if ((req.flags & ~VRING_ADDR_F_LOG) !== 0) {
      return refuse(raw, 'bad-value', `flags ${hex(req.flags)} set bits other than LOG (0x1)`);
    }
    for (const [field, what, align] of addrAlign) {
      if (req[field] % align !== 0n) {
        return refuse(raw, 'bad-value', `${what} address ${hex(req[field])} is not ${align}-byte aligned`);
      }
    }
    return req;
  },
  encode(req) {
    checkU32(req.index, 'index');
    checkU32(req.flags, 'flags');
    const out = Buffer.alloc(ADDR_SIZE);
    out.writeUInt32LE(req.index, 0);
    out.writeUInt32LE(req.flags, 4);
    (['desc', 'used', 'avail', 'log'] as const).forEach((field, i) => {
      checkU64(req[field], field);
      out.writeBigUInt64LE(req[field], 8 + 8 * i);
    });
    return { payload: out, fds: [] };
  },
};

const RESERVED_FD_BITS = ~BigInt(VRING_INDEX_MASK | VRING_NOFD) & 0xffff_ffff_ffff_ffffn;

function vringFd<T extends VringFdType>(type: T): Codec<SetVringFdRequest<T>> {
  return {
    decode(raw) {
      const err = checkSize(raw, 8);
      if (err !== undefined) return err;
      const value = raw.body.readBigUInt64LE(0);
      if ((value & RESERVED_FD_BITS) !== 0n) {
        return refuse(raw, 'bad-value', `payload ${hex(value)} sets bits above 8 (only 0-7 index and 8 no-fd exist)`);
      }
      const noFd = (value & BigInt(VRING_NOFD)) !== 0n;
      const index = Number(value & BigInt(VRING_INDEX_MASK));
      return (
        (noFd
          ? checkFds(raw, 0, `the no-fd bit ${hex(VRING_NOFD)} is set`)
          : checkFds(raw, 1, `the no-fd bit ${hex(VRING_NOFD)} is clear`)) ??
        checkRingIndex(raw, index) ?? { type, needReply: raw.needReply, index, fd: noFd ? null : raw.fds[0]! }
      );
    },
    encode(req) {
      checkInt(req.index, 0, MAX_RINGS - 1, 'index');
      const value = BigInt(req.index) | (req.fd === null ? BigInt(VRING_NOFD) : 0n);
      return { payload: u64Payload(value, 'payload'), fds: req.fd === null ? [] : [req.fd] };
    },
  };
}

export const vringCodecs = {
  SET_VRING_NUM: vringNum,
  SET_VRING_ADDR: vringAddr,
  SET_VRING_BASE: vringBase,
  GET_VRING_BASE: getVringBase,
  SET_VRING_KICK: vringFd('SET_VRING_KICK'),
  SET_VRING_CALL: vringFd('SET_VRING_CALL'),
  SET_VRING_ERR: vringFd('SET_VRING_ERR'),
  SET_VRING_ENABLE: vringEnable,
} satisfies { [K in VringRequest['type']]: Codec<Extract<VringRequest, { type: K }>> };
