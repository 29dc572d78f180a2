import { describe, expect, it } from 'vitest';
import { ZiuError } from '../../src/errors.js';
import { Framer, type Frame } from '../../src/net/framing.js';
import {
  DecodeError,
  decodeRequest,
  encodeMessage,
  encodeRequest,
  requestFds,
  VHOST_USER_FRAME,
  VhostUserRequest,
  type DecodeErrorKind,
  type Request,
} from '../../src/vhost/index.js';
import { openFds } from '../helpers/fds.js';
import { fakeFds, FAKE_FD, frameOf, samples } from './fixtures.js';
import { Rng } from './prng.js';

// Each case has its own seed (SEED + case number), so one failure replays alone:
// ZIU_FUZZ_SEED=<seed> ZIU_FUZZ_CASES=1 npx vitest run test/vhost/fuzz.test.ts
const SEED = Number(process.env['ZIU_FUZZ_SEED'] ?? 0x5eed);
const CASES = Number(process.env['ZIU_FUZZ_CASES'] ?? 100_000);

const KINDS: readonly DecodeErrorKind[] = ['bad-size', 'unknown-request', 'wrong-fd-count', 'bad-value', 'bad-flags'];
const IDS = Object.values(VhostUserRequest);
const SIZES = [0, 4, 8, 12, 16, 24, 32, 40, 44, 72, 264, 268, 296];
const encodedSamples = samples.map((s) => encodeRequest(s));

/** Bytes and fds a peer might send. */
interface Sent {
  bytes: Buffer;
  fds: number[];
}

function randomBytes(rng: Rng): Sent {
  const n = rng.int(4) === 0 ? rng.int(13) : rng.int(400);
  return { bytes: rng.bytes(n), fds: fakeFds(rng.int(3)) };
}

/** A well-framed message with a known id and a random payload: reaches the per-request checks. */
function structured(rng: Rng): Sent {
  const size = rng.int(3) === 0 ? rng.int(300) : rng.pick(SIZES);
  const body = rng.bytes(size);
  // Small numbers in the fields that are indexes or counts, so some pass.
  if (size >= 8 && rng.int(2) === 0) body.writeUInt32LE(rng.int(10), 0);
  if (size >= 8 && rng.int(2) === 0) body.writeUInt32LE(rng.pick([0, 1, 2, 3, 256, 1024]), 4);
  if (size >= 8 && rng.int(3) === 0) body.fill(0, 5, Math.min(size, 40));
  const flags = rng.int(8) === 0 ? rng.int(32) : rng.pick([0x1, 0x9]);
  return { bytes: encodeMessage(rng.pick(IDS), flags, body), fds: fakeFds(rng.int(10)) };
}

/** A valid message, damaged: flipped bytes, cut short, extended, fds dropped or added. */
function mutated(rng: Rng): Sent {
  const sample = rng.pick(encodedSamples);
  let bytes = Buffer.from(sample.bytes);
  let fds = [...sample.fds];
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(6)) {
      case 0:
      case 1: {
        const flips = 1 + rng.int(3);
        for (let f = 0; f < flips && bytes.length > 0; f++) bytes[rng.int(bytes.length)] = rng.int(256);
        break;
      }
      case 2:
        bytes = bytes.subarray(0, rng.int(bytes.length + 1));
        break;
      case 3:
        bytes = Buffer.concat([bytes, rng.bytes(1 + rng.int(64))]);
        break;
      case 4:
        fds = rng.int(2) === 0 ? fds.slice(0, rng.int(fds.length + 1)) : [...fds, ...fakeFds(1 + rng.int(3), 100)];
        break;
      default:
        fds = fakeFds(rng.int(10), 200);
    }
  }
  // Keep the header's size honest half of the time, so the payload checks run.
  if (bytes.length >= 12 && rng.int(2) === 0) bytes.writeUInt32LE(bytes.length - 12, 8);
  return { bytes, fds };
}

/** Feed the bytes in 1-3 chunks, the fds with one of them; the Framer may refuse an oversized header. */
function frames(rng: Rng, sent: Sent): Frame[] | 'framer-refused' {
  const framer = new Framer(VHOST_USER_FRAME);
  const cuts = [0, ...Array.from({ length: rng.int(3) }, () => rng.int(sent.bytes.length + 1)).sort((a, b) => a - b), sent.bytes.length];
  const withFds = rng.int(cuts.length - 1);
  const out: Frame[] = [];
  try {
    for (let c = 0; c + 1 < cuts.length; c++) {
      const data = sent.bytes.subarray(cuts[c], cuts[c + 1]);
      if (data.length === 0 && c !== withFds) continue;
      out.push(...framer.push({ data, fds: c === withFds ? sent.fds : [] }));
    }
  } catch (err) {
    if (err instanceof ZiuError && err.code === 'ERR_ZIU_BAD_MESSAGE') return 'framer-refused';
    throw err;
  }
  return out;
}

const canon = (x: unknown): string => JSON.stringify(x, (_, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));

/** Every invariant of one decode; returns what went wrong, or the outcome's name. */
function check(frame: Frame, maxQueues: number): { outcome: string } | { failure: string } {
  let result: Request | DecodeError;
  try {
    result = decodeRequest(frame, { maxQueues });
  } catch (err) {
    return { failure: `decodeRequest threw: ${String(err)}` };
  }
  if (result instanceof DecodeError) {
    if (!KINDS.includes(result.kind)) return { failure: `unknown kind ${result.kind}` };
    if (!result.message.startsWith('vhost-user ')) return { failure: `message '${result.message}'` };
    if (canon(result.fds) !== canon(frame.fds)) return { failure: `error kept fds ${canon(result.fds)} of ${canon(frame.fds)}` };
    return { outcome: result.kind };
  }
  // A request holds exactly the frame's fds, none invented and none dropped.
  if (canon(requestFds(result)) !== canon(frame.fds)) {
    return { failure: `${result.type} holds fds ${canon(requestFds(result))} of ${canon(frame.fds)}` };
  }
  // What was accepted re-encodes (the encoder's own check passes) and decodes to the same request.
  try {
    const again = encodeRequest(result);
    const back = decodeRequest(frameOf(again.bytes, again.fds), { maxQueues });
    if (canon(back) !== canon(result)) return { failure: `${result.type} did not survive a re-encode: ${canon(back)}` };
  } catch (err) {
    return { failure: `${result.type} re-encode threw: ${String(err)}` };
  }
  return { outcome: 'valid' };
}

describe('fuzz: decodeRequest over the Framer', () => {
  it(`${CASES} random and mutated messages never throw and never lose an fd (seed ${SEED})`, () => {
    const before = openFds();
    const tally = new Map<string, number>();
    const failures: string[] = [];
    for (let i = 0; i < CASES; i++) {
      const seed = SEED + i;
      const rng = new Rng(seed);
      const mode = rng.int(10);
      const sent = mode < 2 ? randomBytes(rng) : mode < 5 ? structured(rng) : mutated(rng);
      let got: Frame[] | 'framer-refused';
      try {
        got = frames(rng, sent);
      } catch (err) {
        failures.push(`seed ${seed}: the Framer threw ${String(err)}`);
        continue;
      }
      if (got === 'framer-refused') {
        tally.set(got, (tally.get(got) ?? 0) + 1);
        continue;
      }
      for (const frame of got) {
        if (frame.fds.some((fd) => fd < FAKE_FD)) failures.push(`seed ${seed}: a real fd number appeared`);
        const r = check(frame, rng.pick([1, 2, 4, 256]));
        if ('failure' in r) failures.push(`seed ${seed}: ${r.failure}`);
        else tally.set(r.outcome, (tally.get(r.outcome) ?? 0) + 1);
      }
      if (failures.length >= 20) break;
    }
    expect(failures).toEqual([]);
    // The generators reach every outcome, valid requests included.
    if (CASES >= 10_000) {
      for (const outcome of [...KINDS, 'valid', 'framer-refused']) expect(tally.get(outcome) ?? 0, outcome).toBeGreaterThan(100);
    }
    expect(openFds()).toBe(before);
  });
});
