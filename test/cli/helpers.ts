import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type Options } from 'execa';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ZIU = path.join(ROOT, 'bin', 'ziu.js');

/**
 * Why the CLI cannot be run from this checkout as `uid`, or null if it can:
 * tests that run it as an unprivileged user need root to switch, and a
 * checkout that user can read (a clone under /root, mode 0700, is not one).
 * They skip with this reason, printed, rather than fail with MODULE_NOT_FOUND.
 */
export function cannotRunAs(uid: number): string | null {
  if (process.getuid?.() !== 0) return 'not root: cannot drop to another user';
  const need = [ZIU, path.join(ROOT, 'dist', 'cli', 'main.js'), path.join(ROOT, 'node_modules', 'commander', 'package.json'), path.join(ROOT, 'build', 'Release', 'ziu_native.node')];
  const r = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'sh', '-c', 'for f; do test -r "$f" || { echo "$f"; exit 1; }; done', 'sh', ...need], { encoding: 'utf8' });
  if (r.status === 0) return null;
  const reason = `uid ${uid} cannot read this checkout (${r.stdout.trim() || r.stderr.trim() || `setpriv exit ${r.status}`}): it lies where other users cannot enter, such as /root`;
  console.warn(`skipping tests that run ziu as uid ${uid}: ${reason}`);
  return reason;
}

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
