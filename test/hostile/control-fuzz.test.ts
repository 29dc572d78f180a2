/**
 * A live ziu-datapath under a control-socket fuzz: its control socket gets
 * random, half-valid and broken handover messages (bad JSON, wrong ops for
 * the role it is in, unknown fields and types, missing, extra and wrong fds,
 * oversized frames), and now and then a real export/freeze/thaw sequence with
 * a dead-man of a few ms; meanwhile a real probe runs frames between its two
 * ports. The datapath must never exit, lose, duplicate or reorder a frame,
 * or leak an fd, and must answer `status` within 100 ms at the end.
 *
 * Replay: ZIU_FUZZ_SEED=<seed> ZIU_FUZZ_MESSAGES=<n> npx vitest run test/hostile/control-fuzz.test.ts
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeControl } from '../../src/control/protocol.js';
import { OPS } from '../../src/handover/messages/index.js';
import { closeFds } from '../../src/native/fds.js';
import { check, native } from '../../src/native/index.js';
import { encodeLengthPrefixed, LENGTH_PREFIXED, readFrames } from '../../src/net/framing.js';
import { UnixSocket } from '../../src/net/socket.js';
import { startProbe, type RunningProbe } from '../../src/probe/index.js';
import { Peer } from '../../src/upgrade/peer.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { openFds } from '../helpers/fds.js';
import { Rng } from '../vhost/prng.js';

const SEED = Number(process.env['ZIU_FUZZ_SEED'] ?? 0xc0de);
const MESSAGES = Number(process.env['ZIU_FUZZ_MESSAGES'] ?? 100_000);
const REPLAY = `ZIU_FUZZ_SEED=${SEED} ZIU_FUZZ_MESSAGES=${MESSAGES} npx vitest run test/hostile/control-fuzz.test.ts`;
/** Messages in flight before we wait for their replies. */
const BATCH = 64;

const OPS_KNOWN = Object.keys(OPS).filter((op) => op !== 'shutdown');
const FIELDS = [...new Set(Object.values(OPS).flatMap((c) => [...c.request.fields, ...c.reply.fields]))];

/** fd kinds a confused or hostile client might attach. */
function someFd(rng: Rng): number {
  switch (rng.int(6)) {
    case 0:
      return check(native.eventfd(0, false), 'eventfd');
    case 1: {
      const fd = check(native.memfdCreate('ziu-ctl-fuzz', 0), 'memfd_create');
      native.ftruncate(fd, 4096);
      return fd;
    }
    case 2:
      return fs.openSync('/dev/null', 'r');
    case 3:
      return fs.openSync('/', 'r');
    case 4: {
      const [a, b] = check(native.socketpair(native.SOCK_STREAM), 'socketpair');
      native.close(b);
      return a;
    }
    default:
      return fs.openSync('/proc/self/stat', 'r');
  }
}

function value(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 1 ? 8 : 10)) {
    case 0:
      return null;
    case 1:
      return rng.int(2) === 0;
    case 2:
      return rng.pick([0, 1, 2, 3, -1, 1.5, 2 ** 53, -(2 ** 31), 1e308, 60_001]);
    case 3:
      return rng.pick(['', 'x', '0x0', '0x1ffffffffffffffff', '0xzz', 'a/socket', 'handover/baton', 'ERR_ZIU_USAGE', '\u0000', 'é'.repeat(rng.int(40))]);
    case 4:
      return rng.pick([1, 2, 3, '1', 0]);
    case 5:
      return Array.from({ length: rng.int(4) }, () => rng.pick(['a/socket', 'control/listener', 'handover/baton', 'handover/go', 'x']));
    case 6:
      return rng.bytes(rng.int(24)).toString('base64');
    case 7:
      return { cpus: rng.pick([null, [0], [99], [], ['x']]), priority: rng.pick([null, 0, 50, 100, 'hi']) };
    case 8:
      return Object.fromEntries(Array.from({ length: rng.int(4) }, () => [rng.pick(FIELDS), value(rng, depth + 1)]));
    default:
      return Array.from({ length: rng.int(3) }, () => value(rng, depth + 1));
  }
}

/** One message: bytes and fds (ours until sent; closed by us after sending). Expects a reply unless it cuts the connection. */
function message(rng: Rng): { bytes: Buffer; fds: number[]; reply: boolean; family: string } {
  const fds = Array.from({ length: rng.int(10) < 7 ? 0 : 1 + rng.int(4) }, () => someFd(rng));
  const roll = rng.int(100);
  if (roll < 55) {
    const op = rng.int(20) === 0 ? rng.pick(['hold', 'Hello', '', '__proto__', 'constructor', 'toString']) : rng.pick(OPS_KNOWN);
    const doc: Record<string, unknown> = { op };
    for (let i = rng.int(5); i > 0; i--) doc[rng.pick(FIELDS)] = value(rng);
    // A frozen engine thaws on its own within the dead-man bound: keep that bound small.
    if (op === 'freeze') doc['deadManMs'] = 1 + rng.int(20);
    if (fds.length > 0 && rng.int(2) === 0) doc['fds'] = fds.map((_, i) => (rng.int(8) === 0 ? 'dup' : `f${i}`));
    return { bytes: encodeControl(doc), fds, reply: true, family: 'structured' };
  }
  if (roll < 70) return { bytes: encodeLengthPrefixed(rng.bytes(rng.int(200))), fds, reply: true, family: 'bad-json' };
  if (roll < 80) {
    const doc = rng.pick<unknown>([[], 1, 'op', null, true, { op: 7 }, { op: null }, { op: ['hello'] }, { ops: 'hello' }]);
    return { bytes: encodeLengthPrefixed(Buffer.from(JSON.stringify(doc))), fds, reply: true, family: 'not-a-request' };
  }
  if (roll < 99) {
    // Well-formed ops that move the old side's state machine: export, freeze (a dead-man of a few ms), thaw, abort.
    const op = rng.pick(['hello', 'status', 'abort', 'thaw', 'export', 'export', 'freeze', 'freeze']);
    const doc =
      op === 'export' ? { op, format: 1 + rng.int(2), upgradeId: `fuzz-${rng.int(1000)}` } : op === 'freeze' ? { op, deadManMs: 1 + rng.int(20) } : op === 'thaw' && rng.int(2) ? { op, force: true } : { op };
    return { bytes: encodeControl(doc), fds, reply: true, family: `valid ${op}` };
  }
  // A frame that announces more than 16 MiB: the server drops the connection without a reply.
  const b = Buffer.alloc(4);
  b.writeUInt32LE(LENGTH_PREFIXED.maxBody + 1 + rng.int(1000));
  return { bytes: b, fds, reply: false, family: 'oversized' };
}

describe('the control socket under a fuzz of handover messages', () => {
  let dp: RunningDatapath | null = null;
  let probe: RunningProbe | null = null;

  beforeAll(async () => {
    dp = await startDatapath({ ports: { a: 'server', b: 'server' } });
    probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 2000, size: 128, ringSize: 1024 });
  });

  afterAll(async () => {
    await probe?.stop().catch(() => undefined);
    await dp?.stop().catch(() => undefined);
  });

  it(`survives ${MESSAGES} random, broken and out-of-order control messages with fds, and keeps forwarding`, { timeout: 300_000 }, async () => {
    const d = dp!;
    await new Promise((r) => setTimeout(r, 200));
    const fdsBefore = openFds(d.pid);
    const ourFds = openFds();
    const rng = new Rng(SEED);
    const tally: Record<string, number> = {};
    let sent = 0;
    let cuts = 0;

    let sock: UnixSocket | null = null;
    let replies = 0;
    let expected = 0;
    let closed = false;
    /** the family of each message awaiting its reply, in order (one connection answers in order) */
    let waiting: string[] = [];
    const ok: Record<string, number> = {};
    const open = async (): Promise<void> => {
      const s = await UnixSocket.connect(d.control);
      replies = 0;
      expected = 0;
      closed = false;
      waiting = [];
      readFrames(s, LENGTH_PREFIXED, {
        onFrame: (f) => {
          closeFds(f.fds);
          replies++;
          const family = waiting.shift() ?? '?';
          if ((JSON.parse(f.body.toString()) as { ok: boolean }).ok) ok[family] = (ok[family] ?? 0) + 1;
        },
        onClose: () => (closed = true),
      });
      sock = s;
    };
    await open();
    try {
      while (sent < MESSAGES) {
        for (let i = 0; i < BATCH && sent < MESSAGES; i++, sent++) {
          const m = message(rng);
          tally[m.family] = (tally[m.family] ?? 0) + 1;
          await sock!.send(m.bytes, m.fds).catch(() => undefined);
          closeFds(m.fds);
          if (!m.reply) {
            // Reconnect after the server cut us off (it reads the header, refuses, closes).
            cuts++;
            for (const deadline = Date.now() + 2000; !closed && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 1));
            expect(closed, `the server kept a connection that announced an oversized frame (${REPLAY})`).toBe(true);
            sock!.close();
            await open();
            break;
          }
          expected++;
          waiting.push(m.family);
        }
        for (const deadline = Date.now() + 5000; replies < expected && !closed && Date.now() < deadline; ) await new Promise((r) => setImmediate(r));
        expect(closed ? 'closed' : replies, `replies after ${sent} messages (${REPLAY})`).toBe(expected);
        expect(() => process.kill(d.pid, 0), `the datapath died (${REPLAY})`).not.toThrow();
      }
    } finally {
      (sock as UnixSocket | null)?.close();
    }

    // Whatever state the fuzz left: back to serving, then the checks.
    const peer = await Peer.connect('fuzz', d.control);
    try {
      await peer.call('abort').catch(() => undefined);
      await peer.call('thaw', { force: true }).catch(() => undefined);
      const t0 = performance.now();
      const st = await peer.status();
      const ms = performance.now() - t0;
      expect(ms, 'status answers within 100 ms').toBeLessThan(100);
      expect(st.role).toBe('active');
      expect(st.ports.map((p) => [p.name, p.connected, p.disconnects])).toEqual([['a', true, 0], ['b', true, 0]]);
    } finally {
      peer.close();
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(openFds(d.pid), `datapath fds after the fuzz (${REPLAY})`).toBe(fdsBefore);
    expect(openFds(), 'our own fds').toBe(ourFds);
    const r = await probe!.stop();
    probe = null;
    expect(r, REPLAY).toMatchObject({ lost: 0, duplicated: 0, reordered: 0, reconnects: 0 });
    expect(r.received).toBeGreaterThan(0);
    // The state machine really moved: exports and freezes succeeded (and the dead-man thawed each freeze).
    expect(ok['valid export'] ?? 0).toBeGreaterThan(0);
    expect(ok['valid freeze'] ?? 0).toBeGreaterThan(0);
    console.log(`control fuzz: ${sent} messages (${JSON.stringify(tally)}), answered ok: ${JSON.stringify(ok)}, ${cuts} connections cut, seed ${SEED}`);
  });
});
