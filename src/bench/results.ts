/**
 * A benchmark's results: the summary document (`--json`), and in the output
 * directory results.json (every sample, the machine, the versions),
 * summary.md (a table) and two SVG plots. The DPDK peer script writes its
 * runs through the same functions, so its figures read the same way.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { snakeCase } from '../snake-case.js';
import { formatBytes } from '../hugepages/index.js';
import { VERSION } from '../version.js';
import { pairRatio, summarize, type PairRatio, type Summary } from './stats.js';
import { COLORS, formatUs, plot } from './svg.js';
import type { Baseline } from './window.js';

/** One upgrade (or restart) under traffic, as measured. */
export interface Sample {
  /** 'handover', 'restart', 'restart-cold' (or 'dpdk-restart' from the peer script) */
  mode: string;
  /** 1-based, within its mode: sample i of each mode ran back to back */
  index: number;
  /** the largest gap between two frames on any port pair during the window */
  outageUs: number;
  /** the largest one-way latency (receive time - TX stamp: time in the switch) on any pair, and the step its frame was sent in */
  maxLatencyUs: number;
  latencyPhase: string;
  /** the largest sender lateness (TX stamp - slot: the VM's own) on any pair, and the step its slot fell in */
  maxLatenessUs: number;
  latenessPhase: string;
  /** in the same window, the latest wake-up of a SCHED_FIFO 99 thread on any CPU: the host's own noise, outside any switch */
  hostNoiseUs: number;
  /** the step that late wake-up was due in */
  hostNoisePhase: string;
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  reordered: number;
  /** frames the probes skipped because their TX ring was full */
  notSent: number;
  /** per port pair: backend reconnections the VM side saw */
  reconnects: number[];
  /** when the first frame missing in the largest gap was due, ms after the replacement started */
  gapAtMs: number;
  /** the replacement's step it began in, or 'before'/'after' the replacement */
  gapPhase: string;
  wallMs: number;
  switchoverUs: number | null;
  oldPid: number | null;
  newPid: number | null;
  phases: Record<string, number>;
  prepopulateMs: number | null;
  /** fds of the serving instance after the replacement: a leak grows it upgrade by upgrade */
  fds?: number | null;
  /** handover only: where the switchover went */
  switchoverParts?: { freezeToThawUs: number; thawToFirstPassUs: number; directTakeover: boolean } | null;
  pairs: unknown[];
}

export interface ModeSummary {
  upgrades: number;
  outageUs: Summary | null;
  /** per upgrade: the largest latency in the switch, and the largest sender lateness */
  latencyUs: Summary | null;
  latenessUs: Summary | null;
  /** per upgrade window: the host's own noise (a SCHED_FIFO 99 thread's latest wake-up) */
  hostNoiseUs: Summary | null;
  /** frames lost, duplicated and reordered over all upgrades of the mode, and slots the VMs could not send */
  lost: number;
  duplicated: number;
  reordered: number;
  notSent: number;
  wallMs: Summary | null;
  /** handover only (the datapaths' own freeze-to-first-poll stamps); null for restarts */
  switchoverUs: Summary | null;
}

/** The document `ziu bench --json` prints. */
export interface BenchDoc {
  cores: number;
  modes: Record<string, ModeSummary>;
  /** "<mode>/handover": p50 and p99 of outage over the same pairs; only for modes that ran */
  ratios: Record<string, { p50: number; p99: number }>;
}

export interface Machine {
  date: string;
  cores: number;
  /** 1, 5 and 15 minute load averages when the run started: other work on the machine shows in the outages */
  loadAvg: number[];
  kernel: string;
  cpu: string | null;
  memBytes: number;
  node: string;
  ziu: string;
}

/** What was run, for results.json and the heading of summary.md. */
export interface Setup {
  modes: string[];
  upgrades: number;
  /** port pairs */
  ports: number;
  /** vhost-user ports with an idle guest each (rings up, no traffic) beside the pairs */
  idlePorts?: number;
  /** frames per second per pair */
  rate: number;
  size: number;
  /** bytes per datapath instance (0: not ours to say, e.g. testpmd) */
  mem: number;
  backing: string;
  pageSize: number;
  settleMs: number;
  /** anything a reader must know to read the figures */
  notes: string[];
}

export interface Results {
  machine: Machine;
  setup: Setup;
  doc: BenchDoc;
  ratios: Record<string, PairRatio>;
  /** the largest gap in a window of the same traffic and no upgrade: the machine's noise floor */
  baseline?: Baseline;
  samples: Sample[];
  /** where the rig worked (sockets, logs, mem files); removed at the end */
  workDir?: string;
  /** set when the run stopped early: what went wrong */
  error?: string;
}

export const FILES = {
  results: 'results.json',
  summary: 'summary.md',
  perUpgrade: 'outage-per-upgrade.svg',
  cdf: 'outage-cdf.svg',
  vmSide: 'vm-side-per-upgrade.svg',
} as const;

export function machine(): Machine {
  return {
    date: new Date().toISOString(),
    cores: os.availableParallelism(),
    loadAvg: os.loadavg().map((x) => Math.round(x * 100) / 100),
    kernel: os.release(),
    cpu: os.cpus()[0]?.model.trim() ?? null,
    memBytes: os.totalmem(),
    node: process.version,
    ziu: VERSION,
  };
}

/** The summary document and the ratios, from every sample of the run. */
export function summarizeRun(modes: readonly string[], samples: readonly Sample[], cores = os.availableParallelism()): { doc: BenchDoc; ratios: Record<string, PairRatio> } {
  const doc: BenchDoc = { cores, modes: {}, ratios: {} };
  const ratios: Record<string, PairRatio> = {};
  for (const mode of modes) {
    const s = samples.filter((x) => x.mode === mode);
    const sw = s.flatMap((x) => (x.switchoverUs === null ? [] : [x.switchoverUs]));
    doc.modes[mode] = {
      upgrades: s.length,
      outageUs: summarize(s.map((x) => x.outageUs)),
      latencyUs: summarize(s.map((x) => x.maxLatencyUs)),
      latenessUs: summarize(s.map((x) => x.maxLatenessUs)),
      hostNoiseUs: summarize(s.map((x) => x.hostNoiseUs)),
      lost: total(s, 'lost'),
      duplicated: total(s, 'duplicated'),
      reordered: total(s, 'reordered'),
      notSent: total(s, 'notSent'),
      wallMs: summarize(s.map((x) => x.wallMs)),
      switchoverUs: summarize(sw),
    };
  }
  if (modes.includes('handover')) {
    const base = byIndex(samples, 'handover');
    for (const mode of modes) {
      if (mode === 'handover') continue;
      const r = pairRatio(byIndex(samples, mode), base);
      if (r === null) continue;
      ratios[`${mode}/handover`] = r;
      doc.ratios[`${mode}/handover`] = { p50: r.p50, p99: r.p99 };
    }
  }
  return { doc, ratios };
}

function total(s: readonly Sample[], k: 'lost' | 'duplicated' | 'reordered' | 'notSent'): number {
  return s.reduce((a, x) => a + x[k], 0);
}

/** Outages of one mode by upgrade index (index i at [i - 1]). */
function byIndex(samples: readonly Sample[], mode: string): Array<number | undefined> {
  const out: Array<number | undefined> = [];
  for (const x of samples) if (x.mode === mode) out[x.index - 1] = x.outageUs;
  return out;
}

/** Write results.json, summary.md and the plots into dir (created if missing); returns the paths. */
export function writeResults(dir: string, r: Results): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const files = {
    results: path.join(dir, FILES.results),
    summary: path.join(dir, FILES.summary),
    perUpgrade: path.join(dir, FILES.perUpgrade),
    cdf: path.join(dir, FILES.cdf),
    vmSide: path.join(dir, FILES.vmSide),
  };
  fs.writeFileSync(files.results, `${JSON.stringify(snakeCase(r), null, 2)}\n`);
  fs.writeFileSync(files.summary, summaryMarkdown(r));
  fs.writeFileSync(files.perUpgrade, outagePerUpgradeSvg(r));
  fs.writeFileSync(files.cdf, outageCdfSvg(r));
  fs.writeFileSync(files.vmSide, vmSideSvg(r));
  return Object.values(files);
}

/** One line on the machine and the setup, for headings and subtitles. */
export function describeRun(m: Machine, s: Setup): string {
  const mem = s.mem > 0 ? `, ${formatBytes(s.mem)} ${s.backing}${s.backing === 'hugetlbfs' ? ` (${formatBytes(s.pageSize)} pages)` : ''} per instance` : '';
  return `${s.ports} port pair${s.ports === 1 ? '' : 's'}, ${s.rate} pps of ${s.size} B per pair${mem}; ${m.cores} cores, kernel ${m.kernel}`;
}

const n = (v: number | undefined | null, fmt: (x: number) => string = String): string => (v === undefined || v === null ? '-' : fmt(v));
const ms = (x: number): string => (x < 10 ? x.toFixed(2) : String(Math.round(x)));

export function summaryMarkdown(r: Results): string {
  const { machine: m, setup: s, doc } = r;
  const lines = [
    `# ziu bench, ${m.date.slice(0, 10)}`,
    '',
    `${describeRun(m, s)}. ${s.upgrades} upgrade${s.upgrades === 1 ? '' : 's'} per mode${s.modes.length > 1 ? ', the modes interleaved (upgrade i of each mode back to back)' : ''}; node ${m.node}, ziu ${m.ziu}${m.cpu ? `, ${m.cpu}` : ''}; load average ${m.loadAvg.join(', ')} at the start.`,
    '',
    'Outage: the largest gap between two frames the VM side (ziu probe) received during the upgrade window. Latency: the largest one-way delay of a frame (receive time minus its TX stamp): time it waited in the switch. Sender late: the largest lateness of a frame against the VM\'s own schedule (TX stamp minus its slot): the VM\'s doing, never the switch\'s. Host noise: in the same window, the latest wake-up of a SCHED_FIFO 99 thread on any CPU, which nothing in user space can delay: the kernel\'s and the hypervisor\'s own noise, outside any switch. Not sent: slots the VM could not send because its TX ring was full (the switch took nothing). Switchover: the old instance\'s freeze to the new instance\'s first poll, stamped in the datapaths (handover only). Wall: the whole operation, memory included. Percentiles are nearest-rank over the upgrades.',
    '',
    '| mode | upgrades | outage min | p50 | p90 | p99 | max | latency p50 | latency p99 | sender late p99 | host noise p50 | host noise p99 | lost | not sent | dup | reord | switchover p50 | switchover p99 | wall p50 (ms) | wall p99 (ms) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const [mode, x] of Object.entries(doc.modes)) {
    const o = x.outageUs;
    lines.push(
      `| ${mode} | ${x.upgrades} | ${n(o?.min, formatUs)} | ${n(o?.p50, formatUs)} | ${n(o?.p90, formatUs)} | ${n(o?.p99, formatUs)} | ${n(o?.max, formatUs)} | ${n(x.latencyUs?.p50, formatUs)} | ${n(x.latencyUs?.p99, formatUs)} | ${n(x.latenessUs?.p99, formatUs)} | ${n(x.hostNoiseUs?.p50, formatUs)} | ${n(x.hostNoiseUs?.p99, formatUs)} | ${x.lost} | ${x.notSent} | ${x.duplicated} | ${x.reordered} | ${n(x.switchoverUs?.p50, formatUs)} | ${n(x.switchoverUs?.p99, formatUs)} | ${n(x.wallMs?.p50, ms)} | ${n(x.wallMs?.p99, ms)} |`,
    );
  }
  const where = r.samples.filter((x) => x.mode === 'handover');
  if (where.length > 0) {
    const count = (k: 'gapPhase' | 'latencyPhase' | 'latenessPhase' | 'hostNoisePhase'): string =>
      Object.entries(where.reduce<Record<string, number>>((a, x) => ({ ...a, [x[k]]: (a[x[k]] ?? 0) + 1 }), {}))
        .map(([p, c]) => `${p} ${c}`)
        .join(', ');
    lines.push('', `Where the handover's worst moments fell (step: upgrades): largest gap ${count('gapPhase')}; largest latency ${count('latencyPhase')}; largest sender lateness ${count('latenessPhase')}; the host's own latest wake-up ${count('hostNoisePhase')}.`);
  }
  const ratios = Object.entries(r.ratios);
  if (ratios.length > 0) {
    lines.push('', 'Same-run ratios of outage (p50 over p50, p99 over p99, over the pairs that completed):', '');
    for (const [k, v] of ratios) lines.push(`- ${k}: p50 ${v.p50}x, p99 ${v.p99}x (${v.pairs} pair${v.pairs === 1 ? "" : "s"})`);
  }
  if (r.baseline) {
    const b = r.baseline;
    lines.push(
      '',
      `Noise floor: in ${b.windowMs} ms of the same traffic with no upgrade at all, the largest gap was ${formatUs(b.outageUs)}, the largest latency ${formatUs(b.maxLatencyUs)} and the largest sender lateness ${formatUs(b.maxLatenessUs)}; ${b.lost} of ${b.sent} frames were lost and ${b.notSent} not sent. In the same window a SCHED_FIFO 99 thread woke up to ${b.hostNoise.map((c) => `${formatUs(c.maxUs)} late on CPU ${c.cpu}${c.priority === 0 ? ' (SCHED_OTHER: not permitted)' : ''}`).join(', ')}.`,
    );
  }
  if (s.notes.length > 0) lines.push('', ...s.notes.map((x) => `- ${x}`));
  if (r.error) lines.push('', `**The run stopped early:** ${r.error}`);
  lines.push('', `![outage per upgrade](${FILES.perUpgrade})`, '', `![CDF of outage](${FILES.cdf})`, '', `![what the VM saw per upgrade](${FILES.vmSide})`, '');
  return lines.join('\n');
}

function color(mode: string, i: number): string {
  return COLORS[mode] ?? ['#1f78b4', '#e31a1c', '#ff7f00', '#6a3d9a'][i % 4]!;
}

export function outagePerUpgradeSvg(r: Results): string {
  const modes = Object.keys(r.doc.modes);
  return plot({
    title: 'Outage per upgrade',
    subtitle: describeRun(r.machine, r.setup),
    x: {
      label: 'upgrade',
      min: 1,
      max: Math.max(2, r.setup.upgrades),
      ...(r.setup.upgrades <= 20 ? { ticks: Array.from({ length: Math.max(2, r.setup.upgrades) }, (_, i) => i + 1) } : {}),
    },
    y: { label: 'largest gap between frames (log)', log: true, format: formatUs },
    series: modes.map((mode, i) => ({
      name: mode,
      color: color(mode, i),
      points: r.samples.filter((x) => x.mode === mode).map((x) => [x.index, x.outageUs] as [number, number]),
    })),
  });
}

export function outageCdfSvg(r: Results): string {
  const modes = Object.keys(r.doc.modes);
  return plot({
    title: 'CDF of outage',
    subtitle: describeRun(r.machine, r.setup),
    x: { label: 'largest gap between frames (log)', log: true, format: formatUs },
    y: { label: 'fraction of upgrades', min: 0, max: 1 },
    step: true,
    series: modes.map((mode, i) => ({ name: mode, color: color(mode, i), points: cdf(r.samples.filter((x) => x.mode === mode).map((x) => x.outageUs)) })),
  });
}

/** Per upgrade of the first mode (the handover when it ran): gap, latency in the switch and the sender's lateness. */
export function vmSideSvg(r: Results): string {
  const mode = r.doc.modes['handover'] ? 'handover' : (Object.keys(r.doc.modes)[0] ?? 'handover');
  const s = r.samples.filter((x) => x.mode === mode);
  const series = [
    { name: 'largest gap', color: '#1f78b4', pick: (x: Sample) => x.outageUs },
    { name: 'largest latency (switch)', color: '#e31a1c', pick: (x: Sample) => x.maxLatencyUs },
    { name: 'largest sender lateness (VM)', color: '#33a02c', pick: (x: Sample) => x.maxLatenessUs },
  ];
  return plot({
    title: `What the VM saw per upgrade (${mode})`,
    subtitle: describeRun(r.machine, r.setup),
    x: { label: 'upgrade', min: 1, max: Math.max(2, r.setup.upgrades) },
    y: { label: 'microseconds (log)', log: true, format: formatUs },
    series: series.map((x) => ({ name: x.name, color: x.color, points: s.map((v) => [v.index, Math.max(1, x.pick(v))] as [number, number]) })),
  });
}

/** Points of an empirical CDF, drawn as steps: it rises by 1/n at each sample. */
export function cdf(values: readonly number[]): Array<[number, number]> {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return [];
  return [[s[0]!, 0], ...s.map((v, i) => [v, (i + 1) / s.length] as [number, number])];
}
