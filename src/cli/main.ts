import { Command, CommanderError } from 'commander';
import { ZiuError } from '../errors.js';
import { EXIT } from './exit.js';
import { hugepagesCommand } from './hugepages.js';
import { memfileCommand } from './memfile.js';
import { snakeCase } from './output.js';


/** ZiuError codes that mean "bad input or refused, nothing changed". */
const REFUSALS = new Set([
  'ERR_ZIU_USAGE',
  'ERR_ZIU_NOT_HUGETLBFS',
  'ERR_ZIU_NOT_TMPFS',
  'ERR_ZIU_MEMFILE_EXISTS',
  'ERR_ZIU_NO_MEMFILE',
  'ERR_ZIU_NO_HUGEPAGES',
  'ERR_ZIU_SOCKET_PATH',
]);

/** Per-run state an action can set: an exit code other than 0 that is not an error (plan: "does not fit"). */
export interface Run {
  exitCode: number;
}

export function buildProgram(run: Run): Command {
  const program = new Command('ziu')
    .description('zero-impact upgrade of userspace vswitch datapaths: hugepage mem files, fd handover, measured switchover')
    .version(process.env['npm_package_version'] ?? '0.1.0')
    .showHelpAfterError('(run with --help for usage)');
  hugepagesCommand(program, run);
  memfileCommand(program);
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
    await program.parseAsync(argv, { from: 'user' });
    return run.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and --version are not errors; commander printed its own message otherwise
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    const refused = err instanceof ZiuError && REFUSALS.has(err.code);
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`ziu: ${message}\n`);
    if (json) {
      const e = err as { code?: string };
      process.stdout.write(`${JSON.stringify(snakeCase({ error: { code: e.code ?? 'ERR_ZIU_INTERNAL', message } }))}\n`);
    }
    if (process.env['ZIU_DEBUG']) console.error(err);
    return refused ? EXIT.usage : EXIT.failed;
  }
}
