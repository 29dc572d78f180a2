import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { EXIT, UsageError, ZiuError } from '../errors.js';
import { formatBytes, parseSize } from '../hugepages/index.js';
import { checkMem, checkPorts, checkRate, checkSize, checkUpgrades, DEFAULTS, describeRun, FILES, formatUs, LIMITS, parseModes, runBench, type BenchResult } from '../bench/index.js';
import { checkInteger, parseNumber } from '../options.js';
import { context } from './context.js';
import type { Run } from './main.js';
import { output, table } from './output.js';
import { autoPlacement, NO_PLACEMENT, parseCpuList, parsePriority, type Placement } from '../sched/placement.js';

interface BenchCliOpts {
  mode?: string;
  upgrades?: string;
  ports?: string;
  idlePorts?: string;
  rate?: string;
  size?: string;
  mem?: string;
  out?: string;
  json?: boolean;
  workerCpus?: string;
  workerPriority?: string;
  vmCpus?: string;
  vmPriority?: string;
  placement?: string;
}

export function benchCommand(program: Command, run: Run): void {
  program
    .command('bench')
    .description(
      'timed upgrades under traffic on this host: ziu handover against stopping and restarting the datapath, ' +
        'measured by the VM side (ziu probe); writes results.json, summary.md and SVG plots, and removes everything it started',
    )
    .option('--mode <mode>', 'handover, restart, restart-cold, or all of them interleaved (default all)')
    .option('--upgrades <n>', `upgrades per mode, ${LIMITS.upgrades.min}..${LIMITS.upgrades.max} (default ${DEFAULTS.upgrades})`)
    .option('--idle-ports <n>', `more vhost-user ports, each with an idle guest (rings up, no traffic): a node's idle VMs, ${LIMITS.idlePorts.min}..${LIMITS.idlePorts.max} (default 0)`)
    .option('--ports <n>', `vhost-user port pairs, one probe each, ${LIMITS.ports.min}..${LIMITS.ports.max} (default ${DEFAULTS.ports})`)
    .option('--rate <pps>', `probe frames per second per pair (default ${DEFAULTS.rate})`)
    .option('--size <bytes>', `probe frame bytes, ${LIMITS.size.min}..${LIMITS.size.max} (default ${DEFAULTS.size})`)
    .option('--mem <size>', `memory per datapath instance, e.g. 1G (default ${formatBytes(DEFAULTS.mem)})`)
    .option('--out <dir>', 'where the results go (default ./ziu-bench-<date>-<time>)')
    .option('--placement <auto|none>', 'auto (default): as root on 2+ CPUs, the packet worker alone on the last CPU at SCHED_FIFO 50 and the VMs elsewhere, at SCHED_FIFO 40 while there is a CPU per VM and at most 20 kpps on it; none: the scheduler decides')
    .option('--worker-cpus <list>', "CPUs for the datapath's packet worker (overrides --placement)")
    .option('--worker-priority <1-99>', 'SCHED_FIFO priority of the packet worker (overrides --placement)')
    .option('--vm-cpus <list>', "CPUs for the probes' threads, the VMs' vCPUs (overrides --placement)")
    .option('--vm-priority <1-99>', "SCHED_FIFO priority of the probes' threads (overrides --placement)")
    .option('--json', 'print the summary as one JSON document')
    .addHelpText(
      'after',
      [
        '',
        'Modes: handover is ziu upgrade as built. restart prepopulates the new instance\'s memory, stops the old',
        'instance, starts the new one on the same paths, and every VM reconnects. restart-cold makes the memory',
        'after the stop, inside the outage, as a datapath that allocates its memory at start pays.',
        'Outage per upgrade: the largest gap between two frames the VM side received. With --mode all, the',
        'ratios restart/handover are taken over upgrades run back to back in this one session.',
        `As root: ${formatBytes(DEFAULTS.mem)} (--mem) of 2 MiB hugepages per instance, pages added to the pool as needed and given back; otherwise tmpfs.`,
        'Each window also reports the largest one-way latency (time in the switch) and the largest sender lateness',
        "(the VM's own), each with the step it fell in, and the slots the VMs could not send (TX ring full).",
        'Progress goes to stderr (none with --json). Exit codes: 0 done, 1 an upgrade failed, a handover or the',
        'no-upgrade window lost, duplicated or could not send frames, or something could not be cleaned up; 2 bad arguments.',
      ].join('\n'),
    )
    .action(async (flags: BenchCliOpts) => {
      const modes = parseModes(flags.mode ?? 'all', '--mode');
      const upgrades = flags.upgrades === undefined ? DEFAULTS.upgrades : checkUpgrades(parseNumber(flags.upgrades, '--upgrades', true), '--upgrades');
      const ports = flags.ports === undefined ? DEFAULTS.ports : checkPorts(parseNumber(flags.ports, '--ports', true), '--ports');
      const idlePorts =
        flags.idlePorts === undefined
          ? 0
          : checkInteger(parseNumber(flags.idlePorts, '--idle-ports', true), LIMITS.idlePorts.min, LIMITS.idlePorts.max, '--idle-ports', ' idle ports');
      const rate = flags.rate === undefined ? DEFAULTS.rate : checkRate(parseNumber(flags.rate, '--rate', true), '--rate');
      const size = flags.size === undefined ? DEFAULTS.size : checkSize(parseNumber(flags.size, '--size', true), '--size');
      const mem = checkMem(flags.mem === undefined ? DEFAULTS.mem : parseMem(flags.mem), '--mem');
      const mode = flags.placement ?? 'auto';
      if (mode !== 'auto' && mode !== 'none') throw new UsageError(`--placement '${mode}': use auto or none`);
      const auto = mode === 'auto' ? autoPlacement(ports, rate) : { worker: NO_PLACEMENT, vm: NO_PLACEMENT, note: null };
      const worker = overridden(auto.worker, flags.workerCpus, flags.workerPriority, 'worker');
      const vm = overridden(auto.vm, flags.vmCpus, flags.vmPriority, 'vm');
      const out = outDir(flags.out);
      const json = flags.json === true;
      const ctx = context();
      // The datapaths run detached in their own sessions: a Ctrl-C reaches only us, and we stop them.
      const ac = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        if (ac.signal.aborted) return;
        process.stderr.write(`ziu bench: ${sig}: stopping and cleaning up\n`);
        ac.abort(new ZiuError('ERR_ZIU_ABORTED', `interrupted by ${sig}`));
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let result: BenchResult;
      try {
        result = await runBench({
          host: ctx.host,
          privileged: ctx.privileged,
          modes,
          upgrades,
          ports,
          idlePorts,
          rate,
          size,
          mem,
          out,
          signal: ac.signal,
          worker,
          vm,
          ...(json ? {} : { progress: (line: string) => process.stderr.write(`${line}\n`) }),
        });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      output(json).result(result.doc, () => humanBench(result, out));
      if (result.cleanup.problems.length > 0) {
        process.stderr.write(`ziu: not cleaned up: ${result.cleanup.problems.join('; ')}\n`);
        run.exitCode = EXIT.failed;
      }
      const unclean = uncleanWindows(result);
      if (unclean !== null) {
        process.stderr.write(`ziu bench: not a clean run: ${unclean}\n`);
        run.exitCode = EXIT.failed;
      }
    });
}

/** --<who>-cpus and --<who>-priority over the chosen placement. */
function overridden(base: Placement, cpus: string | undefined, priority: string | undefined, who: string): Placement {
  return {
    cpus: cpus === undefined ? base.cpus : parseCpuList(cpus, `--${who}-cpus`),
    priority: priority === undefined ? base.priority : parsePriority(priority, `--${who}-priority`),
  };
}

/** A handover or the no-upgrade window that lost, duplicated or could not send frames: what it was, or null. */
export function uncleanWindows(r: Pick<BenchResult, 'doc' | 'baseline'>): string | null {
  const bad: string[] = [];
  const h = r.doc.modes['handover'];
  if (h && h.lost + h.duplicated + h.notSent > 0) bad.push(`handover: ${h.lost} lost, ${h.duplicated} duplicated, ${h.notSent} not sent`);
  const b = r.baseline;
  if (b && b.lost + b.notSent > 0) bad.push(`no-upgrade window: ${b.lost} lost, ${b.notSent} not sent`);
  return bad.length > 0 ? bad.join('; ') : null;
}

function parseMem(text: string): number {
  try {
    return parseSize(text);
  } catch (err) {
    throw new UsageError(`invalid --mem '${text}': use a size such as 64M or 1G`, { cause: err });
  }
}

/** The output directory, created now so that a bad path is refused before anything starts. */
function outDir(flag: string | undefined): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const dir = path.resolve(flag ?? `ziu-bench-${stamp}`);
  if (flag !== undefined && flag.trim() === '') throw new UsageError('--out: the directory name is empty');
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'EEXIST' || (err as NodeJS.ErrnoException).code === 'ENOTDIR' ? 'it is not a directory' : (err as Error).message;
    throw new UsageError(`--out '${flag ?? dir}': cannot write results there (${why})`, { cause: err });
  }
  return dir;
}

/** The summary for a person: one row per mode, the ratios, where the files are. */
export function humanBench(r: BenchResult, out: string): string[] {
  const rows = Object.entries(r.doc.modes).map(([mode, x]) => [
    mode,
    x.upgrades,
    x.outageUs ? formatUs(x.outageUs.p50) : '-',
    x.outageUs ? formatUs(x.outageUs.p99) : '-',
    x.outageUs ? formatUs(x.outageUs.max) : '-',
    x.latencyUs ? formatUs(x.latencyUs.p99) : '-',
    x.latenessUs ? formatUs(x.latenessUs.p99) : '-',
    x.lost,
    x.notSent,
    x.switchoverUs ? formatUs(x.switchoverUs.p50) : '-',
    x.wallMs ? `${Math.round(x.wallMs.p50)} ms` : '-',
  ]);
  return [
    `ziu bench: ${describeRun(r.machine, r.setup)}; ${r.setup.upgrades} upgrade${r.setup.upgrades === 1 ? '' : 's'} per mode`,
    ...table(['MODE', 'UPGRADES', 'OUTAGE P50', 'P99', 'MAX', 'LATENCY P99', 'SENDER LATE P99', 'LOST', 'NOT SENT', 'SWITCHOVER P50', 'WALL P50'], rows),
    ...Object.entries(r.ratios).map(([k, v]) => `${k}: outage p50 ${v.p50}x, p99 ${v.p99}x (${v.pairs} pair${v.pairs === 1 ? "" : "s"}, same run)`),
    `results: ${out} (${Object.values(FILES).join(', ')})`,
  ];
}
