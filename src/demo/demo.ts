import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { nowMs } from '../bench/traffic.js';
import { phaseAt } from '../bench/window.js';
import { datapathArgv, workerArgs } from '../datapath/bin.js';
import { autoPlacement, describePlacement } from '../sched/placement.js';
import { ZiuError } from '../errors.js';
import { PAGE_2M, type HugepageHost } from '../hugepages/index.js';
import { logger, type Logger } from '../log.js';
import type { Backing } from '../memfile/index.js';
import { startProbe, type RunningProbe } from '../probe/index.js';
import { checkInteger } from '../options.js';
import { LIMITS } from '../probe/options.js';
import { upgrade, type UpgradeReport } from '../upgrade/index.js';
import { Workspace, type WorkspaceCleanup } from '../workspace/workspace.js';

/** The tap uplink the demo creates as root; non-persistent, so it goes with the last fd to it. */
export const DEMO_TAP = 'ziudemo0';
/** Memory per datapath instance. */
export const DEMO_MEM = 64 * 2 ** 20;
export const DEMO_DEFAULTS = { rate: 10_000, size: 64, trafficMs: 1000 } as const;

const OLD_MEM = 'demo-old';
const READY_TIMEOUT_MS = 10_000;
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

/** What the VM side saw over the whole demo; each worst moment with the upgrade step it fell in ('before'/'after' it). */
export interface DemoTraffic {
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  /** slots the VM could not send: its TX ring was full */
  notSent: number;
  maxGapUs: number;
  gapPhase: string;
  /** the largest one-way latency: time a frame waited in the switch */
  maxLatencyUs: number;
  latencyPhase: string;
  /** the largest lateness of the VM's own sender against its schedule */
  maxLatenessUs: number;
  latenessPhase: string;
}

export interface DemoMode {
  root: boolean;
  memory: Backing;
  tap: boolean;
  /** why the demo runs with less than hugepages and a tap, if it does */
  note: string | null;
}

/** What was made and is verifiably gone at the end; problems name what is not. */
export type DemoCleanup = WorkspaceCleanup & { tap: boolean };

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
  const ws = new Workspace({ host: o.host, privileged: o.privileged, prefix: 'ziu-demo-', log, ...(o.baseDir ? { baseDir: o.baseDir } : {}) });
  const dir = ws.dir;
  const upgradeId = randomUUID().slice(0, 8);
  let probe: RunningProbe | null = null;
  let outcome: Omit<DemoReport, 'cleanup'> | undefined;
  let failure: unknown;
  try {
    outcome = await demo();
  } catch (err) {
    failure = err;
  }
  say('cleaning up');
  const cleanup = await cleanUp(ws, probe, tap);
  for (const p of cleanup.problems) log.error(`demo cleanup: ${p}`);
  if (failure !== undefined || outcome === undefined) {
    say(cleanup.problems.length === 0 ? 'everything the demo started is stopped and removed' : `not cleaned up: ${cleanup.problems.join('; ')}`);
    throw failure;
  }
  return { ...outcome, cleanup };

  async function demo(): Promise<Omit<DemoReport, 'cleanup'>> {
    say(`ziu demo: working in ${dir}`);
    const mem = await ws.createMem(OLD_MEM, DEMO_MEM, PAGE_2M);
    const note = !o.privileged ? 'not root: tmpfs memory instead of hugepages, no tap' : mem.backing !== 'hugetlbfs' ? (mem.notes[0] ?? 'no 2M hugepages: tmpfs memory') : null;
    if (note) say(note);
    say(`memory: ${DEMO_MEM / 2 ** 20} MiB ${mem.backing} for the old instance${mem.notes.length > 0 ? ` (${mem.notes.join('; ')})` : ''}`);

    // As vswitches are deployed (root, 2+ CPUs): the worker alone on its CPU at SCHED_FIFO, the VM elsewhere.
    const place = autoPlacement(1, rate);
    if (place.note) say(place.note);
    else say(`placement: packet worker on ${describePlacement(place.worker)}; the VM's threads on ${describePlacement(place.vm)}`);
    const control = ws.path('dp.sock');
    const ports = ['--vhost-user', `vm1=${ws.path('vm1.sock')}`, '--vhost-user', `vm2=${ws.path('vm2.sock')}`, ...(tap ? ['--tap', `uplink=${DEMO_TAP}`] : [])];
    // The new instance's command line (`ziu upgrade --new`); ws.launch builds the old one's.
    const datapath = [...datapathArgv(), '--control', control];
    const old = {
      pid: await ws.launch({
        name: 'old',
        control,
        args: ['--mem-file', mem.path!, ...ports, '--instance', 'demo-old', ...workerArgs(place.worker)],
        readyTimeoutMs: READY_TIMEOUT_MS,
        ...(o.signal ? { signal: o.signal } : {}),
      }),
    };
    ws.servingPid = old.pid;
    say(`old datapath: pid ${old.pid}, vhost-user ports vm1 and vm2${tap ? `, tap uplink ${DEMO_TAP}` : ''}`);

    // 1024 descriptors: at 10 kpps they ride out 100 ms of a descheduled datapath while the
    // new instance starts beside it on a small host (the switchover itself is far shorter).
    probe = await startProbe({ tx: ws.path('vm1.sock'), rx: ws.path('vm2.sock'), rate, size, ringSize: 1024, placement: place.vm });
    say(`traffic: ${rate} frames/s of ${size} bytes, vm1 -> vm2, for ${trafficMs} ms before the upgrade`);
    await pause(trafficMs, o.signal);

    say(`upgrade ${upgradeId}: starting a new instance beside the old one and handing it every connection`);
    const upgradeAtMs = nowMs();
    const report = await upgrade({ control, newCommand: [...datapath, ...ports, '--instance', 'demo-new'], mem: DEMO_MEM, pageSize: PAGE_2M, stateDir: dir, store: ws.store, upgradeId });
    if (report.new) ws.pids.add(report.new.pid);
    if (report.memory) ws.memInstances.add(report.memory.instance);
    // After a commit the new instance serves; otherwise the old one still does (or, after a failed rollback, maybe neither).
    ws.servingPid = report.result === 'committed' ? (report.new?.pid ?? null) : report.result === 'failed' ? null : old.pid;
    say(`upgrade ${upgradeId}: ${report.result.replace('_', ' ')}${ws.servingPid !== null ? `; traffic goes on through pid ${ws.servingPid} for ${trafficMs} ms` : ''}`);
    await pause(trafficMs, o.signal);

    const running = probe;
    probe = null;
    const p = await running.stop();
    const phase = (atMs: number): string => (atMs === 0 ? 'none' : phaseAt(p.startedAtMs + atMs - upgradeAtMs, report.phases));
    return {
      ...report,
      traffic: {
        sent: p.sent,
        received: p.received,
        lost: p.lost,
        duplicated: p.duplicated,
        notSent: p.notSent,
        maxGapUs: p.maxGapUs,
        gapPhase: phase(p.maxGapAtMs + 1000 / rate),
        maxLatencyUs: p.latencyUs.max,
        latencyPhase: phase(p.maxLatencyAtMs),
        maxLatenessUs: p.latenessUs.max,
        latenessPhase: phase(p.maxLatenessAtMs),
      },
      mode: { root: o.privileged, memory: mem.backing, tap, note },
      dir,
    };
  }
}

/** The workspace's teardown (the probe first), then the tap: it goes with the last fd to it. */
async function cleanUp(ws: Workspace, probe: RunningProbe | null, tap: boolean): Promise<DemoCleanup> {
  const cleanup = await ws.teardown(probe ? [['stopping the probe', () => probe.stop()]] : []);
  let tapGone = true;
  if (tap) {
    const deadline = Date.now() + TAP_GONE_MS;
    while (tapExists() && Date.now() < deadline) await sleep(20);
    tapGone = !tapExists();
    if (!tapGone) cleanup.problems.push(`tap ${DEMO_TAP} still exists`);
  }
  ws.log.info({ pids: [...ws.pids], memFiles: [...ws.memInstances], problems: cleanup.problems }, 'demo cleaned up');
  return { ...cleanup, tap: tap && tapGone };
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
