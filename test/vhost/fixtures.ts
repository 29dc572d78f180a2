import { Framer, type Frame } from '../../src/net/framing.js';
import { encodeMessage, VHOST_USER_FRAME, type Request } from '../../src/vhost/index.js';

/**
 * Fake fd numbers: decode only carries fd numbers, but the Framer closes the
 * fds of a message it refuses. These are above fs.nr_open (at most 2^20 by
 * default), so no process can have them open and a close is a harmless EBADF.
 */
export const FAKE_FD = 2 ** 30;
export const fakeFds = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => FAKE_FD + from + i);

/** Frame bytes as the back-end's reader would: one chunk, fds with it. */
export function frameOf(bytes: Buffer, fds: number[] = []): Frame {
  const frames = new Framer(VHOST_USER_FRAME).push({ data: bytes, fds });
  if (frames.length !== 1) throw new Error(`expected one frame, got ${frames.length}`);
  return frames[0]!;
}

/** A message with a hand-built payload, for what encodeRequest refuses to build. */
export function rawFrame(request: number, payload: Buffer = Buffer.alloc(0), fds: number[] = [], flags = 0x1): Frame {
  return frameOf(encodeMessage(request, flags, payload), fds);
}

export function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

export function state(index: number, num: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index, 0);
  b.writeUInt32LE(num, 4);
  return b;
}

export function memTable(n: number, regions: [gpa: bigint, size: bigint, uva: bigint, off: bigint][]): Buffer {
  const b = Buffer.alloc(8 + regions.length * 32);
  b.writeUInt32LE(n, 0);
  regions.forEach((r, i) => r.forEach((v, j) => b.writeBigUInt64LE(v, 8 + i * 32 + j * 8)));
  return b;
}

const G = 1n << 30n;

/** One valid request of every type ziu handles, with fake fds; maxQueues 4 accepts them all. */
export const samples: Request[] = [
  { type: 'GET_FEATURES', needReply: false },
  { type: 'SET_FEATURES', needReply: false, features: (1n << 32n) | (1n << 30n) | (1n << 15n) },
  { type: 'SET_OWNER', needReply: false },
  { type: 'RESET_OWNER', needReply: false },
  {
    type: 'SET_MEM_TABLE',
    needReply: true,
    regions: [
      { guestPhysAddr: 0n, memorySize: G, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n, fd: FAKE_FD + 1 },
      { guestPhysAddr: 4n * G, memorySize: 2n * G, userspaceAddr: 0x7e00_0000_0000n, mmapOffset: G, fd: FAKE_FD + 2 },
    ],
  },
  { type: 'SET_LOG_BASE', needReply: false, size: 0x1000n, offset: 0n, fd: FAKE_FD + 3 },
  { type: 'SET_LOG_FD', needReply: false, fd: FAKE_FD + 4 },
  { type: 'SET_VRING_NUM', needReply: false, index: 1, num: 256 },
  {
    type: 'SET_VRING_ADDR',
    needReply: false,
    index: 0,
    flags: 0,
    desc: 0x7f00_0010_0000n,
    used: 0x7f00_0010_2000n,
    avail: 0x7f00_0010_1000n,
    log: 0n,
  },
  { type: 'SET_VRING_BASE', needReply: false, index: 1, num: 0 },
  { type: 'GET_VRING_BASE', needReply: false, index: 3 },
  { type: 'SET_VRING_KICK', needReply: false, index: 0, fd: FAKE_FD + 5 },
  { type: 'SET_VRING_KICK', needReply: false, index: 1, fd: null },
  { type: 'SET_VRING_CALL', needReply: true, index: 2, fd: FAKE_FD + 6 },
  { type: 'SET_VRING_ERR', needReply: false, index: 3, fd: null },
  { type: 'GET_PROTOCOL_FEATURES', needReply: false },
  { type: 'SET_PROTOCOL_FEATURES', needReply: false, features: (1n << 0n) | (1n << 3n) | (1n << 16n) },
  { type: 'GET_QUEUE_NUM', needReply: false },
  { type: 'SET_VRING_ENABLE', needReply: false, index: 1, enable: true },
  { type: 'SEND_RARP', needReply: false, mac: '52:54:00:12:34:56' },
  { type: 'NET_SET_MTU', needReply: true, mtu: 1500 },
  { type: 'GET_CONFIG', needReply: false, offset: 0, size: 12, flags: 0 },
  { type: 'SET_CONFIG', needReply: false, offset: 6, flags: 1, data: Buffer.from([1, 0]) },
  { type: 'GET_MAX_MEM_SLOTS', needReply: false },
  {
    type: 'ADD_MEM_REG',
    needReply: true,
    region: { guestPhysAddr: 8n * G, memorySize: G, userspaceAddr: 0x7d00_0000_0000n, mmapOffset: 0n, fd: FAKE_FD + 7 },
  },
  {
    type: 'REM_MEM_REG',
    needReply: true,
    region: { guestPhysAddr: 8n * G, memorySize: G, userspaceAddr: 0x7d00_0000_0000n, mmapOffset: 0n },
    strayFd: null,
  },
  { type: 'SET_STATUS', needReply: true, status: 0x0f },
  { type: 'GET_STATUS', needReply: false },
];
