import { describe, expect, it } from 'vitest';
import {
  DecodeError,
  decodeReply,
  encodeMessage,
  encodeReply,
  expectsReply,
  type Reply,
  type ReplyPayload,
  type Request,
} from '../../src/vhost/index.js';
import { fakeFds, frameOf, samples, u64 } from './fixtures.js';

const hex = (b: Buffer): string => b.toString('hex').replace(/(.{2})/g, '$1 ').trim();
const getFeatures: Request = { type: 'GET_FEATURES', needReply: false };
const memTable = samples.find((s) => s.type === 'SET_MEM_TABLE')!;

describe('encodeReply', () => {
  it('answers GET_FEATURES with flags exactly 0x5 and a u64', () => {
    const bytes = encodeReply({ type: 'GET_FEATURES', needReply: false }, { features: 0x1_4000_8000n });
    expect(hex(bytes)).toBe('01 00 00 00 05 00 00 00 08 00 00 00 00 80 00 40 01 00 00 00');
  });

  it('acks a need_reply request with u64 0, or 1 for a failure', () => {
    expect(hex(encodeReply(memTable, { ok: true }))).toBe('05 00 00 00 05 00 00 00 08 00 00 00 00 00 00 00 00 00 00 00');
    expect(hex(encodeReply(memTable, { ok: false }))).toBe('05 00 00 00 05 00 00 00 08 00 00 00 01 00 00 00 00 00 00 00');
  });

  it('gives a request with a reply of its own only that reply, even with need_reply', () => {
    const bytes = encodeReply({ type: 'GET_PROTOCOL_FEATURES', needReply: true }, { features: 0x10009n });
    expect(hex(bytes)).toBe('0f 00 00 00 05 00 00 00 08 00 00 00 09 00 01 00 00 00 00 00');
  });

  it('answers GET_VRING_BASE with the ring index and its base', () => {
    const bytes = encodeReply({ type: 'GET_VRING_BASE', needReply: false, index: 1 }, { num: 0x1234 });
    expect(hex(bytes)).toBe('0b 00 00 00 05 00 00 00 08 00 00 00 01 00 00 00 34 12 00 00');
  });

  it('answers GET_CONFIG with the asked size, or an empty payload for a failure', () => {
    const req: Request = { type: 'GET_CONFIG', needReply: false, offset: 0, size: 4, flags: 0 };
    expect(hex(encodeReply(req, { data: Buffer.from([1, 2, 3, 4]) }))).toBe(
      '18 00 00 00 05 00 00 00 10 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00 01 02 03 04',
    );
    expect(hex(encodeReply(req, { data: null }))).toBe('18 00 00 00 05 00 00 00 00 00 00 00');
    expect(() => encodeReply(req, { data: Buffer.alloc(3) })).toThrow(
      'GET_CONFIG asked for 4 bytes; the reply must carry exactly that many, got 3',
    );
  });

  it('refuses to answer a request that gets no reply: the front-end would read it as the next answer', () => {
    const req: Request = { type: 'SET_VRING_NUM', needReply: false, index: 0, num: 256 };
    expect(expectsReply(req)).toBe(false);
    expect(() => encodeReply(req, { ok: true })).toThrow('SET_VRING_NUM was sent without need_reply and gets no reply');
  });

  it('checks reply values like request fields', () => {
    expect(() => encodeReply({ type: 'GET_STATUS', needReply: false }, { status: 256 })).toThrow(
      'status must be an integer in 0..255; got 256',
    );
  });
});

/** A plausible reply payload for every sample that expects one. */
function replyFor(req: Request): [payload: ReplyPayload<Request['type']>, decoded: Reply] {
  switch (req.type) {
    case 'GET_FEATURES':
    case 'GET_PROTOCOL_FEATURES':
      return [{ features: 0x1_4000_8000n }, { type: req.type, features: 0x1_4000_8000n }];
    case 'GET_QUEUE_NUM':
      return [{ queues: 1 }, { type: req.type, queues: 1 }];
    case 'GET_MAX_MEM_SLOTS':
      return [{ slots: 509 }, { type: req.type, slots: 509 }];
    case 'GET_STATUS':
      return [{ status: 0x0f }, { type: req.type, status: 0x0f }];
    case 'GET_VRING_BASE':
      return [{ num: 77 }, { type: req.type, index: req.index, num: 77 }];
    case 'GET_CONFIG': {
      const data = Buffer.alloc(req.size, 0xaa);
      return [{ data }, { type: req.type, offset: req.offset, flags: req.flags, data }];
    }
    default:
      return [{ ok: false }, { type: 'ACK', request: req.type, ok: false }];
  }
}

describe('decodeReply', () => {
  const answered = samples.filter(expectsReply);

  it.each(answered.map((s) => [s.type, s] as const))('%s: encodeReply -> Framer -> decodeReply gives it back', (_, req) => {
    const [payload, decoded] = replyFor(req);
    expect(decodeReply(frameOf(encodeReply(req, payload)), req)).toEqual(decoded);
  });

  it('reads an empty GET_CONFIG reply as a failure', () => {
    const req: Request = { type: 'GET_CONFIG', needReply: false, offset: 0, size: 8, flags: 0 };
    expect(decodeReply(frameOf(encodeMessage(24, 5)), req)).toEqual({ type: 'GET_CONFIG', offset: 0, flags: 0, data: null });
  });

  type Case = [what: string, bytes: Buffer, sent: Request, kind: DecodeError['kind'], message: string, fds?: number[]];
  const cases: Case[] = [
    ['need_reply echoed', encodeMessage(1, 0xd, u64(1n)), getFeatures, 'bad-flags', 'vhost-user reply to GET_FEATURES: header flags are 0xd, expected exactly 0x5'],
    ['reply bit missing', encodeMessage(1, 0x1, u64(1n)), getFeatures, 'bad-flags', 'vhost-user reply to GET_FEATURES: header flags are 0x1, expected exactly 0x5'],
    ['another request id', encodeMessage(2, 0x5, u64(1n)), getFeatures, 'bad-value', 'vhost-user reply to GET_FEATURES: it answers SET_FEATURES'],
    ['a u32 instead of a u64', encodeMessage(1, 0x5, Buffer.alloc(4)), getFeatures, 'bad-size', 'vhost-user reply to GET_FEATURES: payload is 4 bytes, expected 8'],
    ['an ack of 4 bytes', encodeMessage(5, 0x5, Buffer.alloc(4)), memTable, 'bad-size', 'vhost-user reply to SET_MEM_TABLE: payload is 4 bytes, expected 8'],
    ['an fd with a reply', encodeMessage(1, 0x5, u64(1n)), getFeatures, 'wrong-fd-count', 'vhost-user reply to GET_FEATURES: came with 1 fd, expected 0', fakeFds(1)],
    ['a reply nobody asked for', encodeMessage(3, 0x5, u64(0n)), { type: 'SET_OWNER', needReply: false }, 'bad-value', 'vhost-user reply to SET_OWNER: SET_OWNER was sent without need_reply and gets no reply'],
    ['GET_VRING_BASE for another ring', encodeMessage(11, 0x5, Buffer.from([2, 0, 0, 0, 0, 0, 0, 0])), { type: 'GET_VRING_BASE', needReply: false, index: 1 }, 'bad-value', 'vhost-user reply to GET_VRING_BASE: it is for ring 2, expected ring 1'],
    ['GET_STATUS beyond a byte', encodeMessage(40, 0x5, u64(0x100n)), { type: 'GET_STATUS', needReply: false }, 'bad-value', 'vhost-user reply to GET_STATUS: status 0x100 does not fit the 8-bit device status'],
    ['GET_QUEUE_NUM beyond 2^53', encodeMessage(17, 0x5, u64(1n << 60n)), { type: 'GET_QUEUE_NUM', needReply: false }, 'bad-value', 'vhost-user reply to GET_QUEUE_NUM: count 0x1000000000000000 is not a plausible number'],
  ];

  it.each(cases)('refuses %s', (_, bytes, sent, kind, message, fds = []) => {
    const result = decodeReply(frameOf(bytes, fds), sent);
    expect(result).toBeInstanceOf(DecodeError);
    const err = result as DecodeError;
    expect({ kind: err.kind, message: err.message, fds: err.fds }).toEqual({ kind, message, fds });
  });
});
