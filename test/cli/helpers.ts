import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type Options } from 'execa';

export const ZIU = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ziu.js');

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Run the built CLI (npm test builds dist/ first) and never throw on a non-zero exit. */
export async function ziu(args: string[], options: Options & { asUser?: number } = {}): Promise<CliResult> {
  const { asUser, ...opts } = options;
  const cmd = asUser === undefined ? ['node', ZIU] : ['setpriv', `--reuid=${asUser}`, `--regid=${asUser}`, '--clear-groups', 'node', ZIU];
  // A bound on every run: a CLI that fails to exit must fail its test, not hang the suite.
  const r = await execa(cmd[0]!, [...cmd.slice(1), ...args], { reject: false, timeout: 120_000, env: { ZIU_LOG_LEVEL: 'warn' }, ...opts });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}
