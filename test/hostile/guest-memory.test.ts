/**
 * Issue 10, guest memory: a frontend that does something bad with the memory
 * it hands the datapath, against a real ziu-datapath process, while a real
 * probe runs frames through two other ports of it (a -> b). Each case asserts
 * that the other ports lose nothing, that `status` answers within 100 ms
 * throughout, that the datapath's fd count comes back to its baseline, and
 * that a log line names the port and the reason.
 *
 * - truncation: the frontend ftruncates its memfd to 0 after SET_MEM_TABLE
 *   while its rings run (the old datapath died of SIGBUS);
 * - a region on a FUSE filesystem whose server never answers a READ (root
 *   only: it mounts; the old datapath hung in MAP_POPULATE);
 * - per-port caps: more bytes or more regions than --guest-mem-max and
 *   --guest-regions-max allow (the old datapath mapped and prefaulted them).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.js';
import { check, native } from '../../src/native/index.js';
import { startProbe, type RunningProbe } from '../../src/probe/index.js';
import type { MappedRegion } from '../../src/vhost/index.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { openFds } from '../helpers/fds.js';
import { HostileFrontend, UA } from './mem-frontend.js';
import { mountHungFuse, type HungFuse } from './fuse.js';
import { closeFds } from '../../src/native/fds.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MiB = 1n << 20n;
const GUEST = 2n * MiB;
const STATUS_MS = 100;
const isRoot = process.getuid?.() === 0;

interface PortStatus {
  name: string;
  connected: boolean;
  lastError: string | null;
  counters: { dropsNoBuffer: number; rxPackets: number } | null;
}

let dp: RunningDatapath;
let ctl: ControlClient;
let probe: RunningProbe;
let logFile: string;

async function ports(): Promise<PortStatus[]> {
  const r = await ctl.call<{ ok: true; status: { ports: PortStatus[] } }>({ op: 'status' });
  return r.body.status.ports;
}
const port = async (name: string): Promise<PortStatus> => (await ports()).find((p) => p.name === name)!;

/** Asks for status every 20 ms while a case runs; the slowest answer (or the one still pending) is the figure. */
class StatusWatch {
  slowestMs = 0;
  answers = 0;
  failures: string[] = [];
  #running = true;
  #pendingSince = 0;
  #loop: Promise<void>;
  constructor() {
    this.#loop = (async () => {
      while (this.#running) {
        this.#pendingSince = Date.now();
        try {
          await ctl.call({ op: 'status' });
          this.answers++;
        } catch (err) {
          this.failures.push((err as Error).message);
          return;
        } finally {
          this.slowestMs = Math.max(this.slowestMs, Date.now() - this.#pendingSince);
          this.#pendingSince = 0;
        }
        await sleep(20);
      }
    })();
  }
  async stop(): Promise<void> {
    this.#running = false;
    // An answer that never comes is as slow as the whole wait for it.
    const settled = await Promise.race([this.#loop.then(() => true), sleep(2000).then(() => false)]);
    if (!settled) {
      this.slowestMs = Math.max(this.slowestMs, Date.now() - this.#pendingSince);
      this.failures.push(`status unanswered for ${Date.now() - this.#pendingSince} ms`);
    }
  }
}

/** The datapath's log lines (pino JSON) about port `name` that match `re`. */
function logLines(name: string, re: RegExp): string[] {
  return fs
    .readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .filter((l) => (JSON.parse(l) as { port?: string }).port === name && re.test(l));
}

/** What every case asserts around its bad deed. */
interface Case {
  watch: StatusWatch;
  fds: number;
  lost: number;
  received: number;
  bDrops: number;
  own: number[];
  fe: HostileFrontend | null;
}
let c: Case | null = null;

async function begin(): Promise<Case> {
  const b = await port('b');
  const s = probe.stats();
  c = { watch: new StatusWatch(), fds: openFds(dp.pid), lost: s.lost, received: s.received, bDrops: b.counters!.dropsNoBuffer, own: [], fe: null };
  return c;
}

/** Our fds for the case; closed in afterEach. */
function own(x: Case, fd: number): number {
  x.own.push(fd);
  return fd;
}

/** The frontend is gone: every check that does not depend on the case. */
async function finish(x: Case, reason: RegExp): Promise<void> {
  x.fe?.close();
  // The datapath sees the frontend go, closes what it had of it.
  for (const deadline = Date.now() + 3000; Date.now() < deadline; await sleep(20)) {
    if (!(await port('h')).connected && openFds(dp.pid) <= x.fds) break;
  }
  await sleep(200); // frames keep flowing a little longer: loss shows up after the fact too
  await x.watch.stop();
  const b = await port('b');
  const s = probe.stats();
  expect(x.watch.failures, 'status failures').toEqual([]);
  expect(x.watch.slowestMs, `slowest status answer (${x.watch.answers} answers)`).toBeLessThan(STATUS_MS);
  expect(s.lost - x.lost, 'frames the probe lost a -> b').toBe(0);
  expect(s.duplicated, 'frames duplicated').toBe(0);
  expect(s.received, 'frames still arriving').toBeGreaterThan(x.received);
  expect(b.counters!.dropsNoBuffer - x.bDrops, 'frames b dropped').toBe(0);
  expect(openFds(dp.pid), 'datapath fds').toBe(x.fds);
  expect(logLines('h', reason), `a log line about port h matching ${reason}`).not.toEqual([]);
}

beforeAll(async () => {
  dp = await startDatapath({
    ports: { a: 'server', b: 'server', h: 'server' },
    extraArgs: ['--guest-mem-max', '512M', '--guest-regions-max', '2'],
    logFile: (logFile = path.join(fs.mkdtempSync('/dev/shm/ziu-hostile-'), 'datapath.log')),
  });
  ctl = await ControlClient.connect(dp.control);
  probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 2000, size: 64 });
  for (const deadline = Date.now() + 5000; probe.stats().received === 0; await sleep(10)) {
    if (Date.now() > deadline) throw new Error('the probe received nothing before the hostile frontends');
  }
}, 30_000);

afterAll(async () => {
  await probe?.stop().catch(() => {});
  ctl?.close();
  await dp?.stop();
  if (logFile) fs.rmSync(path.dirname(logFile), { recursive: true, force: true });
}, 30_000);

beforeEach(() => {
  c = null;
});

afterEach(async () => {
  if (!c) return;
  c.fe?.close();
  await c.watch.stop();
  closeFds(c.own);
  c = null;
});

/** A memfd of `bytes`, sparse. */
function memfd(x: Case, bytes: bigint): number {
  const fd = own(x, check(native.memfdCreate('ziu-hostile-guest', 0), 'memfd_create'));
  check(native.ftruncate(fd, Number(bytes)), 'ftruncate', { fd });
  return fd;
}

const region = (fd: number, size = GUEST, offset = 0n, gpa = 0n, uaddr = UA): MappedRegion => ({ guestPhysAddr: gpa, memorySize: size, userspaceAddr: uaddr, mmapOffset: offset, fd });

describe('a hostile frontend and its guest memory', () => {
  it('truncates its memfd under running rings: that port loses its connection, nothing else happens', async () => {
    const x = await begin();
    const mem = memfd(x, GUEST);
    const kick: [number, number] = [own(x, check(native.eventfd(0, false), 'eventfd')), own(x, check(native.eventfd(0, false), 'eventfd'))];
    const call: [number, number] = [own(x, check(native.eventfd(0, false), 'eventfd')), own(x, check(native.eventfd(0, false), 'eventfd'))];
    const fe = (x.fe = await HostileFrontend.connect(dp.sock['h']!));
    await fe.negotiate();
    expect(await fe.setMemTable([region(mem)])).toBe(0n);
    await fe.startRings(kick, call);
    // The worker looks at every running ring in every pass; the probe keeps it passing.
    await sleep(50);
    expect(fe.closed).toBe(false);

    check(native.ftruncate(mem, 0), 'ftruncate', { fd: mem });
    check(native.eventfdWrite(kick[1], 1n), 'eventfdWrite');

    expect(await fe.closedWithin(2000), 'the datapath closes the connection of the port whose memory broke').toBe(true);
    expect((await port('h')).lastError).toMatch(/guest memory fault: memory region 0 .*truncated/);
    await finish(x, /guest memory fault: memory region 0 \(gpa 0x0, 2M\), 0x[0-9a-f]+ bytes in: its file no longer backs it/);
  }, 20_000);

  it.skipIf(!isRoot)('offers a region on FUSE whose server never answers a read: refused before a single fault', async () => {
    const x = await begin();
    let fuse: HungFuse | null = null;
    let file: fs.promises.FileHandle | null = null;
    try {
      fuse = await mountHungFuse('/tmp', Number(GUEST));
      // The server is this process: open and close (FLUSH) go through libuv's pool, never this thread.
      file = await fs.promises.open(fuse.file, 'r+');
      const fe = (x.fe = await HostileFrontend.connect(dp.sock['h']!));
      await fe.negotiate();
      const ack = await fe.setMemTable([region(file.fd)]);
      expect(ack === null || ack !== 0n, `SET_MEM_TABLE answered ${ack}`).toBe(true);
      expect(fuse.reads, 'READs the datapath sent the FUSE server').toBe(0);
      expect((await port('h')).lastError).toMatch(/memory region 0 is .*fuse\.ziu-hung.*page faults can block/);
      await finish(x, /memory region 0 is .*on fuse\.ziu-hung, whose page faults can block/);
      expect(fuse.reads).toBe(0);
    } finally {
      await file?.close();
      await fuse?.close();
    }
  }, 20_000);
  if (!isRoot) it('FUSE case skipped: mounting a FUSE filesystem needs root', () => {});

  it('sends more guest memory than the port may map: refused, nothing mapped or prefaulted', async () => {
    const x = await begin();
    const big = memfd(x, 1024n * MiB);
    const fe = (x.fe = await HostileFrontend.connect(dp.sock['h']!));
    await fe.negotiate();
    const ack = await fe.setMemTable([region(big, 1024n * MiB)]);
    expect(ack, 'REPLY_ACK of a 1G table under a 512M cap').not.toBe(0n);
    // Nothing faulted in: the old datapath prefaulted (allocated) the whole GiB here.
    expect(check(native.fstat(big), 'fstat').allocated).toBe(0);
    // The connection stays (REPLY_ACK said no) and a table within the cap still works. Its
    // holes are not prefaulted: the old datapath allocated all 256M of it, seconds of status silence.
    const sparse = memfd(x, 256n * MiB);
    expect(await fe.setMemTable([region(sparse, 256n * MiB)])).toBe(0n);
    expect(check(native.fstat(sparse), 'fstat').allocated).toBe(0);
    await finish(x, /1G of guest memory in 1 region: more than this port's cap of 512M \(--guest-mem-max\)/);
  }, 20_000);

  it('sends more regions than the port may map: refused', async () => {
    const x = await begin();
    const mem = memfd(x, 3n * MiB);
    const fe = (x.fe = await HostileFrontend.connect(dp.sock['h']!));
    await fe.negotiate();
    const three = [0n, 1n, 2n].map((i) => region(mem, MiB, i * MiB, i << 32n, UA + (i << 32n)));
    const ack = await fe.setMemTable(three);
    expect(ack, 'REPLY_ACK of 3 regions under a cap of 2').not.toBe(0n);
    expect(await fe.setMemTable(three.slice(0, 2))).toBe(0n);
    await finish(x, /3 memory regions: more than this port's cap of 2 \(--guest-regions-max\)/);
  }, 20_000);
});
