// What every hostile test needs: a real ziu-datapath with a probe running
// through two well-behaved ports (`a` -> `b`), a hostile frontend process, and
// the four checks the issue asks of each test: the other ports lose nothing,
// `status` answers within 100 ms, the fd count comes back to its baseline,
// and a log line names the port and the reason.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { startProbe, type ProbeReport, type RunningProbe } from '../../src/probe/index.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { openFds } from '../helpers/fds.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Rig {
  dp: RunningDatapath;
  probe: RunningProbe;
  logFile: string;
  tmp: string;
}

/** A datapath with ports a, b and h (the hostile one's), taps as asked, and a probe a -> b that already delivers. */
export async function startRig(o: { taps?: Record<string, string>; broadcast?: boolean; rate?: number } = {}): Promise<Rig> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ziu-hostile-'));
  const logFile = path.join(tmp, 'datapath.log');
  const dp = await startDatapath({ ports: { a: 'server', b: 'server', h: 'server' }, taps: o.taps ?? {}, logFile });
  let probe: RunningProbe;
  try {
    probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: o.rate ?? 1000, size: 64, ...(o.broadcast ? { dstMac: 'broadcast' as const } : {}) });
  } catch (err) {
    await dp.stop();
    throw err;
  }
  for (const deadline = Date.now() + 5000; probe.stats().received === 0; await sleep(10)) {
    if (Date.now() > deadline) throw new Error('the probe received nothing through a -> b');
  }
  return { dp, probe, logFile, tmp };
}

export async function stopRig(r: Rig | null): Promise<void> {
  if (!r) return;
  await r.probe.stop().catch(() => {});
  await r.dp.stop().catch(() => {});
  fs.rmSync(r.tmp, { recursive: true, force: true });
}

/** How long `status` took (ms), or Infinity when it did not answer within 2 s. */
export async function statusMs(dp: RunningDatapath): Promise<number> {
  const t0 = performance.now();
  const answered = await Promise.race([dp.status().then(() => true, () => false), sleep(2000).then(() => false)]);
  return answered ? performance.now() - t0 : Number.POSITIVE_INFINITY;
}

/** The status, or null when it did not answer within 2 s. */
export async function statusOrNull(dp: RunningDatapath): ReturnType<RunningDatapath['status']> extends Promise<infer S> ? Promise<S | null> : never {
  return Promise.race([dp.status().catch(() => null), sleep(2000).then(() => null)]);
}

/** Ask for status every 50 ms for `ms`; the slowest answer. */
export async function slowestStatus(dp: RunningDatapath, ms: number): Promise<number> {
  let worst = 0;
  for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) worst = Math.max(worst, await statusMs(dp));
  return worst;
}

/** CPU (user + system) a process used over `ms`, in percent of one core, from /proc/<pid>/stat. */
export async function cpuPercent(pid: number, ms = 1000): Promise<number> {
  const ticks = (): number => {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]); // utime, stime (fields 14, 15)
  };
  const hz = 100; // USER_HZ on Linux
  const t0 = ticks();
  const w0 = performance.now();
  await sleep(ms);
  return ((ticks() - t0) / hz / ((performance.now() - w0) / 1000)) * 100;
}

/** Wait until the datapath's fd count is `want` (up to 3 s); the last count seen. */
export async function fdsSettle(pid: number, want: number): Promise<number> {
  let n = openFds(pid);
  for (const deadline = Date.now() + 3000; n !== want && Date.now() < deadline; n = openFds(pid)) await sleep(20);
  return n;
}

/** The datapath's log lines (pino JSON) that name this port. */
export function logLinesFor(logFile: string, port: string): Array<Record<string, unknown>> {
  return fs
    .readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['port'] === port);
}

export interface Hostile {
  proc: ChildProcess;
  ready: Promise<void>;
  /** resolves when the datapath closed its connection */
  dropped: Promise<void>;
  output: () => string;
  kill(): Promise<void>;
}

/** Start test/hostile/frontend.ts as its own process against a port's socket. */
export function spawnHostile(sock: string, mode: string): Hostile {
  const proc = spawn(path.join(ROOT, 'node_modules', '.bin', 'vite-node'), [path.join(ROOT, 'test', 'hostile', 'frontend.ts'), sock, mode], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const seen = (word: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (out.split('\n').includes(word)) resolve();
      };
      proc.stdout!.on('data', check);
      proc.on('exit', () => (out.split('\n').includes(word) ? resolve() : reject(new Error(`hostile frontend exited before '${word}':\n${out}`))));
    });
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const ready = seen('ready');
  const dropped = seen('dropped');
  ready.catch(() => {});
  dropped.catch(() => {});
  return {
    proc,
    ready,
    dropped,
    output: () => out,
    kill: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await gone;
    },
  };
}

/** true if p settles within ms */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([p.then(() => true, () => true), sleep(ms).then(() => false)]);
}

/** What one hostile run did to the datapath and to the probe's pair. */
export interface Outcome {
  mode: string;
  /** the slowest status answer while the frontend was at it (ms) */
  slowest: number;
  /** the datapath's CPU over 1 s meanwhile (% of a core), if asked */
  cpu: number;
  /** the datapath dropped the frontend within 3 s */
  dropped: boolean;
  frontendOutput: string;
  fdsBaseline: number;
  fds: number;
  report: ProbeReport;
  receivedBefore: number;
  /** the hostile port's status */
  port: Record<string, unknown>;
  /** the datapath's log lines naming the hostile port */
  lines: string[];
}

/** Run the hostile frontend in `mode` against port h of the rig; stops the probe. */
export async function runHostile(rig: Rig, mode: string, o: { measureCpu?: boolean } = {}): Promise<Outcome> {
  const { dp, probe } = rig;
  const fdsBaseline = openFds(dp.pid);
  const receivedBefore = probe.stats().received;
  const hostile = spawnHostile(dp.sock['h']!, mode);
  try {
    await hostile.ready;
    const slowest = await slowestStatus(dp, 1500);
    const cpu = o.measureCpu ? await cpuPercent(dp.pid) : 0;
    const dropped = await within(hostile.dropped, 3000);
    const frontendOutput = hostile.output();
    await hostile.kill();
    const fds = await fdsSettle(dp.pid, fdsBaseline);
    const report = await probe.stop();
    const port = (await statusOrNull(dp))?.ports.find((p) => p.name === 'h') ?? ({} as Record<string, unknown>);
    const lines = logLinesFor(rig.logFile, 'h').map((l) => JSON.stringify(l));
    console.log(`${mode}: slowest status ${slowest.toFixed(1)} ms, datapath cpu ${cpu.toFixed(0)}%, lost ${report.lost}, not sent ${report.notSent}, max gap ${report.maxGapUs} us, lastError ${String(port['lastError'])}`);
    return { mode, slowest, cpu, dropped, frontendOutput, fdsBaseline, fds, report, receivedBefore, port, lines };
  } finally {
    await hostile.kill();
  }
}

/** The checks: the frontend is dropped for `reason`, and nobody else noticed. */
export function expectContained(r: Outcome, reason: RegExp): void {
  expect(r.dropped, `the datapath kept the hostile connection:\n${r.frontendOutput}`).toBe(true);
  expect(r.slowest).toBeLessThan(100);
  const { lost, duplicated, reordered, notSent } = r.report;
  expect({ lost, duplicated, reordered, notSent }).toEqual({ lost: 0, duplicated: 0, reordered: 0, notSent: 0 });
  expect(r.report.received).toBeGreaterThan(r.receivedBefore + 1000);
  expect(r.fds).toBe(r.fdsBaseline);
  expect(String(r.port['lastError'])).toMatch(reason);
  expect(r.lines.some((l) => reason.test(l)), r.lines.join('\n')).toBe(true);
}
