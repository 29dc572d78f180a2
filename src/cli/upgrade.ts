import fs from 'node:fs';
import type { Command } from 'commander';
import { parseCommandString } from 'execa';
import { parse as parseYaml } from 'yaml';
import { UsageError } from '../errors.js';
import { parsePageSize, parseSize, formatBytes } from '../hugepages/index.js';
import { DEAD_MAN_MS, DEFAULTS, EXIT_FOR, overview, recover, RECOVER_EXIT, upgrade, type UpgradeReport } from '../upgrade/index.js';
import { context } from './context.js';
import type { Run } from './main.js';
import { snakeCase } from '../snake-case.js';
import { output, table } from './output.js';

interface UpgradeCliOpts {
  control?: string;
  new?: string;
  mem?: string;
  pageSize?: string;
  verifyMs?: string;
  readyTimeoutMs?: string;
  deadManMs?: string;
  healthUrl?: string;
  report?: string;
  config?: string;
  json?: boolean;
  dryRun?: boolean;
  skipIfCurrent?: boolean;
}

const CONFIG_KEYS = ['control', 'new', 'mem', 'pageSize', 'verifyMs', 'readyTimeoutMs', 'deadManMs', 'healthUrl', 'report'] as const;

export function upgradeCommands(program: Command, run: Run): void {
  program
    .command('upgrade')
    .description('replace a running datapath by a new instance beside it: its vhost-user connections, memory and taps are handed over (fds over SCM_RIGHTS), no VM reconnects; rolls back on any failure before commit')
    .option('--control <socket>', 'control socket of the running (old) datapath')
    .option('--new <command line>', "the new datapath: its binary alone (e.g. ziu-datapath or /opt/ziu-2/bin/ziu-datapath) to run it as the old instance runs, or its whole command line for a changed configuration")
    .option('--mem <size>', 'create and prepopulate this much memory for the new instance (e.g. 1G) and add it as --mem-file')
    .option('--page-size <2M|1G>', 'hugepage size for --mem (default 2M; tmpfs without root or hugepages)')
    .option('--verify-ms <n>', `how long the new instance must forward before commit (default ${DEFAULTS.verifyMs})`)
    .option('--ready-timeout-ms <n>', `deadline for the new instance's READY=1 (default ${DEFAULTS.readyTimeoutMs})`)
    .option('--dead-man-ms <n>', `a frozen old instance thaws itself after this long without resume (default ${DEFAULTS.deadManMs})`)
    .option('--health-url <url>', 'an HTTP endpoint that must answer 2xx during verify')
    .option('--report <file>', 'also write the JSON report to this file')
    .option('--config <file>', 'the same options from a JSON or YAML file (flags override it)')
    .option('--json', 'print the report as one JSON document')
    .option('--dry-run', "preflight only: every check up to the first change, then result 'would-upgrade' (or the refusal); nothing is started, created or locked")
    .option('--skip-if-current', "change nothing (result 'up-to-date', exit 0) when the running instance already runs the datapath and version the new command reports")
    .addHelpText(
      'after',
      [
        '',
        'Phases: preflight, reserve, start, ready, transfer, freeze, resume, verify, commit (docs/handover-protocol.md).',
        '--new <binary> (no options): the new instance gets the old one\'s flags (its --config file among them) and working',
        'directory, as its hello reports them, but never its --mem-file: --mem, or else as much memory as the old instance has,',
        "is created for it. The report's new_command says which (source: reused or given). Under systemd the new instance",
        'tells the service manager MAINPID=<its pid> when it commits (docs/systemd.md).',
        'Exit codes: 0 committed (or would-upgrade, up-to-date), 1 rolled back (traffic stays on the old instance),',
        '2 bad input or refused in preflight (nothing changed), 3 failed and not rolled back (the message says what',
        'to do; see ziu recover).',
      ].join('\n'),
    )
    .action(async (flags: UpgradeCliOpts) => {
      const o = { ...readUpgradeConfig(flags.config), ...definedOnly(flags) };
      if (!o.control) throw new UsageError('--control <socket> is required: the running datapath to upgrade');
      if (!o.new) throw new UsageError("--new '<command line>' is required: the new datapath's binary alone (it then runs as the old instance runs) or its whole command line");
      const newCommand = parseCommandString(o.new);
      const mem = o.mem !== undefined ? parseSize(o.mem) : undefined;
      const pageSize = o.pageSize !== undefined ? parsePageSize(o.pageSize) : undefined;
      if (pageSize !== undefined && mem === undefined) throw new UsageError('--page-size needs --mem');
      const report = await upgrade({
        control: o.control,
        newCommand,
        ...(mem !== undefined ? { mem } : {}),
        ...(pageSize !== undefined ? { pageSize } : {}),
        verifyMs: ms('--verify-ms', o.verifyMs, DEFAULTS.verifyMs, 0),
        readyTimeoutMs: ms('--ready-timeout-ms', o.readyTimeoutMs, DEFAULTS.readyTimeoutMs, 1),
        deadManMs: ms('--dead-man-ms', o.deadManMs, DEFAULTS.deadManMs, DEAD_MAN_MS.min, DEAD_MAN_MS.max),
        ...(o.healthUrl ? { healthUrl: checkUrl(o.healthUrl) } : {}),
        store: context().store,
        ...(flags.dryRun ? { dryRun: true } : {}),
        ...(flags.skipIfCurrent ? { skipIfCurrent: true } : {}),
      });
      if (o.report) fs.writeFileSync(o.report, `${JSON.stringify(snakeCase(report), null, 2)}\n`);
      output(flags.json === true).result(report, () => humanReport(report));
      if (report.result === 'refused' || report.result === 'failed') process.stderr.write(`ziu: ${report.message}\n`);
      run.exitCode = EXIT_FOR[report.result];
    });

  program
    .command('recover')
    .description('after an orchestrator crash: finish or undo the interrupted upgrade from its journal, so that exactly one instance forwards')
    .requiredOption('--control <socket>', 'control socket of the datapath that was being upgraded')
    .option('--json', 'print the result as one JSON document')
    .addHelpText('after', '\nExit codes: 0 committed or nothing to do, 1 rolled back, 3 neither instance can serve (the message says what to do).')
    .action(async (flags: { control: string; json?: boolean }) => {
      const r = await recover({ control: flags.control, store: context().store });
      output(flags.json === true).result(r, () => [
        `recover: ${r.result.replace(/_/g, ' ')}${r.upgradeId ? ` (upgrade ${r.upgradeId}, stopped in ${r.phase})` : ''}`,
        ...r.actions.map((a) => `  ${a}`),
        ...(r.serving ? [`  serving: pid ${r.serving.pid}`] : []),
      ]);
      if (r.message) process.stderr.write(`ziu: ${r.message}\n`);
      run.exitCode = RECOVER_EXIT[r.result];
    });

  program
    .command('status')
    .description('the datapath on a control socket: its instance, role, ports and counters, the last upgrade and any unfinished one')
    .requiredOption('--control <socket>', 'control socket of the datapath')
    .option('--json', 'print one JSON document')
    .action(async (flags: { control: string; json?: boolean }) => {
      const v = await overview(flags.control);
      output(flags.json === true).result(v, () => {
        const s = v.status;
        const last = v.lastUpgrade as { upgradeId?: string; result?: { result?: string; switchoverUs?: number }; finishedAt?: string } | null;
        return [
          `${v.hello.datapath} ${s.version}, instance ${s.instance}, pid ${s.pid}, ${s.role}`,
          ...table(
            ['PORT', 'KIND', 'CONNECTED', 'RX', 'TX', 'DROPS'],
            s.ports.map((p) => [p.name, p.kind, p.connected === undefined ? '-' : p.connected ? 'yes' : 'no', p.counters?.rxPackets ?? 0, p.counters?.txPackets ?? 0, (p.counters?.dropsNoBuffer ?? 0) + (p.counters?.dropsInvalid ?? 0)]),
          ),
          last ? `last upgrade: ${last.upgradeId} ${last.result?.result ?? '?'}${last.result?.switchoverUs != null ? `, switchover ${last.result.switchoverUs} us` : ''} (${last.finishedAt ?? ''})` : 'last upgrade: none',
          ...(v.pending ? [`unfinished upgrade: ${v.pending.upgradeId} in ${v.pending.phase}${v.pending.orchestratorAlive ? ' (running)' : " (orchestrator gone: run 'ziu recover')"}`] : []),
        ];
      });
    });
}

/** A short summary for a person; the JSON report has everything. */
export function humanReport(r: UpgradeReport): string[] {
  const phases = Object.entries(r.phases)
    .map(([k, v]) => `${k} ${v < 10 ? v.toFixed(2) : Math.round(v)}`)
    .join(', ');
  const lines = [`upgrade ${r.upgradeId}: ${r.result.replace('_', ' ')} in ${Math.round(r.totalMs)} ms`];
  const pre = r.preflight;
  if (pre && (r.result === 'would-upgrade' || r.result === 'up-to-date')) {
    lines.push(`  running: ${r.old ? `pid ${r.old.pid}, ${r.old.version}` : '?'}; new command: ${pre.target.datapath} ${pre.target.version}${pre.upToDate ? ' (the same)' : ''}`);
    if (r.stateFormat !== null) lines.push(`  state format: ${r.stateFormat}`);
    if (pre.memory) lines.push(`  memory: ${formatBytes(pre.memory.bytes)} ${pre.memory.backing}, ${pre.memory.verdict}`);
    return lines;
  }
  if (r.switchoverUs !== null) lines.push(`  switchover: ${r.switchoverUs} us (old instance froze -> new instance polled, CLOCK_MONOTONIC)`);
  if (r.old) lines.push(`  old: pid ${r.old.pid}, ${r.old.instance}, ${r.old.version}`);
  if (r.new) lines.push(`  new: pid ${r.new.pid}, ${r.new.instance}, ${r.new.version}`);
  if (r.newCommand) lines.push(`  new command (${r.newCommand.source === 'reused' ? "the old instance's configuration" : 'as given'}): ${r.newCommand.argv.join(' ')}`);
  if (r.memory) lines.push(`  memory: ${formatBytes(r.memory.bytes)} ${r.memory.backing}, prepopulated in ${r.memory.prepopulateMs} ms`);
  if (r.ports.length > 0) lines.push(`  ports: ${r.ports.map((p) => `${p.name}${p.moving ? ' (traffic)' : ''}`).join(', ')}`);
  lines.push(`  phases (ms): ${phases}`);
  if (r.rollback) lines.push(`  rolled back in ${r.rollback.phase}: ${r.rollback.reason}`, `  traffic stays on the old instance${r.old ? ` (pid ${r.old.pid})` : ''}`);
  for (const w of r.warnings) lines.push(`  warning: ${w}`);
  return lines;
}

function ms(flag: string, v: string | number | undefined, dflt: number, min: number, max = 3_600_000): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} '${v}': use a whole number of milliseconds, ${min}..${max}`);
  return n;
}

function checkUrl(u: string): string {
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    throw new UsageError(`--health-url '${u}' is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--health-url '${u}': only http and https`);
  return u;
}

function definedOnly(o: UpgradeCliOpts): Partial<Record<(typeof CONFIG_KEYS)[number], string>> {
  const out: Partial<Record<(typeof CONFIG_KEYS)[number], string>> = {};
  for (const k of CONFIG_KEYS) if (o[k] !== undefined) out[k] = String(o[k]);
  return out;
}

/** The upgrade's options from a JSON or YAML file; unknown keys are named. */
function readUpgradeConfig(file: string | undefined): Partial<Record<(typeof CONFIG_KEYS)[number], string>> {
  if (!file) return {};
  let doc: unknown;
  try {
    const text = fs.readFileSync(file, 'utf8');
    doc = /\.ya?ml$/.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (cause) {
    throw new UsageError(`--config '${file}': ${(cause as Error).message}`, { cause });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new UsageError(`--config '${file}' must hold an object`);
  const out: Partial<Record<(typeof CONFIG_KEYS)[number], string>> = {};
  for (const [k, v] of Object.entries(doc)) {
    if (!(CONFIG_KEYS as readonly string[]).includes(k)) throw new UsageError(`--config '${file}': unknown key '${k}' (known: ${CONFIG_KEYS.join(', ')})`);
    out[k as (typeof CONFIG_KEYS)[number]] = String(v);
  }
  return out;
}
