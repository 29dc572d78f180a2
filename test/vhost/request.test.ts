import { describe, expect, it } from 'vitest';
import type { Frame } from '../../src/net/framing.js';
import {
  DecodeError,
  decodeRequest,
  encodeRequest,
  requestFds,
  VhostUserRequest,
  type DecodeErrorKind,
  type Request,
} from '../../src/vhost/index.js';
import { FAKE_FD, fakeFds, frameOf, memTable, rawFrame, samples, state, u64 } from './fixtures.js';

const G = 1n << 30n;
const opts = { maxQueues: 4 };

describe('round trips', () => {
  it('the samples cover every request type', () => {
    expect(new Set(samples.map((s) => s.type))).toEqual(new Set(Object.keys(VhostUserRequest)));
  });

  it.each(samples.map((s) => [s.type, s] as const))('%s: encodeRequest -> Framer -> decodeRequest gives it back', (_, req) => {
    const { bytes, fds } = encodeRequest(req);
    const frame = frameOf(bytes, fds);
    expect(frame.fds).toEqual(requestFds(req));
    expect(decodeRequest(frame, opts)).toEqual(req);
  });

  it('keeps each memory region with its own fd, in wire order', () => {
    const req = decodeRequest(
      rawFrame(5, memTable(2, [[0n, G, 0x10000n * G, 0n], [2n * G, G, 0x20000n * G, 0n]]), [FAKE_FD + 8, FAKE_FD + 9]),
      opts,
    );
    expect(req).toMatchObject({ regions: [{ guestPhysAddr: 0n, fd: FAKE_FD + 8 }, { guestPhysAddr: 2n * G, fd: FAKE_FD + 9 }] });
  });

  it('accepts a region that ends exactly at 2^64', () => {
    const top = (1n << 64n) - G;
    const req = decodeRequest(rawFrame(5, memTable(1, [[top, G, top, 0n]]), fakeFds(1)), opts);
    expect(req).not.toBeInstanceOf(DecodeError);
  });

  it('REM_MEM_REG: takes one stray fd for compatibility, to be closed', () => {
    const payload = Buffer.concat([u64(0n), u64(0n), u64(G), u64(0x7f00_0000_0000n), u64(0n)]);
    expect(decodeRequest(rawFrame(38, payload, [FAKE_FD]), opts)).toMatchObject({ type: 'REM_MEM_REG', strayFd: FAKE_FD });
  });

  it('SET_LOG_BASE: the fd is optional (it travels only with LOG_SHMFD)', () => {
    expect(decodeRequest(rawFrame(6, Buffer.alloc(16)), opts)).toMatchObject({ type: 'SET_LOG_BASE', fd: null });
  });

  it('SEND_RARP keeps the first 6 bytes as the MAC', () => {
    const payload = Buffer.from([0x52, 0x54, 0, 0xab, 0xcd, 0xef, 0xff, 0xff]);
    expect(decodeRequest(rawFrame(19, payload), opts)).toMatchObject({ mac: '52:54:00:ab:cd:ef' });
  });

  it('a need_reply flag comes back as needReply', () => {
    expect(decodeRequest(rawFrame(3, undefined, [], 0x9), opts)).toEqual({ type: 'SET_OWNER', needReply: true });
  });
});

type Case = [what: string, frame: Frame, kind: DecodeErrorKind, message: string, maxQueues?: number];

const region = (gpa: bigint, size: bigint, uva: bigint): [bigint, bigint, bigint, bigint] => [gpa, size, uva, 0n];
const single = (gpa: bigint, size: bigint, uva: bigint, off = 0n): Buffer =>
  Buffer.concat([u64(0n), u64(gpa), u64(size), u64(uva), u64(off)]);
const addr = (index: number, flags: number, desc: bigint, used: bigint, avail: bigint): Buffer => {
  const b = Buffer.alloc(40);
  b.writeUInt32LE(index, 0);
  b.writeUInt32LE(flags, 4);
  b.writeBigUInt64LE(desc, 8);
  b.writeBigUInt64LE(used, 16);
  b.writeBigUInt64LE(avail, 24);
  return b;
};
const config = (offset: number, size: number, flags: number, dataLength = size): Buffer => {
  const b = Buffer.alloc(12 + dataLength);
  b.writeUInt32LE(offset, 0);
  b.writeUInt32LE(size, 4);
  b.writeUInt32LE(flags, 8);
  return b;
};
const nine = Array.from({ length: 9 }, (_, i) => region(BigInt(i) * G, G, (BigInt(i) + 100n) * G));

const cases: Case[] = [
  // header
  ['reply flag set on a request', rawFrame(1, undefined, [], 0x5), 'bad-flags', 'vhost-user GET_FEATURES: header flags 0x5 have the reply bit (0x4) set on a request'],
  ['version 0', rawFrame(1, undefined, [], 0x0), 'bad-flags', 'vhost-user GET_FEATURES: header flags 0x0 say version 0; only version 1 exists'],
  ['version 2', rawFrame(3, undefined, [], 0xa), 'bad-flags', 'vhost-user SET_OWNER: header flags 0xa say version 2; only version 1 exists'],
  ['undefined flag bits', rawFrame(3, undefined, [], 0x11), 'bad-flags', 'vhost-user SET_OWNER: header flags 0x11 set undefined bits 0x10'],
  ['unknown request 9999', rawFrame(9999, u64(0n), fakeFds(1)), 'unknown-request', 'vhost-user request 9999: not a request ziu handles'],
  ['a spec request ziu does not handle', rawFrame(22, Buffer.alloc(34)), 'unknown-request', 'vhost-user request 22 (IOTLB_MSG): not a request ziu handles'],
  ['request 0', rawFrame(0), 'unknown-request', 'vhost-user request 0: not a request ziu handles'],
  // sizes
  ['GET_FEATURES with a payload', rawFrame(1, u64(0n)), 'bad-size', 'vhost-user GET_FEATURES: payload is 8 bytes, expected 0'],
  ['SET_FEATURES with 4 bytes', rawFrame(2, Buffer.alloc(4)), 'bad-size', 'vhost-user SET_FEATURES: payload is 4 bytes, expected 8'],
  ['SET_VRING_NUM with a u32', rawFrame(8, Buffer.alloc(4)), 'bad-size', 'vhost-user SET_VRING_NUM: payload is 4 bytes, expected 8'],
  ['SET_VRING_ADDR short', rawFrame(9, Buffer.alloc(32)), 'bad-size', 'vhost-user SET_VRING_ADDR: payload is 32 bytes, expected 40'],
  ['SET_VRING_KICK with a u32', rawFrame(12, Buffer.alloc(4), fakeFds(1)), 'bad-size', 'vhost-user SET_VRING_KICK: payload is 4 bytes, expected 8'],
  ['SET_MEM_TABLE shorter than its count', rawFrame(5, memTable(2, [region(0n, G, 0n)]), fakeFds(2)), 'bad-size', 'vhost-user SET_MEM_TABLE: payload is 40 bytes, expected 72'],
  ['SET_MEM_TABLE without a count', rawFrame(5, Buffer.alloc(4)), 'bad-size', 'vhost-user SET_MEM_TABLE: payload is 4 bytes, expected at least 8'],
  ['ADD_MEM_REG without the padding', rawFrame(37, Buffer.alloc(32), fakeFds(1)), 'bad-size', 'vhost-user ADD_MEM_REG: payload is 32 bytes, expected 40'],
  ['SET_LOG_BASE as a u64', rawFrame(6, u64(0n), fakeFds(1)), 'bad-size', 'vhost-user SET_LOG_BASE: payload is 8 bytes, expected 16'],
  ['GET_CONFIG without placeholder bytes', rawFrame(24, config(0, 8, 0, 0)), 'bad-size', 'vhost-user GET_CONFIG: payload is 12 bytes, expected 12 + config size 8'],
  ['SET_CONFIG shorter than its header', rawFrame(25, Buffer.alloc(8)), 'bad-size', 'vhost-user SET_CONFIG: payload is 8 bytes, expected at least 12'],
  // fds
  ['SET_OWNER with an fd', rawFrame(3, undefined, fakeFds(1)), 'wrong-fd-count', 'vhost-user SET_OWNER: came with 1 fd, expected 0'],
  ['KICK with the no-fd bit and an fd', rawFrame(12, u64(0x100n), fakeFds(1)), 'wrong-fd-count', 'vhost-user SET_VRING_KICK: came with 1 fd, expected 0 (the no-fd bit 0x100 is set)'],
  ['KICK without the no-fd bit and no fd', rawFrame(12, u64(0n)), 'wrong-fd-count', 'vhost-user SET_VRING_KICK: came with 0 fds, expected 1 (the no-fd bit 0x100 is clear)'],
  ['CALL with two fds', rawFrame(13, u64(1n), fakeFds(2)), 'wrong-fd-count', 'vhost-user SET_VRING_CALL: came with 2 fds, expected 1 (the no-fd bit 0x100 is clear)'],
  ['SET_MEM_TABLE one fd short', rawFrame(5, memTable(2, [region(0n, G, 0n), region(G, G, G)]), fakeFds(1)), 'wrong-fd-count', 'vhost-user SET_MEM_TABLE: came with 1 fd, expected 2 (one per region, 2 regions)'],
  ['ADD_MEM_REG without an fd', rawFrame(37, single(0n, G, 0n)), 'wrong-fd-count', 'vhost-user ADD_MEM_REG: came with 0 fds, expected 1'],
  ['REM_MEM_REG with two fds', rawFrame(38, single(0n, G, 0n), fakeFds(2)), 'wrong-fd-count', 'vhost-user REM_MEM_REG: came with 2 fds, expected 0 (or 1 to be closed unused)'],
  ['SET_LOG_FD without an fd', rawFrame(7), 'wrong-fd-count', 'vhost-user SET_LOG_FD: came with 0 fds, expected 1'],
  ['SET_VRING_NUM with an fd', rawFrame(8, state(0, 256), fakeFds(1)), 'wrong-fd-count', 'vhost-user SET_VRING_NUM: came with 1 fd, expected 0'],
  // memory values
  ['too many regions (9)', rawFrame(5, memTable(9, nine), fakeFds(9)), 'bad-value', 'vhost-user SET_MEM_TABLE: the table has 9 regions; at most 8 fit in one message'],
  ['no regions', rawFrame(5, memTable(0, [])), 'bad-value', 'vhost-user SET_MEM_TABLE: the table has 0 regions; at least 1 is needed'],
  ['region overlap in guest-physical space', rawFrame(5, memTable(2, [region(0n, G, 0n), region(G / 2n, G, 4n * G)]), fakeFds(2)), 'bad-value', 'vhost-user SET_MEM_TABLE: region overlap: regions 0 and 1 share guest-physical addresses ([0x0, 0x40000000) and [0x20000000, 0x60000000))'],
  ['region overlap in user space', rawFrame(5, memTable(3, [region(0n, G, 0n), region(4n * G, G, 8n * G), region(2n * G, G, 8n * G + 1n)]), fakeFds(3)), 'bad-value', 'vhost-user SET_MEM_TABLE: region overlap: regions 1 and 2 share user addresses ([0x200000000, 0x240000000) and [0x200000001, 0x240000001))'],
  ['a region of size 0', rawFrame(5, memTable(2, [region(0n, G, 0n), region(G, 0n, G)]), fakeFds(2)), 'bad-value', 'vhost-user SET_MEM_TABLE: region 1 has size 0'],
  ['a guest range past 2^64', rawFrame(5, memTable(1, [region((1n << 64n) - G, 2n * G, 0n)]), fakeFds(1)), 'bad-value', 'vhost-user SET_MEM_TABLE: region 0: guest-physical range 0xffffffffc0000000 + 0x80000000 overflows 64 bits'],
  ['a user range past 2^64', rawFrame(5, memTable(1, [region(0n, G, (1n << 64n) - 1n)]), fakeFds(1)), 'bad-value', 'vhost-user SET_MEM_TABLE: region 0: user range 0xffffffffffffffff + 0x40000000 overflows 64 bits'],
  ['an mmap length past 2^64', rawFrame(5, memTable(1, [[0n, G, 0n, (1n << 64n) - 1n]]), fakeFds(1)), 'bad-value', 'vhost-user SET_MEM_TABLE: region 0: mmap offset 0xffffffffffffffff + size 0x40000000 overflows 64 bits'],
  ['ADD_MEM_REG of size 0', rawFrame(37, single(0n, 0n, 0n), fakeFds(1)), 'bad-value', 'vhost-user ADD_MEM_REG: region has size 0'],
  // ring values
  ['vring index out of range', rawFrame(8, state(2, 256)), 'bad-value', 'vhost-user SET_VRING_NUM: ring index 2 is out of range (the device has 2 rings)', 2],
  ['KICK index out of range', rawFrame(12, u64(0x102n)), 'bad-value', 'vhost-user SET_VRING_KICK: ring index 2 is out of range (the device has 2 rings)', 2],
  ['GET_VRING_BASE index out of range', rawFrame(11, state(1, 0)), 'bad-value', 'vhost-user GET_VRING_BASE: ring index 1 is out of range (the device has 1 ring)', 1],
  ['ENABLE index out of range', rawFrame(18, state(0x1_0000, 1)), 'bad-value', 'vhost-user SET_VRING_ENABLE: ring index 65536 is out of range (the device has 4 rings)'],
  ['ADDR index out of range', rawFrame(9, addr(7, 0, 0n, 0n, 0n)), 'bad-value', 'vhost-user SET_VRING_ADDR: ring index 7 is out of range (the device has 4 rings)'],
  ['vring num 3', rawFrame(8, state(0, 3)), 'bad-value', 'vhost-user SET_VRING_NUM: ring size 3 is not a power of two between 1 and 32768'],
  ['vring num 0', rawFrame(8, state(0, 0)), 'bad-value', 'vhost-user SET_VRING_NUM: ring size 0 is not a power of two between 1 and 32768'],
  ['vring num 65536', rawFrame(8, state(0, 65536)), 'bad-value', 'vhost-user SET_VRING_NUM: ring size 65536 is not a power of two between 1 and 32768'],
  ['KICK with bits above 8', rawFrame(12, u64(0x200n), fakeFds(1)), 'bad-value', 'vhost-user SET_VRING_KICK: payload 0x200 sets bits above 8 (only 0-7 index and 8 no-fd exist)'],
  ['ENABLE 2', rawFrame(18, state(0, 2)), 'bad-value', 'vhost-user SET_VRING_ENABLE: enable value 2 is neither 0 nor 1'],
  ['ADDR with unknown flags', rawFrame(9, addr(0, 2, 0n, 0n, 0n)), 'bad-value', 'vhost-user SET_VRING_ADDR: flags 0x2 set bits other than LOG (0x1)'],
  ['ADDR with a misaligned descriptor table', rawFrame(9, addr(0, 0, 0x1008n, 0n, 0n)), 'bad-value', 'vhost-user SET_VRING_ADDR: descriptor table address 0x1008 is not 16-byte aligned'],
  ['ADDR with a misaligned used ring', rawFrame(9, addr(0, 0, 0n, 0x2002n, 0n)), 'bad-value', 'vhost-user SET_VRING_ADDR: used ring address 0x2002 is not 4-byte aligned'],
  // misc values
  ['MTU 40', rawFrame(20, u64(40n)), 'bad-value', 'vhost-user NET_SET_MTU: MTU 40 is outside 68..65535'],
  ['status 0x100', rawFrame(39, u64(0x100n)), 'bad-value', 'vhost-user SET_STATUS: status 0x100 does not fit the 8-bit device status'],
  ['GET_CONFIG of 300 bytes', rawFrame(24, config(0, 300, 0)), 'bad-value', 'vhost-user GET_CONFIG: config size 300 exceeds 256 bytes'],
  ['GET_CONFIG of 0 bytes', rawFrame(24, config(0, 0, 0)), 'bad-value', 'vhost-user GET_CONFIG: config size is 0'],
  ['SET_CONFIG with flags 2', rawFrame(25, config(0, 4, 2)), 'bad-value', 'vhost-user SET_CONFIG: config flags 2 are neither 0 (front-end) nor 1 (migration)'],
  ['SET_CONFIG past the config space', rawFrame(25, config(250, 8, 0)), 'bad-value', 'vhost-user SET_CONFIG: config offset 250 + size 8 passes the 256-byte config space'],
];

describe('validation', () => {
  it.each(cases)('%s', (_, frame, kind, message, maxQueues = 4) => {
    const result = decodeRequest(frame, { maxQueues });
    expect(result).toBeInstanceOf(DecodeError);
    const err = result as DecodeError;
    expect({ kind: err.kind, message: err.message }).toEqual({ kind, message });
    expect(err.code).toBe('ERR_ZIU_VHOST_BAD_MESSAGE');
    // every fd that came is handed back for closing
    expect(err.fds).toEqual(frame.fds);
  });

  it('refuses a frame whose header disagrees with its body', () => {
    const frame = { header: Buffer.from(encodeRequest({ type: 'SET_OWNER', needReply: false }).bytes), body: u64(0n), fds: fakeFds(1) };
    const err = decodeRequest(frame, opts) as DecodeError;
    expect([err.kind, err.message, err.fds]).toEqual(['bad-size', 'vhost-user SET_OWNER: header announces 0 payload bytes but 8 came', fakeFds(1)]);
    const short = decodeRequest({ header: Buffer.alloc(5), body: Buffer.alloc(0), fds: [] }, opts) as DecodeError;
    expect([short.kind, short.message]).toEqual(['bad-size', 'vhost-user message: header is 5 bytes, expected 12']);
  });

  it('refuses a bad maxQueues option by throwing: that is a bug, not a peer', () => {
    expect(() => decodeRequest(rawFrame(1), { maxQueues: 0 })).toThrow('maxQueues must be an integer in 1..256; got 0');
    expect(() => decodeRequest(rawFrame(1), { maxQueues: 257 })).toThrow('maxQueues must be an integer in 1..256; got 257');
  });
});

describe('encodeRequest', () => {
  it('refuses what the decoder would refuse, naming the reason', () => {
    const bad: Request = { type: 'SET_VRING_NUM', needReply: false, index: 0, num: 3 };
    expect(() => encodeRequest(bad)).toThrow('cannot encode SET_VRING_NUM: ring size 3 is not a power of two between 1 and 32768');
    const overlap: Request = {
      type: 'SET_MEM_TABLE',
      needReply: false,
      regions: [
        { guestPhysAddr: 0n, memorySize: G, userspaceAddr: 0n, mmapOffset: 0n, fd: FAKE_FD },
        { guestPhysAddr: 0n, memorySize: G, userspaceAddr: G, mmapOffset: 0n, fd: FAKE_FD + 1 },
      ],
    };
    expect(() => encodeRequest(overlap)).toThrow('cannot encode SET_MEM_TABLE: region overlap: regions 0 and 1 share guest-physical');
  });

  it('with check: false, builds a broken message for a back-end under test', () => {
    const { bytes } = encodeRequest({ type: 'SET_VRING_NUM', needReply: false, index: 0, num: 3 }, { check: false });
    expect((decodeRequest(frameOf(bytes), opts) as DecodeError).kind).toBe('bad-value');
  });

  it('names a field out of range instead of a RangeError', () => {
    expect(() => encodeRequest({ type: 'SET_VRING_CALL', needReply: false, index: 300, fd: null })).toThrow(
      'index must be an integer in 0..255; got 300',
    );
    expect(() => encodeRequest({ type: 'SET_FEATURES', needReply: false, features: -1n })).toThrow(
      'features must be a bigint in 0..2^64-1; got -1',
    );
    expect(() => encodeRequest({ type: 'SEND_RARP', needReply: false, mac: '52:54:00' })).toThrow(
      "mac must look like 'aa:bb:cc:dd:ee:ff'; got '52:54:00'",
    );
  });
});
