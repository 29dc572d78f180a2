/**
 * A live ziu-datapath under a vhost-user wire fuzz: one port (`fz`) gets
 * random, half-valid and mutated messages with real fds, over connections
 * that are reconnected whenever the datapath drops them; meanwhile a real
 * probe runs frames between the two other ports (`a` -> `b`), which must lose,
 * duplicate or reorder none of them. The datapath must never exit, answer
 * `status` throughout, not leak fds or mappings, and shut down cleanly.
 *
 * Replay a run: ZIU_FUZZ_SEED=<seed> npx vitest run test/datapath/fuzz.test.ts
 * (ZIU_FUZZ_MESSAGES changes the count, default 10^5). Timing makes a live run
 * only mostly deterministic: the same seed sends the same messages in the same
 * order, but where the datapath cuts a connection can differ.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.js';
import { check, native } from '../../src/native/index.js';
import { readFrames } from '../../src/net/framing.js';
import { UnixSocket } from '../../src/net/socket.js';
import { startProbe, type ProbeReport, type RunningProbe } from '../../src/probe/index.js';
import {
  encodeMessage,
  encodeRequest,
  HEADER_SIZE,
  ProtocolFeature,
  VhostUserRequest,
  VHOST_USER_FRAME,
  VirtioFeature,
  type MappedRegion,
  type Request,
} from '../../src/vhost/index.js';
import { openFds } from '../helpers/fds.js';
import { Rng } from '../vhost/prng.js';

const SEED = Number(process.env['ZIU_FUZZ_SEED'] ?? 0xd47a);
const MESSAGES = Number(process.env['ZIU_FUZZ_MESSAGES'] ?? 100_000);
/** Upper bound on messages per second: the probe and the datapath's worker share 2 cores with us. */
const MAX_RATE = 8_000;
const REPLAY = `ZIU_FUZZ_SEED=${SEED} ZIU_FUZZ_MESSAGES=${MESSAGES} npx vitest run test/datapath/fuzz.test.ts`;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- the fuzzing frontend's memory and fds -------------------------------

/** The frontend's user address of its memory (ring addresses live in this space). */
const UA = 0x7f3c_0000_0000n;
/** The memfd behind every valid region: 1 MiB, zeroed (avail idx 0: the rings never carry frames). */
const GUEST_BYTES = 1n << 20n;
const RING_AREA = 0x40000n;
/** Frontend user address of a second, disjoint region (a later part of the same memfd). */
const UA2 = 0x7f3d_0000_0000n;
const GPA2 = 1n << 32n;

/** fds the fuzzer sends; the datapath gets duplicates, these stay ours. */
interface Pool {
  guest: number;
  events: number[];
}

function openPool(): Pool {
  const guest = check(native.memfdCreate('ziu-fuzz-guest', 0), 'memfd_create');
  check(native.ftruncate(guest, Number(GUEST_BYTES)), 'ftruncate', { fd: guest });
  const events = Array.from({ length: 6 }, () => check(native.eventfd(0, false), 'eventfd'));
  return { guest, events };
}

function closePool(p: Pool): void {
  for (const fd of [p.guest, ...p.events]) native.close(fd);
}

// ---- messages --------------------------------------------------------------

/** One message as written: bytes and the fds that travel with them. */
interface Msg {
  /** what the tally counts: valid, semantic (a wrong value, well encoded), damaged (bytes or fds), structured, random, sync, cut */
  family: string;
  kind: string;
  bytes: Buffer;
  fds: number[];
}

/** The header announces exactly the bytes that follow, within the frame limit: the stream stays in step. */
function framed(m: Msg): boolean {
  return m.bytes.length >= HEADER_SIZE && m.bytes.readUInt32LE(8) === m.bytes.length - HEADER_SIZE && m.bytes.length - HEADER_SIZE <= VHOST_USER_FRAME.maxBody;
}

const IDS = Object.values(VhostUserRequest);
const F = VirtioFeature;
const P = ProtocolFeature;

function ring(q: number): { desc: bigint; avail: bigint; used: bigint } {
  const base = UA + BigInt(q) * RING_AREA;
  return { desc: base, avail: base + 0x20000n, used: base + 0x30000n };
}

/** A table the datapath can map: one region over the whole memfd, or two disjoint halves of it. */
function goodTable(rng: Rng, pool: Pool): MappedRegion[] {
  if (rng.int(3) > 0) return [{ guestPhysAddr: 0n, memorySize: GUEST_BYTES, userspaceAddr: UA, mmapOffset: 0n, fd: pool.guest }];
  const half = GUEST_BYTES / 2n;
  return [
    { guestPhysAddr: 0n, memorySize: half, userspaceAddr: UA, mmapOffset: 0n, fd: pool.guest },
    { guestPhysAddr: GPA2, memorySize: half, userspaceAddr: UA2, mmapOffset: half, fd: pool.guest },
  ];
}

/** The setup a virtio-user frontend sends, with random choices where the protocol allows them. */
function handshake(rng: Rng, pool: Pool): Request[] {
  const nr = (): boolean => rng.int(3) === 0;
  const ev = (): number => rng.pick(pool.events);
  const features = rng.pick([F.VERSION_1 | F.F_PROTOCOL_FEATURES, F.VERSION_1 | F.F_PROTOCOL_FEATURES | F.MRG_RXBUF, F.VERSION_1, F.VERSION_1 | F.MRG_RXBUF]);
  const proto = (features & F.F_PROTOCOL_FEATURES) !== 0n;
  const reqs: Request[] = [{ type: 'SET_OWNER', needReply: nr() }, { type: 'GET_FEATURES', needReply: false }];
  if (proto) {
    reqs.push({ type: 'GET_PROTOCOL_FEATURES', needReply: false });
    reqs.push({ type: 'SET_PROTOCOL_FEATURES', needReply: false, features: rng.pick([P.REPLY_ACK, P.REPLY_ACK | P.MQ | P.STATUS, 0n, P.STATUS]) });
  }
  for (const q of [0, 1]) reqs.push({ type: 'SET_VRING_CALL', needReply: nr(), index: q, fd: rng.int(6) === 0 ? null : ev() });
  reqs.push({ type: 'SET_FEATURES', needReply: nr(), features });
  reqs.push({ type: 'SET_MEM_TABLE', needReply: nr(), regions: goodTable(rng, pool) });
  for (const q of [0, 1]) {
    reqs.push({ type: 'SET_VRING_NUM', needReply: nr(), index: q, num: rng.pick([64, 128, 256, 1024]) });
    reqs.push({ type: 'SET_VRING_BASE', needReply: nr(), index: q, num: rng.int(4) === 0 ? rng.int(65536) : 0 });
    reqs.push({ type: 'SET_VRING_ADDR', needReply: nr(), index: q, flags: 0, ...ring(q), log: 0n });
    reqs.push({ type: 'SET_VRING_KICK', needReply: nr(), index: q, fd: rng.int(6) === 0 ? null : ev() });
  }
  if (proto) for (const q of [0, 1]) reqs.push({ type: 'SET_VRING_ENABLE', needReply: nr(), index: q, enable: rng.int(5) > 0 });
  // Later requests a running device gets.
  const extras: (() => Request)[] = [
    () => ({ type: 'GET_STATUS', needReply: false }),
    () => ({ type: 'SET_STATUS', needReply: nr(), status: rng.pick([0, 1, 3, 7, 0x0f, 0x40]) }),
    () => ({ type: 'NET_SET_MTU', needReply: nr(), mtu: rng.pick([68, 1500, 9000]) }),
    () => ({ type: 'SEND_RARP', needReply: nr(), mac: '52:54:00:12:34:56' }),
    () => ({ type: 'GET_QUEUE_NUM', needReply: false }),
    () => ({ type: 'GET_VRING_BASE', needReply: false, index: rng.int(2) }),
    () => ({ type: 'RESET_OWNER', needReply: nr() }),
    () => ({ type: 'SET_VRING_ERR', needReply: nr(), index: rng.int(2), fd: rng.int(2) ? null : ev() }),
    () => ({ type: 'GET_CONFIG', needReply: false, offset: 0, size: 12, flags: 0 }),
    () => ({ type: 'SET_MEM_TABLE', needReply: nr(), regions: goodTable(rng, pool) }),
    () => ({ type: 'SET_VRING_KICK', needReply: nr(), index: rng.int(2), fd: ev() }),
  ];
  for (let i = rng.int(4); i > 0; i--) reqs.push(rng.pick(extras)());
  return reqs;
}

const valid = (req: Request): Msg => ({ family: 'valid', kind: `valid ${req.type}`, ...encodeRequest(req) });
const broken = (req: Request, what: string): Msg => ({ family: 'semantic', kind: `${what} ${req.type}`, ...encodeRequest(req, { check: false }) });

/** A request made wrong in the way its type can be wrong. */
function semantic(rng: Rng, pool: Pool, req: Request): Msg {
  const ev = (): number => rng.pick(pool.events);
  switch (req.type) {
    case 'SET_MEM_TABLE': {
      const r0 = req.regions[0]!;
      const variants: [string, () => MappedRegion[]][] = [
        ['overlapping gpa', () => [r0, { ...r0, userspaceAddr: UA2, guestPhysAddr: r0.memorySize / 2n }]],
        ['overlapping ua', () => [r0, { ...r0, guestPhysAddr: GPA2, userspaceAddr: UA + 0x1000n }]],
        ['0 regions', () => []],
        ['9 regions', () => Array.from({ length: 9 }, (_, i) => ({ ...r0, guestPhysAddr: BigInt(i) << 32n, userspaceAddr: UA + (BigInt(i) << 32n) }))],
        ['8 regions', () => Array.from({ length: 8 }, (_, i) => ({ ...r0, memorySize: 0x10000n, mmapOffset: BigInt(i) * 0x10000n, guestPhysAddr: BigInt(i) << 32n, userspaceAddr: UA + (BigInt(i) << 32n) }))],
        ['size 0', () => [{ ...r0, memorySize: 0n }]],
        ['user range overflows', () => [{ ...r0, userspaceAddr: 0xffff_ffff_fff0_0000n }]],
        ['huge offset', () => [{ ...r0, mmapOffset: 1n << 62n }]],
        // Mappable, but the fd ends before the region does: touching the rest is SIGBUS, not EFAULT.
        ['larger than its file', () => [{ ...r0, memorySize: 2n * GUEST_BYTES }]],
        ['offset near the end of its file', () => [{ ...r0, memorySize: GUEST_BYTES, mmapOffset: (GUEST_BYTES * 3n) / 4n }]],
        ['eventfd as memory', () => [{ ...r0, fd: ev() }]],
      ];
      const [what, regions] = rng.pick(variants);
      return broken({ ...req, regions: regions() }, what);
    }
    case 'SET_VRING_ADDR': {
      const field = rng.pick(['desc', 'avail', 'used'] as const);
      const at = rng.pick([UA - 0x1000n, UA + GUEST_BYTES, UA + GUEST_BYTES - 0x10n, 0n, 0x1000n, GPA2, UA2 + GUEST_BYTES, BigInt(rng.int(2 ** 31)) * 16n * 0x10000n, req[field] + 2n]);
      return broken({ ...req, [field]: at, ...(rng.int(8) === 0 ? { flags: rng.pick([1, 2, 0x80]) } : {}) }, `ring ${field} at 0x${at.toString(16)}`);
    }
    case 'SET_VRING_NUM':
      return broken({ ...req, num: rng.pick([0, 3, 100, 32768, 65536, 2 ** 31]), index: rng.int(4) === 0 ? 2 : req.index }, 'ring size');
    case 'SET_VRING_KICK':
    case 'SET_VRING_CALL':
    case 'SET_VRING_ERR': {
      const variants: [string, () => Msg][] = [
        ['memfd as eventfd', () => broken({ ...req, fd: pool.guest }, 'memfd as eventfd')],
        ['index', () => broken({ ...req, index: rng.pick([2, 3, 127, 255]) }, 'ring index')],
        // the no-fd bit clear, no fd; the bit set with an fd; two fds
        ['no fd', () => ({ family: 'semantic', kind: `fd missing ${req.type}`, bytes: encodeRequest({ ...req, fd: ev() }).bytes, fds: [] })],
        ['fd with no-fd bit', () => ({ family: 'semantic', kind: `fd with no-fd bit ${req.type}`, bytes: encodeRequest({ ...req, fd: null }).bytes, fds: [ev()] })],
        ['two fds', () => ({ family: 'semantic', kind: `two fds ${req.type}`, bytes: encodeRequest({ ...req, fd: ev() }).bytes, fds: [ev(), ev()] })],
      ];
      return rng.pick(variants)[1]();
    }
    case 'SET_FEATURES':
      return broken({ ...req, features: req.features | rng.pick([F.EVENT_IDX, F.RING_PACKED, F.LOG_ALL, F.IN_ORDER, 1n << 63n]) }, 'features never offered');
    case 'SET_PROTOCOL_FEATURES':
      return broken({ ...req, features: req.features | rng.pick([P.CONFIG, P.CONFIGURE_MEM_SLOTS, P.LOG_SHMFD, 1n << 40n]) }, 'protocol features never offered');
    case 'SET_VRING_BASE':
    case 'GET_VRING_BASE':
    case 'SET_VRING_ENABLE':
      return broken({ ...req, index: rng.pick([2, 3, 256, 0x7fff_ffff, 0xffff_ffff]) }, 'ring index');
    default: {
      // Requests this backend never offered the feature for, with real fds.
      const unsupported: Request[] = [
        { type: 'SET_LOG_BASE', needReply: false, size: 0x1000n, offset: 0n, fd: pool.guest },
        { type: 'SET_LOG_FD', needReply: true, fd: ev() },
        { type: 'ADD_MEM_REG', needReply: true, region: { guestPhysAddr: GPA2, memorySize: 0x1000n, userspaceAddr: UA2, mmapOffset: 0n, fd: pool.guest } },
        { type: 'REM_MEM_REG', needReply: true, region: { guestPhysAddr: 0n, memorySize: GUEST_BYTES, userspaceAddr: UA, mmapOffset: 0n }, strayFd: rng.int(2) ? ev() : null },
        { type: 'GET_MAX_MEM_SLOTS', needReply: false },
        { type: 'SET_CONFIG', needReply: false, offset: 0, flags: 0, data: rng.bytes(1 + rng.int(16)) },
      ];
      return broken(rng.pick(unsupported), 'unsupported');
    }
  }
}

/** Damage the bytes or fds of a message: flips, cuts, extensions, fds added or dropped, header fields. */
function damage(rng: Rng, pool: Pool, m: Msg): Msg {
  let bytes = Buffer.from(m.bytes);
  let fds = [...m.fds];
  const done: string[] = [];
  for (let r = 1 + rng.int(2); r > 0; r--) {
    switch (rng.int(8)) {
      case 0: {
        for (let f = 1 + rng.int(3); f > 0 && bytes.length > 0; f--) {
          const i = rng.int(bytes.length);
          bytes[i] = bytes[i]! ^ (1 << rng.int(8));
        }
        done.push('bit flips');
        break;
      }
      case 1:
        bytes = bytes.subarray(0, rng.int(bytes.length));
        done.push('cut');
        break;
      case 2:
        bytes = Buffer.concat([bytes, rng.bytes(1 + rng.int(64))]);
        done.push('extended');
        break;
      case 3:
        fds = [...fds, ...Array.from({ length: 1 + rng.int(3) }, () => rng.pick(pool.events))];
        done.push('extra fds');
        break;
      case 4:
        fds = fds.slice(0, rng.int(fds.length + 1));
        done.push('fds dropped');
        break;
      case 5:
        if (bytes.length >= 8) bytes.writeUInt32LE(rng.pick([0x0, 0x2, 0x3, 0x5, 0xd, 0x11, 0x101, rng.int(2 ** 32)]), 4);
        done.push('flags');
        break;
      case 6:
        if (bytes.length >= 4) bytes.writeUInt32LE(rng.pick([0, 21, 22, 31, 34, 35, 41, 1000, rng.pick(IDS), rng.int(2 ** 32)]), 0);
        done.push('request id');
        break;
      default:
        if (bytes.length >= 12) bytes.writeUInt32LE(rng.pick([0, 4, 8, 40, 264, 4096, 4097, 0xffff_ffff, rng.int(300)]), 8);
        done.push('size field');
    }
  }
  // Half the time the header tells the truth about the size, so the payload checks run.
  if (bytes.length >= 12 && bytes.length - 12 <= 4096 && rng.int(2) === 0) bytes.writeUInt32LE(bytes.length - 12, 8);
  if (fds.length > 0 && bytes.length === 0) bytes = Buffer.from([rng.int(256)]);
  return { family: 'damaged', kind: `${done.join('+')} ${m.kind}`, bytes, fds };
}

const SIZES = [0, 4, 8, 12, 16, 24, 32, 40, 72, 264, 268, 296, 4096];

/** A valid-looking header: a known, unhandled or random request id, plausible flags and size, a random payload. */
function structured(rng: Rng, pool: Pool): Msg {
  const size = rng.int(3) === 0 ? rng.int(300) : rng.pick(SIZES);
  const body = rng.bytes(size);
  if (size >= 8 && rng.int(2) === 0) body.writeUInt32LE(rng.int(4), 0);
  if (size >= 8 && rng.int(2) === 0) body.writeUInt32LE(rng.pick([0, 1, 2, 64, 256, 0x100]), 4);
  const id = rng.int(4) === 0 ? rng.pick([0, 21, 26, 31, 34, 35, 41, 99, rng.int(2 ** 32)]) : rng.pick(IDS);
  const flags = rng.int(6) === 0 ? rng.int(64) : rng.pick([0x1, 0x9]);
  const fds = Array.from({ length: rng.int(4) === 0 ? 1 + rng.int(3) : 0 }, () => (rng.int(4) === 0 ? pool.guest : rng.pick(pool.events)));
  return { family: 'structured', kind: `structured id ${id} flags 0x${flags.toString(16)} size ${size}`, bytes: encodeMessage(id, flags, body), fds };
}

function random(rng: Rng, pool: Pool): Msg {
  const n = rng.int(8) === 0 ? 1 + rng.int(12) : 1 + rng.int(rng.int(10) === 0 ? 5000 : 300);
  const fds = rng.int(4) === 0 ? [rng.pick(pool.events)] : [];
  return { family: 'random', kind: `random ${n} bytes`, bytes: rng.bytes(n), fds };
}

/**
 * One round on a connection: a handshake (sometimes cut short or out of
 * order), some messages in it mutated, replaced or joined by random ones.
 */
function script(rng: Rng, pool: Pool): Msg[] {
  const reqs = handshake(rng, pool);
  if (rng.int(8) === 0) {
    for (let s = 1 + rng.int(3); s > 0; s--) {
      const i = rng.int(reqs.length);
      const j = rng.int(reqs.length);
      [reqs[i], reqs[j]] = [reqs[j]!, reqs[i]!];
    }
  }
  if (rng.int(6) === 0) reqs.splice(rng.int(reqs.length));
  // One in three rounds is clean; the others are damaged about once per 8 messages.
  const rate = rng.int(3) === 0 ? 0 : 8;
  const out: Msg[] = [];
  for (const req of reqs) {
    if (rate > 0 && rng.int(rate * 4) === 0) out.push(rng.int(2) ? structured(rng, pool) : random(rng, pool));
    if (rate === 0 || rng.int(rate) > 0) {
      out.push(valid(req));
      continue;
    }
    const how = rng.int(3);
    out.push(how === 0 ? semantic(rng, pool, req) : how === 1 ? damage(rng, pool, valid(req)) : damage(rng, pool, semantic(rng, pool, req)));
  }
  return out;
}

// ---- the fuzzing connection -------------------------------------------------

/** One frontend connection to `fz`: writes, counts the replies, notices the datapath closing it. */
class FuzzConn {
  readonly sock: UnixSocket;
  closed = false;
  /** GET_FEATURES replies: the sync points */
  featureReplies = 0;
  #wake: (() => void) | null = null;

  private constructor(sock: UnixSocket) {
    this.sock = sock;
    readFrames(sock, VHOST_USER_FRAME, {
      onFrame: (f) => {
        for (const fd of f.fds) native.close(fd);
        if (f.header.readUInt32LE(0) === VhostUserRequest.GET_FEATURES) this.featureReplies++;
        this.#wake?.();
      },
      onClose: () => {
        this.closed = true;
        this.#wake?.();
      },
    });
  }

  static async open(p: string): Promise<FuzzConn> {
    return new FuzzConn(await UnixSocket.connect(p));
  }

  /** true once the whole message is in the kernel; false if the datapath closed first. */
  async write(m: Msg): Promise<boolean> {
    if (this.closed) return false;
    try {
      await this.sock.send(m.bytes, m.fds);
      return true;
    } catch {
      return false;
    }
  }

  /** Resolves true when `done()` holds, false after `ms`. */
  async until(done: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
    return true;
  }

  close(): void {
    if (!this.sock.closed) this.sock.close();
    this.closed = true;
  }
}

/** Zero bytes that complete any half-sent message (bodies are at most 4096 bytes), then zero headers: bad flags. */
const FLUSH = Buffer.alloc(2 * (HEADER_SIZE + 4096));
const SYNC = encodeRequest({ type: 'GET_FEATURES', needReply: false });

// ---- the live datapath --------------------------------------------------------

interface Live {
  dir: string;
  paths: { control: string; fz: string; a: string; b: string; mem: string };
  proc: ResultPromise;
  exit: { code: number | null; signal: string | null } | null;
  stderrTail: string[];
  ctl: ControlClient | null;
  probe: RunningProbe | null;
  report: ProbeReport | null;
  pool: Pool | null;
  conn: FuzzConn | null;
}

let live: Live | null = null;
let fdsBefore = 0;

async function status(ctl: ControlClient): Promise<{ ports: Array<Record<string, unknown>> }> {
  const r = await ctl.call<{ ok: true; status: { ports: Array<Record<string, unknown>> } }>({ op: 'status' });
  return r.body.status;
}

const portOf = (s: { ports: Array<Record<string, unknown>> }, name: string): Record<string, unknown> => s.ports.find((p) => p['name'] === name)!;

function mappingsOf(pid: number, name: string): number {
  return fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes(name)).length;
}

async function cleanup(): Promise<void> {
  const l = live;
  if (!l) return;
  l.conn?.close();
  if (l.probe) await l.probe.stop().catch(() => {});
  l.ctl?.close();
  if (l.proc.exitCode === null && l.proc.signalCode === null) {
    l.proc.kill('SIGKILL');
  }
  await l.proc.catch(() => {});
  if (l.pool) closePool(l.pool);
  l.pool = null;
  fs.rmSync(l.dir, { recursive: true, force: true });
  live = null;
}

beforeAll(async () => {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'datapath', 'main.js'))) throw new Error('dist/ is not built: run npx tsc -p tsconfig.build.json');
  fdsBefore = openFds();
  const dir = fs.mkdtempSync('/dev/shm/ziu-fuzz-');
  const paths = {
    control: path.join(dir, 'control.sock'),
    fz: path.join(dir, 'fz.sock'),
    a: path.join(dir, 'a.sock'),
    b: path.join(dir, 'b.sock'),
    mem: path.join(dir, 'mem'),
  };
  await execa('fallocate', ['-l', '64M', paths.mem]);
  const proc = execa(
    process.execPath,
    ['bin/ziu-datapath.js', '--control', paths.control, '--mem-file', paths.mem, '--vhost-user', `fz=${paths.fz}`, '--vhost-user', `a=${paths.a}`, '--vhost-user', `b=${paths.b}`],
    { cwd: ROOT, env: { ZIU_LOG_LEVEL: 'warn' }, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', buffer: false, reject: false },
  );
  const l: Live = { dir, paths, proc, exit: null, stderrTail: [], ctl: null, probe: null, report: null, pool: null, conn: null };
  live = l;
  proc.on('exit', (code, signal) => (l.exit = { code, signal }));
  let partial = '';
  proc.stderr?.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    l.stderrTail.push(...lines);
    if (l.stderrTail.length > 400) l.stderrTail.splice(0, l.stderrTail.length - 200);
  });
  const deadline = Date.now() + 10_000;
  while (l.ctl === null) {
    if (l.exit) throw new Error(`ziu-datapath exited at start (${JSON.stringify(l.exit)}):\n${l.stderrTail.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`ziu-datapath never opened its control socket:\n${l.stderrTail.join('\n')}`);
    try {
      l.ctl = await ControlClient.connect(paths.control);
    } catch {
      await sleep(20);
    }
  }
  l.probe = await startProbe({ tx: paths.a, rx: paths.b, rate: 2000, size: 64 });
  while (l.probe.stats().received === 0) {
    if (Date.now() > deadline) throw new Error('the probe received nothing from the well-behaved pair before the fuzz');
    await sleep(10);
  }
  l.pool = openPool();
}, 20_000);

afterAll(cleanup, 20_000);

describe(`live ziu-datapath under a vhost-user fuzz (seed ${SEED})`, () => {
  it(`survives ${MESSAGES} random and mutated messages on one port and keeps forwarding on the others`, async () => {
    const l = live!;
    const ctl = l.ctl!;
    const probe = l.probe!;
    const pool = l.pool!;
    const pid = l.proc.pid!;
    const rng = new Rng(SEED);
    const failures: string[] = [];
    const lastSent: string[] = [];
    const tally = new Map<string, number>();
    let written = 0;
    let connections = 0;
    let refused = 0;
    let droppedByDatapath = 0;
    let statusAnswers = 0;
    /** when the probe saw sequence gaps: lines up a loss with the fuzz connection of the moment */
    const lossAt: string[] = [];

    const remember = (connNo: number, m: Msg, ok: boolean): void => {
      lastSent.push(`#${connNo} ${ok ? 'sent' : 'not sent'} ${m.kind}: ${m.bytes.length} bytes, ${m.fds.length} fds, ${m.bytes.subarray(0, 48).toString('hex')}`);
      if (lastSent.length > 40) lastSent.shift();
      if (!ok) return;
      written++;
      tally.set(m.family, (tally.get(m.family) ?? 0) + 1);
    };
    const context = (): string =>
      [`seed ${SEED}; replay: ${REPLAY}`, 'last messages:', ...lastSent, 'datapath stderr (tail):', ...l.stderrTail.slice(-30)].join('\n');

    // The datapath's fds with no fuzz connection up: the baseline for the leak check.
    const dpFdsStart = openFds(pid);
    // What the pair lost before the fuzz began: startProbe can start sending before the datapath has
    // processed its last SET_VRING_ENABLE, which goes without need_reply (src/probe/frontend.ts), so
    // a few frames may go at the very start. Every frame lost from here on is the fuzz's doing.
    const bAtStart = portOf(await status(ctl), 'b')['counters'] as { dropsNoBuffer: number };
    const probeAtStart = probe.stats();
    let dpFdsMax = dpFdsStart;

    // Watchdog, every second: the process lives, status answers, frames keep arriving.
    let fuzzing = true;
    const watchdog = (async () => {
      let received = probe.stats().received;
      let lost = probe.stats().lost;
      let pending: Promise<unknown> | null = null;
      let pendingSince = 0;
      let tick = 0;
      while (fuzzing) {
        await sleep(1000);
        if (!fuzzing) break;
        tick++;
        if (l.exit) {
          failures.push(`t=${tick}s: ziu-datapath exited ${JSON.stringify(l.exit)}`);
          return;
        }
        dpFdsMax = Math.max(dpFdsMax, openFds(pid));
        if (pending === null) {
          pendingSince = Date.now();
          pending = status(ctl).then(
            () => {
              statusAnswers++;
              pending = null;
            },
            (err: Error) => {
              failures.push(`t=${tick}s: status failed: ${err.message}`);
              pending = null;
            },
          );
        } else if (Date.now() - pendingSince > 3000) {
          failures.push(`t=${tick}s: status unanswered for ${Date.now() - pendingSince} ms`);
        }
        const lostNow = probe.stats().lost;
        if (lostNow > lost) lossAt.push(`t=${tick}s: ${lostNow - lost} frames missing, during connection #${connections}`);
        lost = lostNow;
        const now = probe.stats().received;
        if (now <= received) failures.push(`t=${tick}s: the probe received no frame in the last second (${now} in all)`);
        received = now;
      }
      await pending;
    })();

    const t0 = Date.now();
    try {
      while (written < MESSAGES && failures.length === 0 && !l.exit) {
        // Pace: never ahead of MAX_RATE.
        const ahead = written / MAX_RATE - (Date.now() - t0) / 1000;
        if (ahead > 0.005) await sleep(ahead * 1000);

        connections++;
        const connNo = connections;
        let conn: FuzzConn;
        try {
          conn = await FuzzConn.open(l.paths.fz);
        } catch (err) {
          failures.push(`connect to fz failed: ${(err as Error).message}`);
          break;
        }
        l.conn = conn;
        // Is it served? The datapath refuses a second connection while it has not yet seen our last one go.
        const sync0: Msg = { family: 'sync', kind: 'sync GET_FEATURES', ...SYNC };
        remember(connNo, sync0, await conn.write(sync0));
        if (!(await conn.until(() => conn.featureReplies >= 1 || conn.closed, 3000))) {
          failures.push(`connection #${connNo}: no answer to GET_FEATURES on a fresh connection within 3 s`);
          break;
        }
        if (conn.featureReplies === 0) {
          refused++;
          conn.close();
          await sleep(1);
          continue;
        }
        let syncs = 1;
        for (let round = 1 + rng.int(3); round > 0 && !conn.closed; round--) {
          const msgs = script(rng, pool);
          const inStep = msgs.every(framed);
          syncs += msgs.filter((m) => m.kind === 'valid GET_FEATURES').length;
          const sent = await Promise.all(msgs.map((m) => conn.write(m)));
          msgs.forEach((m, i) => remember(connNo, m, sent[i]!));
          if (conn.closed) break;
          if (inStep) {
            // Every message was framed: each is answered or refused, so a GET_FEATURES reply or a close must come.
            syncs++;
            const sync: Msg = { family: 'sync', kind: 'sync GET_FEATURES', ...SYNC };
            remember(connNo, sync, await conn.write(sync));
            if (!(await conn.until(() => conn.featureReplies >= syncs || conn.closed, 3000))) {
              failures.push(`connection #${connNo}: neither a reply to GET_FEATURES nor a close within 3 s`);
              break;
            }
          } else {
            // The stream is out of step: zeros finish any message in progress and then make a bad header.
            await conn.write({ family: 'flush', kind: 'flush', bytes: FLUSH, fds: [] });
            if (!(await conn.until(() => conn.closed, 3000))) {
              failures.push(`connection #${connNo}: still open 3 s after ${FLUSH.length} zero bytes`);
              break;
            }
          }
        }
        if (failures.length > 0) break;
        if (conn.closed) {
          droppedByDatapath++;
          continue;
        }
        // Leave: cleanly, in the middle of a message, or right after one that carries fds.
        const end = rng.int(3);
        if (end === 1) {
          const m = valid(rng.pick(handshake(rng, pool)));
          const cut: Msg = { family: 'cut', kind: `half of ${m.kind}`, bytes: m.bytes.subarray(0, 1 + rng.int(m.bytes.length - 1)), fds: m.fds };
          remember(connNo, cut, await conn.write(cut));
        } else if (end === 2) {
          const m = valid({ type: 'SET_VRING_KICK', needReply: false, index: rng.int(2), fd: rng.pick(pool.events) });
          remember(connNo, m, await conn.write(m));
        }
        conn.close();
      }
    } finally {
      fuzzing = false;
      l.conn?.close();
      await watchdog;
    }
    // A dead datapath is the failure that matters; what followed from it (refused connects) is noise.
    if (l.exit) failures.unshift(`ziu-datapath died (${JSON.stringify(l.exit)}) during connection #${connections}, after ${written} messages`);
    const seconds = (Date.now() - t0) / 1000;
    expect(failures, context()).toEqual([]);
    expect(l.exit, context()).toBeNull();

    // Wait for the datapath to see the last connection go; then nothing of it may remain.
    let fz = portOf(await status(ctl), 'fz');
    for (const deadline = Date.now() + 3000; fz['connected'] !== false && Date.now() < deadline; ) {
      await sleep(20);
      fz = portOf(await status(ctl), 'fz');
    }
    const dpFdsEnd = openFds(pid);
    const guestMaps = mappingsOf(pid, 'ziu-fuzz-guest');
    const s = await status(ctl);
    const report = await probe.stop();
    l.report = report;
    const summary = {
      seed: SEED,
      written,
      seconds,
      perSecond: Math.round(written / seconds),
      connections,
      refused,
      droppedByDatapath,
      statusAnswers,
      lossAt,
      beforeFuzz: { sent: probeAtStart.sent, received: probeAtStart.received, lost: probeAtStart.lost, bDropsNoBuffer: bAtStart.dropsNoBuffer },
      kinds: Object.fromEntries([...tally.entries()].sort((x, y) => y[1] - x[1])),
      datapathFds: { start: dpFdsStart, max: dpFdsMax, end: dpFdsEnd },
      fz: { connections: fz['connections'], disconnects: fz['disconnects'], lastError: fz['lastError'] },
      counters: Object.fromEntries(['fz', 'a', 'b'].map((n) => [n, portOf(s, n)['counters']])),
      probe: { sent: report.sent, received: report.received, lost: report.lost, duplicated: report.duplicated, reordered: report.reordered, maxGapUs: report.maxGapUs },
    };
    console.log(`datapath fuzz: ${JSON.stringify(summary, null, 2)}`);

    expect(written).toBeGreaterThanOrEqual(MESSAGES);
    // The datapath really refused things: it cut connections and said why.
    expect(fz['connected']).toBe(false);
    expect(fz['disconnects'] as number).toBeGreaterThan(0);
    expect(droppedByDatapath).toBeGreaterThan(0);
    expect(typeof fz['lastError']).toBe('string');
    // No fd or mapping of any fuzz connection outlives it; the peak stays bounded.
    expect(dpFdsEnd, `datapath fds ${dpFdsStart} before, ${dpFdsEnd} after`).toBeLessThanOrEqual(dpFdsStart + 2);
    expect(dpFdsMax).toBeLessThanOrEqual(dpFdsStart + 40);
    expect(guestMaps, 'mappings of the fuzzer memfd left in the datapath').toBe(0);
    // The well-behaved pair never noticed.
    for (const name of ['a', 'b']) expect(portOf(s, name)).toMatchObject({ connected: true, connections: 1, disconnects: 0 });
    expect(report.received).toBeGreaterThan(report.rate * seconds * 0.9);
    expect(report).toMatchObject({ duplicated: 0, reordered: 0, reconnects: 0 });
    // Not one frame lost from the moment the fuzz began: the probe's own count and the datapath's.
    expect(report.lost, `frames lost: ${probeAtStart.lost} before the fuzz, ${report.lost} in all`).toBe(0);
    expect(bAtStart.dropsNoBuffer).toBe(0);
    expect((portOf(s, 'b')['counters'] as { dropsNoBuffer: number }).dropsNoBuffer).toBe(0);
  }, 85_000);

  it('shuts down on request: exit 0, no socket files, every fd of this process closed', async () => {
    const l = live!;
    expect(l.exit).toBeNull();
    if (l.probe && !l.report) await l.probe.stop();
    const r = await l.ctl!.call<{ ok: true; stopping: boolean }>({ op: 'shutdown' });
    expect(r.body.stopping).toBe(true);
    const result = await l.proc;
    expect(result.exitCode).toBe(0);
    expect(result.signal).toBeUndefined();
    expect(fs.readdirSync(l.dir)).toEqual(['mem']);
    await cleanup();
    // execa's pipes close a moment after the exit.
    for (const deadline = Date.now() + 2000; openFds() !== fdsBefore && Date.now() < deadline; ) await sleep(20);
    expect(openFds()).toBe(fdsBefore);
  }, 20_000);
});
