import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { hasCode, ZiuError } from '../errors.js';
import { PAGE_2M, PAGE_SIZES, pageSizeInfo, unmount, type HugepageHost } from '../hugepages/index.js';
import { logger, type Logger } from '../log.js';
import { MemFileStore, type Backing } from '../memfile/index.js';
import { startProbe, type RunningProbe } from '../probe/index.js';
import { checkInteger, LIMITS } from '../probe/options.js';
import { launchDetached, processAlive, stopProcess } from '../upgrade/launch.js';
import type { UpgradeReport } from '../upgrade/report.js';
import { upgrade } from '../upgrade/upgrade.js';

// dist/demo/demo.js and src/demo/demo.ts sit at the same depth below the package root.
const DATAPATH_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ziu-datapath.js');

/** The tap uplink the demo creates as root; non-persistent, so it goes with the last fd to it. */
export const DEMO_TAP = 'ziudemo0';
/** Memory per datapath instance. */
export const DEMO_MEM = 64 * 2 ** 20;
export const DEMO_DEFAULTS = { rate: 10_000, size: 64, trafficMs: 1000 } as const;

const OLD_MEM = 'demo-old';
const READY_TIMEOUT_MS = 10_000;
// The instance serving at the end gets this long to close its ports and exit on SIGTERM.
const STOP_GRACE_MS = 3000;
// A non-persistent tap is unregistered when its fd closes; give the kernel a moment.
const TAP_GONE_MS = 2000;

export interface DemoOptions {
  host: HugepageHost;
  /** root: hugepages and a tap; otherwise tmpfs memory and no tap */
  privileged: boolean;
  /** probe frames per second */
  rate?: number;
  /** probe frame bytes */
  size?: number;
  /** traffic before and again after the upgrade */
  trafficMs?: number;
  /** a parent for the demo's own temp dir; it must be on tmpfs (default /dev/shm) */
  baseDir?: string;
  /** one line per step, for a person watching */
  progress?: (line: string) => void;
  /** stop early (SIGINT); everything is still cleaned up */
  signal?: AbortSignal;
  log?: Logger;
}

export interface DemoTraffic {
  sent: number;
  received: number;
  lost: number;
  maxGapUs: number;
}

export interface DemoMode {
  root: boolean;
  memory: Backing;
  tap: boolean;
  /** why the demo runs with less than hugepages and a tap, if it does */
  note: string | null;
}

/** What was made and is verifiably gone at the end; problems name what is not. */
export interface DemoCleanup {
  processes: number;
  memFiles: number;
  tap: boolean;
  tempDir: boolean;
  problems: string[];
}

export type DemoReport = UpgradeReport & { traffic: DemoTraffic; mode: DemoMode; dir: string; cleanup: DemoCleanup };

/**
 * The whole story on one host: a datapath with two vhost-user ports, the
 * probe sending between them, one upgrade under that traffic, and then
 * nothing left behind: processes, mem files (and the hugepages reserved for
 * them), the hugetlbfs mount, the tap and the temp dir. Everything the demo
 * makes lives in one fresh directory, so it never touches /run/ziu,
 * /dev/shm/ziu or ziu's shared hugetlbfs mounts.
 */
export async function runDemo(o: DemoOptions): Promise<DemoReport> {
  const rate = checkInteger(o.rate ?? DEMO_DEFAULTS.rate, LIMITS.rate.min, LIMITS.rate.max, 'rate', ' frames per second');
  const size = checkInteger(o.size ?? DEMO_DEFAULTS.size, LIMITS.size.min, LIMITS.size.max, 'size', ' bytes');
  const trafficMs = checkInteger(o.trafficMs ?? DEMO_DEFAULTS.trafficMs, 0, 600_000, 'trafficMs', ' ms');
  const say = o.progress ?? (() => {});
  const log = o.log ?? logger('demo');
  const tap = o.privileged && fs.existsSync('/dev/net/tun');
  if (tap && tapExists()) {
    throw new ZiuError('ERR_ZIU_DEMO_BUSY', `a network interface named ${DEMO_TAP} exists already: is another 'ziu demo' running? (ip link show ${DEMO_TAP})`);
  }

  // The issue asks for memfd memory without root, but a memfd lives only in the
  // process that holds it, and the datapath is another process that takes a
  // path (--mem-file): so tmpfs files, in the demo's dir on /dev/shm.
  const dir = fs.mkdtempSync(path.join(o.baseDir ?? '/dev/shm', 'ziu-demo-'));
  const store = new MemFileStore({
    host: o.host,
    privileged: o.privileged,
    stateDir: dir,
    tmpfsDir: path.join(dir, 'shm'),
    hugetlbfsDir: (p) => path.join(dir, `hugepages-${pageSizeInfo(p).name}`),
  });
  const upgradeId = randomUUID().slice(0, 8);
  const s: Started = { pids: [], serving: null, probe: null, memFiles: [], tap: false };
  let outcome: Omit<DemoReport, 'cleanup'> | undefined;
  let failure: unknown;
  try {
    outcome = await demo();
  } catch (err) {
    failure = err;
  }
  say('cleaning up');
  const cleanup = await cleanUp(s, { store, dir, host: o.host, log, upgradeId });
  for (const p of cleanup.problems) log.error(`demo cleanup: ${p}`);
  if (failure !== undefined || outcome === undefined) {
    say(cleanup.problems.length === 0 ? 'everything the demo started is stopped and removed' : `not cleaned up: ${cleanup.problems.join('; ')}`);
    throw failure;
  }
  return { ...outcome, cleanup };

  async function demo(): Promise<Omit<DemoReport, 'cleanup'>> {
    say(`ziu demo: working in ${dir}`);
    const mem = await store.create({ instance: OLD_MEM, role: 'packets', size: DEMO_MEM, pageSize: PAGE_2M, backing: 'auto' });
    s.memFiles.push(OLD_MEM);
    const note = !o.privileged ? 'not root: tmpfs memory instead of hugepages, no tap' : mem.backing !== 'hugetlbfs' ? (mem.notes[0] ?? 'no 2M hugepages: tmpfs memory') : null;
    if (note) say(note);
    say(`memory: ${DEMO_MEM / 2 ** 20} MiB ${mem.backing} for the old instance${mem.notes.length > 0 ? ` (${mem.notes.join('; ')})` : ''}`);

    const control = path.join(dir, 'dp.sock');
    const ports = ['--vhost-user', `vm1=${path.join(dir, 'vm1.sock')}`, '--vhost-user', `vm2=${path.join(dir, 'vm2.sock')}`, ...(tap ? ['--tap', `uplink=${DEMO_TAP}`] : [])];
    const datapath = [process.execPath, DATAPATH_BIN, '--control', control];
    const old = await launchDetached({
      argv: [...datapath, '--mem-file', mem.path!, ...ports, '--instance', 'demo-old'],
      readyTimeoutMs: READY_TIMEOUT_MS,
      logFile: path.join(dir, 'old.log'),
      notifyPath: path.join(dir, 'old.notify.sock'),
      log,
      ...(o.signal ? { signal: o.signal } : {}),
      onSpawn: (pid) => {
        s.pids.push(pid);
        s.serving = pid;
        s.tap = tap;
      },
    });
    say(`old datapath: pid ${old.pid}, vhost-user ports vm1 and vm2${tap ? `, tap uplink ${DEMO_TAP}` : ''}`);

    // 1024 descriptors: at 10 kpps they ride out 100 ms of a descheduled datapath while the
    // new instance starts beside it on a small host (the switchover itself is far shorter).
    s.probe = await startProbe({ tx: path.join(dir, 'vm1.sock'), rx: path.join(dir, 'vm2.sock'), rate, size, ringSize: 1024 });
    say(`traffic: ${rate} frames/s of ${size} bytes, vm1 -> vm2, for ${trafficMs} ms before the upgrade`);
    await pause(trafficMs, o.signal);

    say(`upgrade ${upgradeId}: starting a new instance beside the old one and handing it every connection`);
    const report = await upgrade({ control, newCommand: [...datapath, ...ports, '--instance', 'demo-new'], mem: DEMO_MEM, pageSize: PAGE_2M, stateDir: dir, store, upgradeId });
    if (report.new) s.pids.push(report.new.pid);
    if (report.memory) s.memFiles.push(`upgrade-${upgradeId}`);
    // After a commit the new instance serves; otherwise the old one still does (or, after a failed rollback, maybe neither).
    s.serving = report.result === 'committed' ? (report.new?.pid ?? null) : report.result === 'failed' ? null : old.pid;
    say(`upgrade ${upgradeId}: ${report.result.replace('_', ' ')}${s.serving !== null ? `; traffic goes on through pid ${s.serving} for ${trafficMs} ms` : ''}`);
    await pause(trafficMs, o.signal);

    const probe = s.probe;
    s.probe = null;
    const p = await probe.stop();
    return {
      ...report,
      traffic: { sent: p.sent, received: p.received, lost: p.lost, maxGapUs: p.maxGapUs },
      mode: { root: o.privileged, memory: mem.backing, tap, note },
      dir,
    };
  }
}

/** What the demo started so far: the finally block undoes exactly this. */
interface Started {
  pids: number[];
  /** the instance that forwards now: stopped gently, the others killed */
  serving: number | null;
  probe: RunningProbe | null;
  /** mem file instances created in the demo's store */
  memFiles: string[];
  tap: boolean;
}

async function cleanUp(
  s: Started,
  c: { store: MemFileStore; dir: string; host: HugepageHost; log: Logger; upgradeId: string },
): Promise<DemoCleanup> {
  const problems: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`);
    }
  };
  if (s.probe) {
    const probe = s.probe;
    await attempt('stopping the probe', () => probe.stop());
  }
  // SIGTERM lets the serving datapath close its ports and exit; any other is only in the way.
  for (const pid of s.pids) await attempt(`stopping pid ${pid}`, () => stopProcess(pid, pid === s.serving ? STOP_GRACE_MS : 0));
  const alive = s.pids.filter((pid) => processAlive(pid));
  for (const pid of alive) problems.push(`process ${pid} is still running`);

  // Only now: a file still mapped by a datapath would keep its hugepages.
  // The upgrade removes the old instance's memory itself on commit, and the new one's on rollback.
  for (const instance of [OLD_MEM, `upgrade-${c.upgradeId}`]) {
    await attempt(`removing mem files of ${instance}`, async () => {
      try {
        await c.store.remove(instance);
      } catch (err) {
        if (!hasCode(err, 'ERR_ZIU_NO_MEMFILE')) throw err;
      }
    });
  }
  let left: string[] = [];
  await attempt('listing mem files', async () => {
    left = (await c.store.list()).map((f) => f.instance);
  });
  for (const inst of new Set(left)) problems.push(`mem files of ${inst} remain`);

  for (const { bytes } of PAGE_SIZES) {
    const mount = c.store.hugetlbfsDir(bytes);
    if (fs.existsSync(mount)) await attempt(`unmounting ${mount}`, () => unmount(c.host, mount));
  }
  await attempt(`removing ${c.dir}`, async () => fs.rmSync(c.dir, { recursive: true, force: true }));

  let tapGone = true;
  if (s.tap) {
    const deadline = Date.now() + TAP_GONE_MS;
    while (tapExists() && Date.now() < deadline) await sleep(20);
    tapGone = !tapExists();
    if (!tapGone) problems.push(`tap ${DEMO_TAP} still exists`);
  }
  c.log.info({ pids: s.pids, memFiles: s.memFiles, problems }, 'demo cleaned up');
  return {
    processes: s.pids.length - alive.length,
    memFiles: s.memFiles.filter((m) => !left.includes(m)).length,
    tap: s.tap && tapGone,
    tempDir: !fs.existsSync(c.dir),
    problems,
  };
}

function tapExists(): boolean {
  return fs.existsSync(`/sys/class/net/${DEMO_TAP}`);
}

/** sleep, or end early with the abort's reason */
async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch (err) {
    if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new ZiuError('ERR_ZIU_ABORTED', 'the demo was interrupted', { cause: err });
    throw err;
  }
}
