/**
 * ziu bench: N upgrades of each chosen kind under traffic, measured by the
 * VM side, on one rig, then everything torn down. With several modes the
 * upgrades are interleaved (handover 1, restart 1, restart-cold 1,
 * handover 2, ...) so that each pair saw the same machine and its noise.
 */
import { ZiuError } from '../errors.js';
import type { HugepageHost } from '../hugepages/index.js';
import { logger, type Logger } from '../log.js';
import { checkInteger } from '../options.js';
import { replace } from './modes.js';
import { checkMem, checkPorts, checkRate, checkSize, checkUpgrades, DEFAULTS, LIMITS, PAGE_SIZE, type Mode } from './options.js';
import { machine, summarizeRun, writeResults, type Results, type Sample, type Setup } from './results.js';
import { Rig, type RigCleanup } from './rig.js';
import { describePlacement, NO_PLACEMENT, type Placement } from '../sched/placement.js';
import { describeSample, measureBaseline, measureWindow } from './window.js';

export interface BenchOptions {
  host: HugepageHost;
  /** root: hugepage memory; otherwise tmpfs */
  privileged: boolean;
  modes: Mode[];
  upgrades: number;
  /** vhost-user port pairs, one probe each */
  ports: number;
  /** more vhost-user ports with idle guests (rings up, no traffic), default 0 */
  idlePorts?: number;
  /** frames per second per pair */
  rate: number;
  size: number;
  /** bytes of memory per datapath instance */
  mem: number;
  /** where results.json, summary.md and the plots go */
  out: string;
  /** traffic before and after the upgrade in each window (default 300 ms) */
  settleMs?: number;
  /** parent of the rig's temp dir, on tmpfs (default /dev/shm) */
  baseDir?: string;
  /** a line per upgrade, for a person watching */
  progress?: (line: string) => void;
  /** stop early (SIGINT); everything is still torn down and the results so far written */
  signal?: AbortSignal;
  log?: Logger;
  /** where the datapath's packet worker runs */
  worker?: Placement;
  /** where the probes' loops (the VMs' vCPUs) run */
  vm?: Placement;
}

export interface BenchResult extends Results {
  files: string[];
  cleanup: RigCleanup;
}

// The no-upgrade window lasts about as long as a handover window.
const BASELINE_EXTRA_MS = 1000;

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  if (o.modes.length === 0) throw new ZiuError('ERR_ZIU_USAGE', 'modes: name at least one mode');
  const upgrades = checkUpgrades(o.upgrades);
  const ports = checkPorts(o.ports);
  const rate = checkRate(o.rate);
  const size = checkSize(o.size);
  const mem = checkMem(o.mem);
  const idlePorts = checkInteger(o.idlePorts ?? 0, LIMITS.idlePorts.min, LIMITS.idlePorts.max, 'idlePorts', ' idle ports');
  const settleMs = checkInteger(o.settleMs ?? DEFAULTS.settleMs, LIMITS.settleMs.min, LIMITS.settleMs.max, 'settleMs', ' ms');
  const say = o.progress ?? (() => {});
  const log = o.log ?? logger('bench');
  const m = machine();

  const rig = await Rig.create({
    host: o.host,
    privileged: o.privileged,
    ports,
    idlePorts,
    rate,
    size,
    mem,
    log,
    ...(o.baseDir ? { baseDir: o.baseDir } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.worker ? { worker: o.worker } : {}),
    ...(o.vm ? { vm: o.vm } : {}),
  });
  say(`ziu bench: working in ${rig.dir}; ${o.modes.join(', ')}, ${upgrades} upgrade${upgrades === 1 ? '' : 's'} each`);
  if (rig.backingNote) say(rig.backingNote);
  const samples: Sample[] = [];
  let baseline: Results['baseline'];
  let failure: unknown;
  const windowOpts = { settleMs, rate, ...(o.signal ? { signal: o.signal } : {}) };
  try {
    baseline = await measureBaseline(() => rig.startTraffic(), 2 * settleMs + BASELINE_EXTRA_MS, o.signal);
    for (let i = 1; i <= upgrades; i++) {
      for (const mode of o.modes) {
        const s = await measureWindow(mode, i, () => rig.startTraffic(), () => replace(rig, mode), windowOpts);
        samples.push(s);
        say(describeSample(s, upgrades));
      }
    }
  } catch (err) {
    failure = err;
  }
  say('cleaning up');
  let idle: Awaited<ReturnType<Rig['stopIdle']>> = null;
  try {
    idle = await rig.stopIdle();
  } catch (err) {
    log.error({ err }, 'bench: the idle guests did not report');
  }
  const cleanup = await rig.teardown();
  for (const p of cleanup.problems) log.error(`bench cleanup: ${p}`);

  const setup: Setup = {
    modes: o.modes,
    upgrades,
    ports,
    ...(idlePorts > 0 ? { idlePorts } : {}),
    rate,
    size,
    mem,
    backing: rig.backing,
    pageSize: rig.backing === 'hugetlbfs' ? PAGE_SIZE : 4096,
    settleMs,
    notes: [
      ...(rig.backingNote ? [rig.backingNote] : []),
      ...(idle ? [`Idle guests: ${idle.ports} more vhost-user ports with rings up and no traffic (one ziu probe --idle process); over the run they saw ${idle.reconnects} reconnects and ${idle.disconnects} disconnects, ${idle.connected} connected at the end.`] : []),
      "VM side: one ziu probe per port pair in vhost-user server mode; the datapath's ports connect to it (client mode), so a restarted datapath reconnects.",
      `Placement: datapath worker on ${describePlacement(o.worker ?? NO_PLACEMENT)}; the VMs' probe threads on ${describePlacement(o.vm ?? NO_PLACEMENT)}.`,
      ...(o.modes.includes('restart-cold') ? ["restart-cold: the new instance's memory is created and prepopulated after the old instance stopped, inside the outage."] : []),
    ],
  };
  const { doc, ratios } = summarizeRun(o.modes, samples, m.cores);
  const error = failure === undefined ? undefined : failure instanceof Error ? failure.message : String(failure);
  const results: Results = {
    machine: m,
    setup,
    doc,
    ratios,
    ...(baseline ? { baseline } : {}),
    samples,
    workDir: rig.dir,
    ...(error !== undefined ? { error } : {}),
  };
  let files: string[] = [];
  try {
    files = writeResults(o.out, results);
  } catch (err) {
    if (failure === undefined) throw new ZiuError('ERR_ZIU_BENCH_OUT', `cannot write the results to ${o.out}: ${(err as Error).message}`, { cause: err });
    log.error({ err }, 'could not write the partial results');
  }
  if (failure !== undefined) {
    say(cleanup.problems.length === 0 ? 'everything the bench started is stopped and removed' : `not cleaned up: ${cleanup.problems.join('; ')}`);
    throw failure;
  }
  return { ...results, files, cleanup };
}
