import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processAlive } from '../../src/process/index.js';
import { VERSION } from '../../src/version.js';
import { ziu } from '../cli/helpers.js';
import { tempDir } from '../helpers/tmp.js';

const STATS = ['min', 'p50', 'p90', 'p99', 'max'];
const MODE_KEYS = ['upgrades', 'outage_us', 'latency_us', 'lateness_us', 'host_noise_us', 'lost', 'duplicated', 'reordered', 'not_sent', 'wall_ms', 'switchover_us'];
const FILES = ['results.json', 'summary.md', 'outage-per-upgrade.svg', 'outage-cdf.svg', 'vm-side-per-upgrade.svg'];

type Stats = Record<string, number>;
interface ModeDoc {
  upgrades: number;
  outage_us: Stats;
  lost: number;
  duplicated: number;
  reordered: number;
  not_sent: number;
  wall_ms: Stats;
  switchover_us: Stats | null;
}
interface BenchDoc {
  cores: number;
  modes: Record<string, ModeDoc>;
  ratios: Record<string, { p50: number; p99: number }>;
}
interface SampleDoc {
  mode: string;
  index: number;
  outage_us: number;
  lost: number;
  reconnects: number[];
  switchover_us: number | null;
  old_pid: number;
  new_pid: number;
  gap_phase: string;
}
interface ResultsDoc {
  machine: { cores: number; kernel: string; node: string; ziu: string; date: string };
  setup: { modes: string[]; upgrades: number; ports: number; rate: number };
  doc: BenchDoc;
  ratios: Record<string, { p50: number; p99: number; pairs: number; per_pair: number[] }>;
  samples: SampleDoc[];
  work_dir: string;
  error?: string;
}

const dirs: Array<{ remove: () => void }> = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d.remove();
});

function outDir(): string {
  const t = tempDir('ziu-bench-test-');
  dirs.push(t);
  return path.join(t.dir, 'out');
}

function bench(args: string[]) {
  return ziu(['bench', ...args], { timeout: 90_000 });
}

function expectStats(s: Stats | null | undefined): void {
  expect(s).not.toBeNull();
  expect(Object.keys(s!)).toEqual(STATS);
  const v = STATS.map((k) => s![k]!);
  for (const x of v) expect(x).toBeGreaterThan(0);
  expect([...v].sort((a, b) => a - b)).toEqual(v);
}

function readResults(out: string): ResultsDoc {
  for (const f of FILES) expect(fs.existsSync(path.join(out, f)), f).toBe(true);
  return JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as ResultsDoc;
}

/** Every datapath the run started is gone, and so is its working dir (sockets, mem files, mounts). */
function expectCleanedUp(r: ResultsDoc): void {
  const pids = new Set(r.samples.flatMap((s) => [s.old_pid, s.new_pid]));
  expect(pids.size).toBeGreaterThan(0);
  for (const pid of pids) expect(processAlive(pid), `pid ${pid}`).toBe(false);
  expect(fs.existsSync(r.work_dir)).toBe(false);
}

describe('ziu bench', () => {
  it.each(['handover', 'restart', 'restart-cold'])('--mode %s --json: the summary document, results, plots; each upgrade really replaced the instance', async (mode) => {
    const out = outDir();
    const r = await bench(['--mode', mode, '--upgrades', '2', '--ports', '1', '--rate', '1000', '--json', '--out', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    // No progress with --json (the probe may log a warning when a restarted backend goes away).
    expect(r.stderr).not.toContain(`${mode} 1/2`);

    const doc = JSON.parse(r.stdout) as BenchDoc;
    expect(Object.keys(doc)).toEqual(['cores', 'modes', 'ratios']);
    expect(doc.cores).toBe(os.availableParallelism());
    expect(Object.keys(doc.modes)).toEqual([mode]);
    const m = doc.modes[mode]!;
    expect(Object.keys(m)).toEqual(MODE_KEYS);
    expect(m.upgrades).toBe(2);
    expectStats(m.outage_us);
    expectStats(m.wall_ms);
    for (const k of ['lost', 'duplicated', 'reordered'] as const) expect(Number.isInteger(m[k]) && m[k] >= 0, k).toBe(true);
    expect(doc.ratios).toEqual({});

    const res = readResults(out);
    expect(res.doc).toEqual(doc);
    expect(res.machine).toMatchObject({ cores: os.availableParallelism(), kernel: os.release(), node: process.version, ziu: VERSION });
    expect(res.setup).toMatchObject({ modes: [mode], upgrades: 2, ports: 1, rate: 1000 });
    expect(res.samples.map((s) => [s.mode, s.index])).toEqual([[mode, 1], [mode, 2]]);
    const [a, b] = res.samples as [SampleDoc, SampleDoc];
    // A new instance each time, the second replacing the first one's successor.
    expect(a.new_pid).not.toBe(a.old_pid);
    expect(b.old_pid).toBe(a.new_pid);
    expect(b.new_pid).not.toBe(b.old_pid);
    // Every window says where its worst moments fell: gap, latency in the switch, the sender's own lateness.
    for (const s of res.samples as unknown as Array<Record<string, unknown>>) {
      expect(s).toMatchObject({ max_latency_us: expect.any(Number), latency_phase: expect.any(String), max_lateness_us: expect.any(Number), lateness_phase: expect.any(String), host_noise_us: expect.any(Number), host_noise_phase: expect.any(String) });
    }
    if (mode === 'handover') {
      // Handed over: the VM side never saw its backend go away, nothing was lost, and it could always send.
      for (const s of res.samples) expect(s.reconnects).toEqual([0]);
      expect(m.lost).toBe(0);
      expect(m.not_sent).toBe(0);
      expect(fs.readFileSync(path.join(out, 'vm-side-per-upgrade.svg'), 'utf8')).toContain('>largest sender lateness (VM)</text>');
      expectStats(m.switchover_us);
    } else {
      // Restarted: every VM had to take a new backend connection.
      for (const s of res.samples) expect(s.reconnects[0]).toBeGreaterThan(0);
      expect(m.switchover_us).toBeNull();
      expect(res.samples.map((s) => s.switchover_us)).toEqual([null, null]);
    }

    const summary = fs.readFileSync(path.join(out, 'summary.md'), 'utf8');
    expect(summary).toContain(`| ${mode} | 2 |`);
    for (const svg of ['outage-per-upgrade.svg', 'outage-cdf.svg']) {
      const text = fs.readFileSync(path.join(out, svg), 'utf8');
      expect(text).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" /);
      expect(text.trimEnd()).toMatch(/<\/svg>$/);
      expect(text).toContain(`>${mode}</text>`);
    }
    expectCleanedUp(res);
  }, 60_000);

  it('--mode all: interleaved, same-run ratios, a table for a person and a progress line per upgrade on stderr', async () => {
    const out = outDir();
    const r = await bench(['--upgrades', '1', '--ports', '2', '--rate', '1000', '--out', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ziu bench: 2 port pairs, 1000 pps of 64 B per pair, 64M (hugetlbfs \(2M pages\)|tmpfs) per instance; \d+ cores, kernel .+; 1 upgrade per mode$/);
    expect(lines[1]).toMatch(/^MODE +UPGRADES +OUTAGE P50 +P99 +MAX +LATENCY P99 +SENDER LATE P99 +LOST +NOT SENT +SWITCHOVER P50 +WALL P50$/);
    expect(lines[2]).toMatch(/^handover +1 +[\d.]+ (µs|ms) /);
    expect(lines[3]).toMatch(/^restart +1 +[\d.]+ (ms|s) .* - +\d+ ms$/);
    expect(lines[4]).toMatch(/^restart-cold +1 /);
    expect(lines[5]).toMatch(/^restart\/handover: outage p50 [\d.]+x, p99 [\d.]+x \(1 pair, same run\)$/);
    expect(lines[6]).toMatch(/^restart-cold\/handover: outage p50 /);
    expect(lines[7]).toBe(`results: ${out} (results.json, summary.md, outage-per-upgrade.svg, outage-cdf.svg, vm-side-per-upgrade.svg)`);
    expect(r.stderr).toMatch(/^ziu bench: working in \/dev\/shm\/ziu-bench-\w+; handover, restart, restart-cold, 1 upgrade each\n/);
    for (const mode of ['handover', 'restart', 'restart-cold']) {
      expect(r.stderr).toMatch(new RegExp(`\\n${mode} 1/1: outage [\\d.]+ (µs|ms|s) \\(in [\\w-]+\\), .*lost \\d+, wall \\d+ ms, pid \\d+ -> \\d+\\n`));
    }
    expect(r.stderr).toMatch(/\ncleaning up$/);

    const res = readResults(out);
    expect(res.samples.map((s) => s.mode)).toEqual(['handover', 'restart', 'restart-cold']);
    expect(Object.keys(res.doc.ratios)).toEqual(['restart/handover', 'restart-cold/handover']);
    expect(res.ratios['restart/handover']).toMatchObject({ pairs: 1, per_pair: [expect.any(Number)] });
    // Two pairs, two probes: each saw the handover as nothing and the restarts as one reconnect.
    expect(res.samples.map((s) => s.reconnects)).toEqual([[0, 0], [1, 1], [1, 1]]);
    expectCleanedUp(res);
  }, 60_000);

  it('--idle-ports: a node of idle guests beside the pair; a handover keeps every one, a restart reconnects them all', async () => {
    for (const mode of ['handover', 'restart']) {
      const out = outDir();
      const r = await bench(['--mode', mode, '--upgrades', '2', '--ports', '1', '--idle-ports', '12', '--rate', '1000', '--json', '--out', out]);
      expect(r.exitCode, r.stderr).toBe(0);
      const res = readResults(out);
      const setup = res.setup as ResultsDoc['setup'] & { idle_ports?: number; notes: string[] };
      expect(setup.idle_ports).toBe(12);
      const note = setup.notes.find((n) => n.startsWith('Idle guests:'));
      // The guests are up throughout: a handover never reaches them, a restart makes each of them reconnect once per upgrade.
      expect(note).toContain(mode === 'handover' ? 'saw 0 reconnects and 0 disconnects, 12 connected at the end' : 'saw 24 reconnects');
      if (mode === 'handover') {
        // The serving instance holds as many fds after each upgrade: the batches leak none.
        const fds = (res.samples as Array<SampleDoc & { fds: number | null }>).map((x) => x.fds);
        expect(fds[0]).toBeGreaterThan(14 * 6);
        expect(fds[1]).toBe(fds[0]);
      }
      expectCleanedUp(res);
    }
  }, 120_000);

  it('refuses bad arguments before anything starts: exit 2, one line naming the problem', async () => {
    const out = outDir();
    const cases: Array<[string[], string | RegExp]> = [
      [['--mode', 'reboot'], "ziu: invalid --mode 'reboot': use one of handover, restart, restart-cold, all"],
      [['--upgrades', '0'], "ziu: invalid --upgrades '0': use a whole number in 1..10000"],
      [['--ports', '257'], "ziu: invalid --ports '257': use a whole number in 1..256 port pairs (each pair is two vhost-user ports)"],
      [['--idle-ports', '513'], "ziu: invalid --idle-ports '513': use a whole number in 0..512 idle ports"],
      [['--rate', '1.5'], "ziu: invalid --rate '1.5': use a whole number"],
      [['--size', '9001'], "ziu: invalid --size '9001': use a whole number in 64..9000 bytes"],
      [['--mem', 'lots'], "ziu: invalid --mem 'lots': use a size such as 64M or 1G"],
      [['--mem', '1M'], "ziu: invalid --mem '1M': use at least 2M"],
      [['--mem', '1T'], /^ziu: --mem 1T: two datapath instances side by side need 2T, this host has [\d.]+[GMK] of memory available$/],
      [['--out', '/etc/hostname'], "ziu: --out '/etc/hostname': cannot write results there (it is not a directory)"],
      [['--bogus'], "ziu: unknown option '--bogus' (see --help)"],
    ];
    for (const [args, message] of cases) {
      const r = await bench(args.includes('--out') ? args : [...args, '--out', out]);
      expect(r.exitCode, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      if (typeof message === 'string') expect(r.stderr.trimEnd()).toBe(message);
      else expect(r.stderr.trimEnd()).toMatch(message);
    }
    // Refused before the output directory was made.
    expect(fs.existsSync(out)).toBe(false);
    const j = await bench(['--upgrades', 'x', '--json']);
    expect(j.exitCode).toBe(2);
    expect(JSON.parse(j.stdout)).toEqual({ error: { code: 'ERR_ZIU_USAGE', message: "invalid --upgrades 'x': use a whole number" } });
  }, 60_000);
});
