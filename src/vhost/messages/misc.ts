/** Session, device status, config space, RARP/MTU, and dirty logging (decoded only to be refused). */
import { ZiuError } from '../../errors.js';
import { DecodeError } from '../decode-error.js';
import { checkInt, checkU32, checkU64, CONFIG_HEADER_SIZE, hex, MAX_CONFIG_SIZE, u64Payload } from '../wire.js';
import { checkFds, checkSize, emptyCodec, refuse, type Codec, type RawRequest } from './raw.js';

export interface SetOwnerRequest {
  type: 'SET_OWNER';
  needReply: boolean;
}

/** Deprecated; back-ends ignore it or disable every ring. */
export interface ResetOwnerRequest {
  type: 'RESET_OWNER';
  needReply: boolean;
}

export interface SendRarpRequest {
  type: 'SEND_RARP';
  needReply: boolean;
  /** the guest's MAC, 'aa:bb:cc:dd:ee:ff' (lower case) */
  mac: string;
}

export interface NetSetMtuRequest {
  type: 'NET_SET_MTU';
  needReply: boolean;
  /** 68..65535 */
  mtu: number;
}

export interface SetStatusRequest {
  type: 'SET_STATUS';
  needReply: boolean;
  /** the virtio device status byte */
  status: number;
}

export interface GetStatusRequest {
  type: 'GET_STATUS';
  needReply: boolean;
}

export interface GetConfigRequest {
  type: 'GET_CONFIG';
  needReply: boolean;
  offset: number;
  /** bytes asked for, 1..256; the payload's placeholder bytes are not kept */
  size: number;
  /** 0 front-end access, 1 live migration */
  flags: number;
}

export interface SetConfigRequest {
  type: 'SET_CONFIG';
  needReply: boolean;
  offset: number;
  /** 0 front-end write (writable fields only), 1 live migration */
  flags: number;
  /** 1..256 bytes */
  data: Buffer;
}

/** ziu never offers LOG_SHMFD or LOG_ALL; decoded so the state machine can refuse it and close the fd. */
export interface SetLogBaseRequest {
  type: 'SET_LOG_BASE';
  needReply: boolean;
  size: bigint;
  offset: bigint;
  /** the log memory (sent only with LOG_SHMFD) */
  fd: number | null;
}

/** Decoded only to be refused, like SET_LOG_BASE. */
export interface SetLogFdRequest {
  type: 'SET_LOG_FD';
  needReply: boolean;
  fd: number;
}

export type MiscRequest =
  | SetOwnerRequest
  | ResetOwnerRequest
  | SendRarpRequest
  | NetSetMtuRequest
  | SetStatusRequest
  | GetStatusRequest
  | GetConfigRequest
  | SetConfigRequest
  | SetLogBaseRequest
  | SetLogFdRequest;

const MIN_MTU = 68; // IPv4's minimum, and what DPDK's back-end requires
const MAX_MTU = 65535;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** A u64 payload, 8 bytes and no fds. */
function readU64(raw: RawRequest): bigint | DecodeError {
  return checkSize(raw, 8) ?? checkFds(raw, 0) ?? raw.body.readBigUInt64LE(0);
}

const sendRarp: Codec<SendRarpRequest> = {
  decode(raw) {
    const err = checkSize(raw, 8) ?? checkFds(raw, 0);
    if (err !== undefined) return err;
    const mac = [...raw.body.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
    return { type: 'SEND_RARP', needReply: raw.needReply, mac };
  },
  encode(req) {
    if (!MAC_RE.test(req.mac)) {
      throw new ZiuError('ERR_ZIU_INVALID_ARG', `mac must look like 'aa:bb:cc:dd:ee:ff'; got '${req.mac}'`);
    }
    const out = Buffer.alloc(8);
    Buffer.from(req.mac.replaceAll(':', ''), 'hex').copy(out);
    return { payload: out, fds: [] };
  },
};

const netSetMtu: Codec<NetSetMtuRequest> = {
  decode(raw) {
    const v = readU64(raw);
    if (v instanceof DecodeError) return v;
    if (v < BigInt(MIN_MTU) || v > BigInt(MAX_MTU)) return refuse(raw, 'bad-value', `MTU ${v} is outside ${MIN_MTU}..${MAX_MTU}`);
    return { type: 'NET_SET_MTU', needReply: raw.needReply, mtu: Number(v) };
  },
  encode(req) {
    checkInt(req.mtu, 0, Number.MAX_SAFE_INTEGER, 'mtu');
    return { payload: u64Payload(BigInt(req.mtu), 'mtu'), fds: [] };
  },
};

const setStatus: Codec<SetStatusRequest> = {
  decode(raw) {
    const v = readU64(raw);
    if (v instanceof DecodeError) return v;
    if (v > 0xffn) return refuse(raw, 'bad-value', `status ${hex(v)} does not fit the 8-bit device status`);
    return { type: 'SET_STATUS', needReply: raw.needReply, status: Number(v) };
  },
  encode(req) {
    checkInt(req.status, 0, Number.MAX_SAFE_INTEGER, 'status');
    return { payload: u64Payload(BigInt(req.status), 'status'), fds: [] };
  },
};

interface ConfigFields {
  offset: number;
  size: number;
  flags: number;
}

/**
 * {u32 offset, u32 size, u32 flags, size bytes}. QEMU sends GET_CONFIG with
 * `size` placeholder bytes too, so both directions have the same length rule.
 */
function readConfig(raw: RawRequest): ConfigFields | DecodeError {
  if (raw.body.length < CONFIG_HEADER_SIZE) {
    return refuse(raw, 'bad-size', `payload is ${raw.body.length} bytes, expected at least ${CONFIG_HEADER_SIZE}`);
  }
  const c = { offset: raw.body.readUInt32LE(0), size: raw.body.readUInt32LE(4), flags: raw.body.readUInt32LE(8) };
  if (c.size > MAX_CONFIG_SIZE) return refuse(raw, 'bad-value', `config size ${c.size} exceeds ${MAX_CONFIG_SIZE} bytes`);
  if (raw.body.length !== CONFIG_HEADER_SIZE + c.size) {
    return refuse(raw, 'bad-size', `payload is ${raw.body.length} bytes, expected ${CONFIG_HEADER_SIZE} + config size ${c.size}`);
  }
  const err = checkFds(raw, 0);
  if (err !== undefined) return err;
  if (c.size === 0) return refuse(raw, 'bad-value', 'config size is 0');
  if (c.flags > 1) return refuse(raw, 'bad-value', `config flags ${c.flags} are neither 0 (front-end) nor 1 (migration)`);
  if (c.offset + c.size > MAX_CONFIG_SIZE) {
    return refuse(raw, 'bad-value', `config offset ${c.offset} + size ${c.size} passes the ${MAX_CONFIG_SIZE}-byte config space`);
  }
  return c;
}

function configPayload(offset: number, flags: number, data: Uint8Array): Buffer {
  checkU32(offset, 'offset');
  checkU32(flags, 'flags');
  const out = Buffer.alloc(CONFIG_HEADER_SIZE + data.length);
  out.writeUInt32LE(offset, 0);
  out.writeUInt32LE(data.length, 4);
  out.writeUInt32LE(flags, 8);
  out.set(data, CONFIG_HEADER_SIZE);
  return out;
}

const getConfig: Codec<GetConfigRequest> = {
  decode(raw) {
    const c = readConfig(raw);
    if (c instanceof DecodeError) return c;
    return { type: 'GET_CONFIG', needReply: raw.needReply, ...c };
  },
  encode(req) {
    checkInt(req.size, 0, MAX_CONFIG_SIZE, 'size');
    return { payload: configPayload(req.offset, req.flags, Buffer.alloc(req.size)), fds: [] };
  },
};

const setConfig: Codec<SetConfigRequest> = {
  decode(raw) {
    const c = readConfig(raw);
    if (c instanceof DecodeError) return c;
    const data = Buffer.from(raw.body.subarray(CONFIG_HEADER_SIZE));
    return { type: 'SET_CONFIG', needReply: raw.needReply, offset: c.offset, flags: c.flags, data };
  },
  encode: (req) => ({ payload: configPayload(req.offset, req.flags, req.data), fds: [] }),
};

// {u64 size, u64 offset}; the fd travels only with LOG_SHMFD, so 0 or 1.
const setLogBase: Codec<SetLogBaseRequest> = {
  decode(raw) {
    const err = checkSize(raw, 16) ?? (raw.fds.length > 1 ? checkFds(raw, 1, 'or 0 without LOG_SHMFD') : undefined);
    if (err !== undefined) return err;
    return {
      type: 'SET_LOG_BASE',
      needReply: raw.needReply,
      size: raw.body.readBigUInt64LE(0),
      offset: raw.body.readBigUInt64LE(8),
      fd: raw.fds[0] ?? null,
    };
  },
  encode(req) {
    checkU64(req.size, 'size');
    checkU64(req.offset, 'offset');
    const out = Buffer.alloc(16);
    out.writeBigUInt64LE(req.size, 0);
    out.writeBigUInt64LE(req.offset, 8);
    return { payload: out, fds: req.fd === null ? [] : [req.fd] };
  },
};

const setLogFd: Codec<SetLogFdRequest> = {
  decode: (raw) => checkSize(raw, 0) ?? checkFds(raw, 1) ?? { type: 'SET_LOG_FD', needReply: raw.needReply, fd: raw.fds[0]! },
  encode: (req) => ({ payload: Buffer.alloc(0), fds: [req.fd] }),
};

export const miscCodecs = {
  SET_OWNER: emptyCodec('SET_OWNER'),
  RESET_OWNER: emptyCodec('RESET_OWNER'),
  SEND_RARP: sendRarp,
  NET_SET_MTU: netSetMtu,
  SET_STATUS: setStatus,
  GET_STATUS: emptyCodec('GET_STATUS'),
  GET_CONFIG: getConfig,
  SET_CONFIG: setConfig,
  SET_LOG_BASE: setLogBase,
  SET_LOG_FD: setLogFd,
} satisfies { [K in MiscRequest['type']]: Codec<Extract<MiscRequest, { type: K }>> };
