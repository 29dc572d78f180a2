/**
 * One measurement window: traffic up, settleMs of it, the replacement of the
 * backend, settleMs again, traffic stopped. A fresh set of probes per window
 * makes the largest gap that window's own: the outage the VMs saw.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { round } from './stats.js';
import { ZiuError } from '../errors.js';
import type { Sample } from './results.js';
import { formatUs } from './svg.js';
import { nowMs, type Traffic } from './traffic.js';
import { startNoise, type CpuNoise } from '../sched/noise.js';

/** What replacing the serving backend did, as the one who replaced it saw it. */
export interface Replacement {
  oldPid: number | null;
  newPid: number | null;
  /** handover only: the old instance's freeze to the new one's first pass, stamped in the datapaths */
  switchoverUs: number | null;
  /** from the first step to the last */
  wallMs: number;
  /** ms per step, in the order they ran */
  phases: Record<string, number>;
  /** time to create and prepopulate the new instance's memory, if the bench made it */
  prepopulateMs: number | null;
  /** fds the serving instance holds after the replacement (/proc/<pid>/fd), when it could be read */
  fds?: number | null;
  /** handover only: where the switchover went (freeze to thaw, thaw to first pass, direct takeover) */
  switchoverParts?: { freezeToThawUs: number; thawToFirstPassUs: number; directTakeover: boolean } | null;
}

export interface WindowOptions {
  settleMs: number;
  /** frames per second per pair: the first missing frame of a gap was due one interval after its start */
  rate: number;
  signal?: AbortSignal;
}

export async function measureWindow(
  mode: string,
  index: number,
  startTraffic: () => Promise<Traffic>,
  replace: () => Promise<Replacement>,
  o: WindowOptions,
): Promise<Sample> {
  if (o.signal?.aborted) throw aborted(o.signal);
  const traffic = await startTraffic();
  const noise = startNoise();
  let r: Replacement;
  let replaceAt = 0;
  try {
    await pause(o.settleMs, o.signal);
    replaceAt = nowMs();
    r = await replace();
    await pause(o.settleMs, o.signal);
  } catch (err) {
    noise.stop();
    await traffic.stop().catch(() => undefined);
    throw err;
  }
  const host = noise.stop();
  const noisiest = host.reduce((w, c) => (c.maxUs > w.maxUs ? c : w), host[0]!);
  const t = await traffic.stop();
  const gapAtMs = round(t.outageAtMs + 1000 / o.rate - replaceAt, 2);
  const latencyAtMs = round(t.maxLatencyAtMs - replaceAt, 2);
  const latenessAtMs = round(t.maxLatenessAtMs - replaceAt, 2);
  return {
    mode,
    index,
    outageUs: t.outageUs,
    maxLatencyUs: t.maxLatencyUs,
    latencyPhase: phaseAt(latencyAtMs, r.phases),
    maxLatenessUs: t.maxLatenessUs,
    latenessPhase: phaseAt(latenessAtMs, r.phases),
    hostNoiseUs: noisiest.maxUs,
    hostNoisePhase: phaseAt(round(noisiest.maxAtMs - replaceAt, 2), r.phases),
    sent: t.sent,
    received: t.received,
    lost: t.lost,
    duplicated: t.duplicated,
    reordered: t.reordered,
    notSent: t.notSent,
    reconnects: t.reconnects,
    gapAtMs,
    gapPhase: phaseAt(gapAtMs, r.phases),
    wallMs: r.wallMs,
    switchoverUs: r.switchoverUs,
    oldPid: r.oldPid,
    newPid: r.newPid,
    phases: r.phases,
    prepopulateMs: r.prepopulateMs,
    fds: r.fds ?? null,
    switchoverParts: r.switchoverParts ?? null,
    pairs: t.pairs,
  };
}

export interface Baseline {
  windowMs: number;
  outageUs: number;
  /** the largest one-way latency (time in the switch) and sender lateness (the VM's own) in the same window */
  maxLatencyUs: number;
  maxLatenessUs: number;
  sent: number;
  lost: number;
  notSent: number;
  /** per CPU: how late a SCHED_FIFO 99 thread woke in the same window (the host's own noise) */
  hostNoise: CpuNoise[];
}

/**
 * The noise floor: the largest gap in a window of the same traffic with no
 * replacement at all. On a small shared machine it is not zero, and every
 * outage above should be read against it.
 */
export async function measureBaseline(startTraffic: () => Promise<Traffic>, ms: number, signal?: AbortSignal): Promise<Baseline> {
  const traffic = await startTraffic();
  const noise = startNoise();
  try {
    await pause(ms, signal);
  } catch (err) {
    noise.stop();
    await traffic.stop().catch(() => undefined);
    throw err;
  }
  const hostNoise = noise.stop();
  const t = await traffic.stop();
  return { hostNoise, windowMs: ms, outageUs: t.outageUs, maxLatencyUs: t.maxLatencyUs, maxLatenessUs: t.maxLatenessUs, sent: t.sent, lost: t.lost, notSent: t.notSent };
}

/**
 * The step of the replacement in which the largest gap began (when its first
 * missing frame was due), from the steps' durations laid end to end:
 * approximate, since small untimed stretches between steps add up, yet
 * enough to tell the switchover from a datapath descheduled while a node
 * process starts beside it. Arrivals jitter by a few hundred µs (wake-ups,
 * batches), so a gap due up to JITTER_MS before the first step is the first step's.
 */
export function phaseAt(offsetMs: number, phases: Record<string, number>): string {
  if (offsetMs < -JITTER_MS) return 'before';
  let end = 0;
  for (const [name, ms] of Object.entries(phases)) {
    end += ms;
    if (offsetMs < end) return name;
  }
  return 'after';
}

const JITTER_MS = 1;

/** The progress line for a person watching: which upgrade, its outage, where it fell. */
export function describeSample(s: Sample, of: number): string {
  return [
    `${s.mode} ${s.index}/${of}: outage ${formatUs(s.outageUs)} (in ${s.gapPhase})`,
    `latency ${formatUs(s.maxLatencyUs)} (in ${s.latencyPhase})`,
    `sender late ${formatUs(s.maxLatenessUs)} (in ${s.latenessPhase})`,
    `host noise ${formatUs(s.hostNoiseUs)} (in ${s.hostNoisePhase})`,
    ...(s.switchoverUs !== null ? [`switchover ${formatUs(s.switchoverUs)}`] : []),
    `lost ${s.lost}`,
    ...(s.notSent > 0 ? [`not sent ${s.notSent}`] : []),
    `wall ${Math.round(s.wallMs)} ms`,
    `pid ${s.oldPid ?? '?'} -> ${s.newPid ?? '?'}`,
  ].join(', ');
}

function aborted(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new ZiuError('ERR_ZIU_ABORTED', 'the bench was interrupted');
}

/** sleep, or end early with the abort's reason */
export async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) throw aborted(signal);
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch (err) {
    if (signal?.aborted) throw aborted(signal);
    throw err;
  }
}
