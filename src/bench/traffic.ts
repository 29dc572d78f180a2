/**
 * The VM side of a measurement window: one `ziu probe` process per port pair,
 * in vhost-user server mode, so that whatever backend serves the pair (a
 * restarted one too) connects to it. Each is its own process, as a VM is:
 * a probe inside the orchestrator's process would share its address space,
 * and every child the orchestrator forks (the new instance, --handover-info)
 * would make the probe's threads take copy-on-write faults on the traffic
 * path. Stopping the traffic folds the probes' reports into one: the largest
 * gap on any pair, and totals.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { ZiuError } from '../errors.js';
import { formatCpuList, type Placement } from '../sched/placement.js';

// The TX ring rides out a descheduled backend while a new instance starts beside it on a small host
// (1024 descriptors: 100 ms at 10 kpps); frames the ring cannot take are skipped, not sent.
const PROBE_RING = 1024;
// A probe waits this long for the backend to (re)connect to it.
const PROBE_CONNECT_MS = 15_000;
// Longer than any window: the probe runs until we stop it.
const PROBE_DURATION_S = 604_800;
const STOP_TIMEOUT_MS = 15_000;
/** bin/ziu.js: src/bench and dist/bench sit at the same depth below the package root. */
const ZIU_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ziu.js');

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
  pairs: Array<{
    sent: number;
    received: number;
    lost: number;
    duplicated: number;
    reordered: number;
    maxGapUs: number;
    maxGapAtMs: number;
    reconnects: number;
    notSent: number;
    maxLatencyUs: number;
    maxLatenessUs: number;
  }>;
}

export interface Traffic {
  /** stop sending, drain, report; idempotent */
  stop(): Promise<TrafficReport>;
}

/** CLOCK_MONOTONIC in ms, the clock of the probe's and the datapaths' stamps. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** What one probe process printed (ziu probe --json), the fields the window needs. */
interface ProbeDoc {
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  reordered: number;
  not_sent: number;
  reconnects: number;
  max_gap_us: number;
  max_gap_at_ms: number;
  latency_us: { max: number };
  max_latency_at_ms: number;
  lateness_us: { max: number };
  max_lateness_at_ms: number;
  started_at_ms: number;
}

class ProbeProcess {
  readonly pair: PortPair;
  readonly proc: ResultPromise;
  #err = '';
  #ready: Promise<void>;

  constructor(pair: PortPair, o: TrafficOptions) {
    this.pair = pair;
    const p = o.placement;
    const args = [
      ZIU_BIN, 'probe', '--tx', pair.tx, '--rx', pair.rx, '--server', '--json',
      '--rate', String(o.rate), '--size', String(o.size), '--ring-size', String(PROBE_RING),
      '--connect-timeout', String((o.connectTimeoutMs ?? PROBE_CONNECT_MS) / 1000), '--duration', String(PROBE_DURATION_S),
      ...(p?.cpus ? ['--cpus', formatCpuList(p.cpus)] : []),
      ...(p?.priority ? ['--rt-priority', String(p.priority)] : []),
    ];
    // info: its 'probe sending' line says every port has its backend
    this.proc = execa(process.execPath, args, { reject: false, env: { ZIU_LOG_LEVEL: 'info' }, stdin: 'ignore' });
    this.#ready = new Promise((resolve, reject) => {
      this.proc.stderr?.on('data', (d: Buffer) => {
        this.#err = (this.#err + d.toString()).slice(-8192);
        if (this.#err.includes('"msg":"probe sending"')) resolve();
      });
      void this.proc.then((r) => reject(new ZiuError('ERR_ZIU_PROBE', `ziu probe for ${pair.tx} -> ${pair.rx} exited (${r.exitCode ?? r.signal}) before its backend connected: ${lastError(this.#err)}`)));
    });
  }

  ready(): Promise<void> {
    return this.#ready;
  }

  /** SIGTERM: it stops sending, drains and prints its report. */
  async stop(): Promise<ProbeDoc> {
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const r = await this.proc;
    clearTimeout(timer);
    try {
      return JSON.parse(String(r.stdout)) as ProbeDoc;
    } catch {
      throw new ZiuError('ERR_ZIU_PROBE', `ziu probe for ${this.pair.tx} -> ${this.pair.rx} printed no report (exit ${r.exitCode ?? r.signal}): ${lastError(this.#err)}`);
    }
  }
}

/** The last error line a probe logged (pino JSON on stderr), for a message. */
function lastError(stderr: string): string {
  const lines = stderr.trim().split('\n').reverse();
  for (const l of lines) {
    try {
      const o = JSON.parse(l) as { level?: number; msg?: string };
      if ((o.level ?? 0) >= 40) return o.msg ?? l;
    } catch {
      if (l.trim()) return l.trim();
    }
  }
  return 'no output';
}

/**
 * Start one probe process per pair and wait until every one has its backend.
 * A backend that is not running yet is started by `alongside`, at the same
 * time, since it may need the probes listening before it is ready. If
 * anything fails, the probes already up are stopped before the error surfaces.
 */
export async function startTraffic(pairs: readonly PortPair[], o: TrafficOptions, alongside: Promise<unknown> = Promise.resolve()): Promise<Traffic> {
  const probes = pairs.map((p) => new ProbeProcess(p, o));
  const settled = await Promise.allSettled([alongside, ...probes.map((p) => p.ready())]);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.allSettled(probes.map((p) => p.stop()));
    throw failed.reason;
  }
  let stopping: Promise<TrafficReport> | null = null;
  return { stop: () => (stopping ??= stopAll(probes)) };
}

async function stopAll(probes: ProbeProcess[]): Promise<TrafficReport> {
  const settled = await Promise.allSettled(probes.map((p) => p.stop()));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  const reports = settled.map((r) => (r as PromiseFulfilledResult<ProbeDoc>).value);
  const sum = (k: 'sent' | 'received' | 'lost' | 'duplicated' | 'reordered' | 'not_sent'): number => reports.reduce((a, r) => a + r[k], 0);
  const worstBy = (f: (r: ProbeDoc) => number): ProbeDoc => reports.reduce((w, r) => (f(r) > f(w) ? r : w), reports[0]!);
  const gap = worstBy((r) => r.max_gap_us);
  const slowest = worstBy((r) => r.latency_us.max);
  const latest = worstBy((r) => r.lateness_us.max);
  return {
    outageUs: gap.max_gap_us,
    outageAtMs: gap.started_at_ms + gap.max_gap_at_ms,
    maxLatencyUs: slowest.latency_us.max,
    maxLatencyAtMs: slowest.started_at_ms + slowest.max_latency_at_ms,
    maxLatenessUs: latest.lateness_us.max,
    maxLatenessAtMs: latest.started_at_ms + latest.max_lateness_at_ms,
    sent: sum('sent'),
    received: sum('received'),
    lost: sum('lost'),
    duplicated: sum('duplicated'),
    reordered: sum('reordered'),
    notSent: sum('not_sent'),
    reconnects: reports.map((r) => r.reconnects),
    pairs: reports.map((r) => ({
      sent: r.sent,
      received: r.received,
      lost: r.lost,
      duplicated: r.duplicated,
      reordered: r.reordered,
      maxGapUs: r.max_gap_us,
      maxGapAtMs: r.max_gap_at_ms,
      reconnects: r.reconnects,
      notSent: r.not_sent,
      maxLatencyUs: r.latency_us.max,
      maxLatenessUs: r.lateness_us.max,
    })),
  };
}

/** Idle guests for a node-sized run: one `ziu probe --idle` process, up for the rig's whole life. */
export interface IdleGuests {
  /** every guest has its backend (after the first datapath is ready) */
  ready(): Promise<void>;
  /** SIGTERM, and what the guests saw: reconnects on any of them mean a restart reached them */
  stop(): Promise<{ ports: number; connected: number; reconnects: number; disconnects: number }>;
}

/**
 * Listen on `sockets` as idle guests (rings started, no traffic). Resolves
 * once every socket is listening, so that a datapath started next finds them.
 */
export async function startIdleGuests(sockets: readonly string[], connectTimeoutMs = PROBE_CONNECT_MS): Promise<IdleGuests> {
  const args = [ZIU_BIN, 'probe', '--server', '--json', '--idle', ...sockets, '--connect-timeout', String(connectTimeoutMs / 1000)];
  const proc = execa(process.execPath, args, { reject: false, env: { ZIU_LOG_LEVEL: 'info' }, stdin: 'ignore' });
  let err = '';
  const up = new Promise<void>((resolve, reject) => {
    proc.stderr?.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-8192);
      if (err.includes('"msg":"idle guests up"')) resolve();
    });
    void proc.then((r) => reject(new ZiuError('ERR_ZIU_PROBE', `ziu probe --idle (${sockets.length} guests) exited (${r.exitCode ?? r.signal}): ${lastError(err)}`)));
  });
  up.catch(() => undefined);
  const stop = async (): Promise<{ ports: number; connected: number; reconnects: number; disconnects: number }> => {
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const r = await proc;
    clearTimeout(timer);
    try {
      return JSON.parse(String(r.stdout)) as { ports: number; connected: number; reconnects: number; disconnects: number };
    } catch {
      throw new ZiuError('ERR_ZIU_PROBE', `ziu probe --idle printed no report (exit ${r.exitCode ?? r.signal}): ${lastError(err)}`);
    }
  };
  // Listening: every socket file exists (or the process died trying).
  const deadline = Date.now() + connectTimeoutMs;
  while (!sockets.every((s) => fs.existsSync(s))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      await stop().catch(() => undefined);
      await up.catch((e: unknown) => {
        throw e;
      });
      throw new ZiuError('ERR_ZIU_PROBE', `ziu probe --idle: not listening on ${sockets.length} sockets within ${connectTimeoutMs} ms: ${lastError(err)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { ready: () => up, stop };
}
