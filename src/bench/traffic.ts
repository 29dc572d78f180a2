/**
 * The VM side of a measurement window: one ziu probe per port pair, in
 * vhost-user server mode, so that whatever backend serves the pair (a
 * restarted one too) connects to it. Stopping the traffic folds the probes'
 * reports into one: the largest gap on any pair, and totals.
 */
import { startProbe, type ProbeReport, type RunningProbe } from '../probe/index.js';
import type { Placement } from '../sched/placement.js';

// The TX ring rides out a descheduled backend while a new instance starts beside it on a small host
// (1024 descriptors: 100 ms at 10 kpps); frames the ring cannot take are skipped, not sent.
const PROBE_RING = 1024;
// A probe waits this long for the backend to (re)connect to it.
const PROBE_CONNECT_MS = 15_000;

export interface PortPair {
  /** the socket the probe sends on */
  tx: string;
  /** the socket it receives on */
  rx: string;
}

export interface TrafficOptions {
  /** frames per second per pair */
  rate: number;
  size: number;
  connectTimeoutMs?: number;
  /** where the probes' loops (the VMs' vCPUs) run */
  placement?: Placement;
}

/** What the probes of one window saw, all pairs together. */
export interface TrafficReport {
  /** the largest gap between two frames on any pair */
  outageUs: number;
  /** the last frame before that gap, CLOCK_MONOTONIC ms (the clock of process.hrtime) */
  outageAtMs: number;
  /** the largest one-way latency on any pair (time a frame spent in the switch), and that frame's TX stamp (CLOCK_MONOTONIC ms) */
  maxLatencyUs: number;
  maxLatencyAtMs: number;
  /** the largest sender lateness on any pair (the VM's own fault), and that frame's slot (CLOCK_MONOTONIC ms) */
  maxLatenessUs: number;
  maxLatenessAtMs: number;
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  reordered: number;
  /** schedule slots skipped because the TX ring was full: the backend took nothing for a while */
  notSent: number;
  /** per pair: how often its backend connected again (a restart counts once) */
  reconnects: number[];
  pairs: Array<Pick<ProbeReport, 'sent' | 'received' | 'lost' | 'duplicated' | 'reordered' | 'maxGapUs' | 'maxGapAtMs' | 'reconnects' | 'notSent'>> &
    Array<{ maxLatencyUs: number; maxLatenessUs: number }>;
}

export interface Traffic {
  /** stop sending, drain, report; idempotent */
  stop(): Promise<TrafficReport>;
}

/** CLOCK_MONOTONIC in ms, the clock of the probe's and the datapaths' stamps. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * Start one probe per pair and wait until every one has its backend. A
 * backend that is not running yet is started by `alongside`, at the same
 * time, since it may need the probes listening before it is ready. If
 * anything fails, the probes already up are stopped before the error surfaces.
 */
export async function startTraffic(pairs: readonly PortPair[], o: TrafficOptions, alongside: Promise<unknown> = Promise.resolve()): Promise<Traffic> {
  const started = new Map<RunningProbe, number>();
  const probes = pairs.map((p) =>
    startProbe({
      tx: p.tx,
      rx: p.rx,
      rate: o.rate,
      size: o.size,
      server: true,
      ringSize: PROBE_RING,
      connectTimeoutMs: o.connectTimeoutMs ?? PROBE_CONNECT_MS,
      ...(o.placement ? { placement: o.placement } : {}),
    }).then(
      (probe) => {
        // The report's times count from the probe's own start stamp: recover it from the live stats.
        const st = probe.stats();
        started.set(probe, st.native.nowNs / 1e6 - st.elapsedS * 1000);
        return probe;
      },
    ),
  );
  const settled = await Promise.allSettled([alongside, ...probes]);
  const running = settled.slice(1).flatMap((r) => (r.status === 'fulfilled' ? [r.value as RunningProbe] : []));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.allSettled(running.map((p) => p.stop()));
    throw failed.reason;
  }
  let stopping: Promise<TrafficReport> | null = null;
  return { stop: () => (stopping ??= stopAll(running, running.map((p) => started.get(p)!))) };
}

async function stopAll(probes: RunningProbe[], startedMs: number[]): Promise<TrafficReport> {
  const settled = await Promise.allSettled(probes.map((p) => p.stop()));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  const reports = settled.map((r) => (r as PromiseFulfilledResult<ProbeReport>).value);
  const sum = (k: 'sent' | 'received' | 'lost' | 'duplicated' | 'reordered' | 'notSent'): number => reports.reduce((a, r) => a + r[k], 0);
  const worstBy = (f: (r: ProbeReport) => number): number => reports.reduce((w, r, i) => (f(r) > f(reports[w]!) ? i : w), 0);
  const worst = worstBy((r) => r.maxGapUs);
  const slowest = worstBy((r) => r.latencyUs.max);
  const latest = worstBy((r) => r.latenessUs.max);
  return {
    outageUs: Math.max(...reports.map((r) => r.maxGapUs)),
    outageAtMs: startedMs[worst]! + reports[worst]!.maxGapAtMs,
    maxLatencyUs: reports[slowest]!.latencyUs.max,
    maxLatencyAtMs: startedMs[slowest]! + reports[slowest]!.maxLatencyAtMs,
    maxLatenessUs: reports[latest]!.latenessUs.max,
    maxLatenessAtMs: startedMs[latest]! + reports[latest]!.maxLatenessAtMs,
    sent: sum('sent'),
    received: sum('received'),
    lost: sum('lost'),
    duplicated: sum('duplicated'),
    reordered: sum('reordered'),
    notSent: sum('notSent'),
    reconnects: reports.map((r) => r.reconnects),
    pairs: reports.map((r) => ({
      sent: r.sent,
      received: r.received,
      lost: r.lost,
      duplicated: r.duplicated,
      reordered: r.reordered,
      maxGapUs: r.maxGapUs,
      maxGapAtMs: r.maxGapAtMs,
      reconnects: r.reconnects,
      notSent: r.notSent,
      maxLatencyUs: r.latencyUs.max,
      maxLatenessUs: r.latenessUs.max,
    })),
  };
}
