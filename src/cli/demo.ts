import type { Command } from 'commander';
import { EXIT, ZiuError } from '../errors.js';
import { DEMO_DEFAULTS, DEMO_MEM, DEMO_TAP, runDemo, type DemoReport } from '../demo/demo.js';
import { checkInteger, parseNumber } from '../options.js';
import { LIMITS } from '../probe/options.js';
import { context } from './context.js';
import type { Run } from './main.js';
import { output } from './output.js';
import { humanReport } from './upgrade.js';
import { formatUs } from '../bench/index.js';

interface DemoCliOpts {
  rate?: string;
  size?: string;
  json?: boolean;
}

export function demoCommand(program: Command, run: Run): void {
  program
    .command('demo')
    .description(
      'one upgrade under traffic, on this host: a datapath with two vhost-user ports and the probe between them, ' +
        'upgraded to a new instance while frames flow; prints the report and removes everything it made',
    )
    .option('--rate <pps>', `probe frames per second (default ${DEMO_DEFAULTS.rate})`)
    .option('--size <bytes>', `probe frame bytes, ${LIMITS.size.min}..${LIMITS.size.max} (default ${DEMO_DEFAULTS.size})`)
    .option('--json', 'print the upgrade report with traffic and mode as one JSON document')
    .addHelpText(
      'after',
      [
        '',
        `As root: ${DEMO_MEM / 2 ** 20} MiB of 2 MiB hugepages per instance and a tap uplink (${DEMO_TAP}); otherwise tmpfs memory and no tap.`,
        'Traffic runs about 1 s before and 1 s after the upgrade. Progress goes to stderr (none with --json).',
        'Exit codes: 0 committed with no frame lost and everything cleaned up, 1 otherwise.',
      ].join('\n'),
    )
    .action(async (flags: DemoCliOpts) => {
      const rate = flags.rate === undefined ? DEMO_DEFAULTS.rate : checkInteger(parseNumber(flags.rate, '--rate', true), LIMITS.rate.min, LIMITS.rate.max, '--rate', ' frames per second');
      const size = flags.size === undefined ? DEMO_DEFAULTS.size : checkInteger(parseNumber(flags.size, '--size', true), LIMITS.size.min, LIMITS.size.max, '--size', ' bytes');
      const json = flags.json === true;
      const ctx = context();
      // The datapaths run detached in their own sessions: a Ctrl-C reaches only us, and we stop them.
      const ac = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        if (ac.signal.aborted) return;
        process.stderr.write(`ziu demo: ${sig}: stopping and cleaning up\n`);
        ac.abort(new ZiuError('ERR_ZIU_ABORTED', `interrupted by ${sig}`));
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let report: DemoReport;
      try {
        report = await runDemo({
          host: ctx.host,
          privileged: ctx.privileged,
          rate,
          size,
          signal: ac.signal,
          ...(json ? {} : { progress: (line: string) => process.stderr.write(`${line}\n`) }),
        });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      output(json).result(report, () => humanDemo(report));
      if (report.message) process.stderr.write(`ziu: ${report.message}\n`);
      const t = report.traffic;
      const ok = report.result === 'committed' && t.lost === 0 && t.duplicated === 0 && t.notSent === 0 && report.cleanup.problems.length === 0;
      run.exitCode = ok ? EXIT.ok : EXIT.failed;
    });
}

/** The demo for a person: what ran, the upgrade's summary, the traffic, and what was cleaned up. */
export function humanDemo(r: DemoReport): string[] {
  const mib = DEMO_MEM / 2 ** 20;
  const memory = r.mode.memory === 'hugetlbfs' ? `${mib} MiB of 2 MiB hugepages per instance` : `${mib} MiB of ${r.mode.memory} memory per instance`;
  const why = r.mode.note ?? (r.mode.root ? 'root' : 'not root');
  const t = r.traffic;
  const c = r.cleanup;
  const gone = [
    `${c.processes} ${c.processes === 1 ? 'process' : 'processes'}`,
    `${c.memFiles} mem ${c.memFiles === 1 ? 'file' : 'files'}`,
    ...(c.tap ? [`tap ${DEMO_TAP}`] : []),
    ...(c.tempDir ? ['temp dir'] : []),
  ];
  return [
    `ziu demo: 2 vhost-user ports${r.mode.tap ? ' + tap uplink' : ''}, ${memory} (${why})`,
    ...humanReport(r),
    `traffic: ${t.sent} sent, ${t.received} received, ${t.lost} lost, ${t.notSent} not sent (VM TX ring full)`,
    `  largest gap ${formatUs(t.maxGapUs)} (${t.gapPhase}); largest latency in the switch ${formatUs(t.maxLatencyUs)} (${t.latencyPhase}); largest sender lateness ${formatUs(t.maxLatenessUs)} (${t.latenessPhase})`,
    `cleaned up: ${gone.join(', ')}`,
    ...c.problems.map((p) => `  not cleaned up: ${p}`),
  ];
}
