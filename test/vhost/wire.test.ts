import { describe, expect, it } from 'vitest';
import { Framer } from '../../src/net/framing.js';
import {
  describeRequestId,
  encodeMessage,
  encodeRequest,
  HeaderFlag,
  ProtocolFeature,
  readHeader,
  REPLY_FLAGS,
  requestName,
  VHOST_USER_FRAME,
  VhostUserRequest,
  VirtioFeature,
} from '../../src/vhost/index.js';
import { fakeFds } from './fixtures.js';

const hex = (b: Buffer): string => b.toString('hex').replace(/(.{2})/g, '$1 ').trim();

describe('vhost-user wire constants', () => {
  it('has the request ids of the spec', () => {
    expect(VhostUserRequest).toMatchObject({
      GET_FEATURES: 1,
      SET_MEM_TABLE: 5,
      SET_VRING_KICK: 12,
      GET_PROTOCOL_FEATURES: 15,
      SET_VRING_ENABLE: 18,
      GET_CONFIG: 24,
      GET_MAX_MEM_SLOTS: 36,
      ADD_MEM_REG: 37,
      REM_MEM_REG: 38,
      SET_STATUS: 39,
      GET_STATUS: 40,
    });
    expect(Object.keys(VhostUserRequest)).toHaveLength(27);
    expect(requestName(38)).toBe('REM_MEM_REG');
    expect(requestName(21)).toBeUndefined();
    expect(describeRequestId(22)).toBe('request 22 (IOTLB_MSG)');
    expect(describeRequestId(9999)).toBe('request 9999');
  });

  it('has the flag and feature bits of the spec', () => {
    expect(HeaderFlag).toEqual({ VERSION: 1, VERSION_MASK: 3, REPLY: 4, NEED_REPLY: 8 });
    expect(REPLY_FLAGS).toBe(5);
    expect(VirtioFeature.VERSION_1).toBe(0x1_0000_0000n);
    expect(VirtioFeature.F_PROTOCOL_FEATURES).toBe(0x4000_0000n);
    expect(VirtioFeature.MRG_RXBUF).toBe(0x8000n);
    expect(VirtioFeature.IN_ORDER).toBe(1n << 35n);
    expect(VirtioFeature.RING_PACKED).toBe(1n << 34n);
    expect(VirtioFeature.LOG_ALL).toBe(1n << 26n);
    expect(ProtocolFeature.REPLY_ACK).toBe(8n);
    expect(ProtocolFeature.CONFIGURE_MEM_SLOTS).toBe(1n << 15n);
    expect(ProtocolFeature.STATUS).toBe(1n << 16n);
  });
});

describe('VHOST_USER_FRAME', () => {
  it('reads the payload size from the third u32, little-endian', () => {
    const msg = encodeMessage(5, 1, Buffer.alloc(72));
    expect(VHOST_USER_FRAME.headerSize).toBe(12);
    expect(VHOST_USER_FRAME.bodySize(msg.subarray(0, 12))).toBe(72);
    expect(readHeader(msg)).toEqual({ request: 5, flags: 1, size: 72 });
  });

  it('cuts a stream of requests at message boundaries and ties fds to their message', () => {
    const a = encodeRequest({ type: 'GET_FEATURES', needReply: false });
    const [fd] = fakeFds(1);
    const b = encodeRequest({ type: 'SET_VRING_CALL', needReply: false, index: 0, fd: fd! });
    const framer = new Framer(VHOST_USER_FRAME);
    const stream = Buffer.concat([a.bytes, b.bytes]);
    expect(framer.push({ data: stream.subarray(0, 5), fds: [] })).toEqual([]);
    const frames = framer.push({ data: stream.subarray(5), fds: b.fds });
    expect(frames.map((f) => [readHeader(f.header).request, f.body.length, f.fds])).toEqual([
      [1, 0, []],
      [13, 8, [fd]],
    ]);
  });

  it('takes payloads up to 4096 bytes, past every legal request, and refuses more', () => {
    expect(VHOST_USER_FRAME.maxBody).toBe(4096);
    expect(new Framer(VHOST_USER_FRAME).push({ data: encodeMessage(26, 1, Buffer.alloc(4096)), fds: [] })).toHaveLength(1);
    expect(() => new Framer(VHOST_USER_FRAME).push({ data: encodeMessage(26, 1, Buffer.alloc(4097)), fds: [] })).toThrow(
      'vhost-user: message announces 4097 body bytes; at most 4096 are allowed',
    );
  });
});

describe('exact bytes', () => {
  it('GET_FEATURES is a bare 12-byte header', () => {
    const { bytes, fds } = encodeRequest({ type: 'GET_FEATURES', needReply: false });
    expect(hex(bytes)).toBe('01 00 00 00 01 00 00 00 00 00 00 00');
    expect(fds).toEqual([]);
  });

  it('need_reply sets flag 0x8 next to the version', () => {
    const { bytes } = encodeRequest({ type: 'SET_STATUS', needReply: true, status: 0x0f });
    expect(hex(bytes)).toBe('27 00 00 00 09 00 00 00 08 00 00 00 0f 00 00 00 00 00 00 00');
  });

  it('SET_VRING_KICK without an fd sets bit 8 next to the index', () => {
    const { bytes, fds } = encodeRequest({ type: 'SET_VRING_KICK', needReply: false, index: 1, fd: null });
    expect(hex(bytes)).toBe('0c 00 00 00 01 00 00 00 08 00 00 00 01 01 00 00 00 00 00 00');
    expect(fds).toEqual([]);
  });

  it('SET_VRING_ADDR is 40 bytes: index, flags, desc, used, avail, log', () => {
    const { bytes } = encodeRequest({
      type: 'SET_VRING_ADDR',
      needReply: false,
      index: 1,
      flags: 0,
      desc: 0x1000n,
      used: 0x3000n,
      avail: 0x2000n,
      log: 0n,
    });
    expect(hex(bytes)).toBe(
      '09 00 00 00 01 00 00 00 28 00 00 00 01 00 00 00 00 00 00 00 ' +
        '00 10 00 00 00 00 00 00 00 30 00 00 00 00 00 00 00 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00',
    );
  });

  it('SET_MEM_TABLE is nregions, padding, then 32 bytes per region; one fd per region', () => {
    const fds = fakeFds(1);
    const { bytes, fds: sent } = encodeRequest({
      type: 'SET_MEM_TABLE',
      needReply: false,
      regions: [{ guestPhysAddr: 0x1000n, memorySize: 0x2000n, userspaceAddr: 0x3000n, mmapOffset: 0x40n, fd: fds[0]! }],
    });
    expect(hex(bytes)).toBe(
      '05 00 00 00 01 00 00 00 28 00 00 00 01 00 00 00 00 00 00 00 ' +
        '00 10 00 00 00 00 00 00 00 20 00 00 00 00 00 00 00 30 00 00 00 00 00 00 40 00 00 00 00 00 00 00',
    );
    expect(sent).toEqual(fds);
  });
});
