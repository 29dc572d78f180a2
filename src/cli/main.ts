import { Command, CommanderError } from 'commander';
import { EXIT, exitCodeFor, UsageError } from '../errors.js';
import { hugepagesCommand } from './hugepages.js';
import { memfileCommand } from './memfile.js';
import { tablesCommand } from './tables.js';
import { probeCommand } from './probe.js';
import { upgradeCommands } from './upgrade.js';
import { demoCommand } from './demo.js';
import { benchCommand } from './bench.js';
import { snakeCase } from '../snake-case.js';

/** Per-run state an action can set: an exit code other than 0 that is not an error (plan: "does not fit"). */
export interface Run {
  exitCode: number;
}

export function buildProgram(run: Run): Command {
  const program = new Command('ziu')
    .description('zero-impact upgrade of userspace vswitch datapaths: hugepage mem files, fd handover, measured switchover')
    .version(process.env['npm_package_version'] ?? '0.1.0')
    .configureOutput({
      // one line, like every other ziu error
      outputError: (str, write) => write(`ziu: ${str.replace(/^error: /, '').trimEnd()} (see --help)\n`),
    });
  hugepagesCommand(program, run);
  memfileCommand(program);
  tablesCommand(program);
  probeCommand(program, run);
  upgradeCommands(program, run);
  demoCommand(program, run);
  benchCommand(program, run);
  exitOverrideAll(program);
  return program;
}

function exitOverrideAll(cmd: Command): void {
  cmd.exitOverride();
  for (const c of cmd.commands) exitOverrideAll(c);
}

/** Run the CLI; returns the exit code. Results go to stdout, errors to stderr in one line. */
export async function main(argv: string[]): Promise<number> {
  const run: Run = { exitCode: EXIT.ok };
  const program = buildProgram(run);
  const json = argv.includes('--json');
  try {
    // commander would read '-5' as an unknown option; name the real problem
    const negative = argv.find((a) => /^-\d/.test(a));
    if (negative !== undefined) throw new UsageError(`'${negative}' is negative: counts and sizes must be 0 or more`);
    await program.parseAsync(argv, { from: 'user' });
    return run.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and --version are not errors; commander printed its own message otherwise
      if (err.exitCode === 0) return EXIT.ok;
      if (json) printJsonError('ERR_ZIU_USAGE', err.message.replace(/^error: /, ''));
      return EXIT.refused;
    }
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`ziu: ${message}\n`);
    if (json) printJsonError((err as { code?: string }).code ?? 'ERR_ZIU_INTERNAL', message);
    if (process.env['ZIU_DEBUG']) console.error(err);
    return exitCodeFor(err);
  }
}

/** With --json, stdout always carries one document, also when the command failed. */
function printJsonError(code: string, message: string): void {
  process.stdout.write(`${JSON.stringify(snakeCase({ error: { code, message } }))}\n`);
}
