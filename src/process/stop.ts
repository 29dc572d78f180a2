import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasCode, UsageError, ZiuError } from '../errors.js';
import type { Logger } from '../log.js';

// A child that ignores SIGTERM on a failed start gets this long before SIGKILL.
const KILL_GRACE_MS = 1000;

export type Stopped = 'exited' | 'killed' | 'not-running';

/**
 * Send SIGTERM, wait up to graceMs for the process to be gone, then SIGKILL and
 * wait again. Resolves how it ended. Works for a pid we did not spawn (recover).
 */
export async function stopProcess(pid: number, graceMs: number): Promise<Stopped> {
  checkPid(pid);
  return terminate(pid, pid, graceMs);
}

/**
 * True if a process with this pid exists (kill(pid, 0); EPERM counts as alive)
 * and is not a zombie: a child of ours that died stays in the process table
 * until it is reaped, yet it is gone for every purpose here.
 */
export function processAlive(pid: number): boolean {
  checkPid(pid);
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (hasCode(err, 'EPERM')) return true;
    if (hasCode(err, 'ESRCH')) return false;
    throw err;
  }
  let state: string | null;
  try {
    state = processState(pid);
  } catch {
    return true;
  }
  // It existed a moment ago: null means it has just been reaped.
  return state !== null && state !== 'Z' && state !== 'X';
}

/**
 * Its main thread's state from /proc/<pid>/stat: R running, S sleeping (for a
 * Node process: waiting in its event loop), D, Z zombie, ...; null if there is
 * no such process.
 */
export function processState(pid: number): string | null {
  checkPid(pid);
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ESRCH')) return null;
    throw err;
  }
  // The command name in parentheses may itself contain ') ', so the state is after the last one.
  const at = stat.lastIndexOf(')') + 2;
  return stat.slice(at, at + 1);
}

/** Wait up to ms for pid to be gone (exited, or a zombie); true if it is. */
export async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!processAlive(pid)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
}

/** Stop a child we launched: its whole process group, so no helper it forked survives. */
export async function stopGroup(pid: number, what: string, log: Logger): Promise<string> {
  try {
    const how = await terminate(-pid, pid, KILL_GRACE_MS);
    killQuietly(-pid, 'SIGKILL');
    return how === 'killed' ? 'SIGKILL after SIGTERM was ignored' : 'SIGTERM';
  } catch (err) {
    log.error({ pid, err }, `could not stop the ${what}`);
    return `it may still run: ${(err as Error).message}`;
  }
}

export function killQuietly(target: number, sig: NodeJS.Signals): void {
  try {
    process.kill(target, sig);
  } catch {
    // nothing left in the group: the usual case
  }
}

function checkPid(pid: number): void {
  // 0 and negative pids address process groups (-1: every process we may signal).
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new UsageError(`pid must be a positive integer, got ${pid}`);
}

/** Signal `target` (a pid, or -pgid for a whole group) and watch `pid` until it is gone. */
async function terminate(target: number, pid: number, graceMs: number): Promise<Stopped> {
  if (!processAlive(pid)) return 'not-running';
  if (!signal(target, 'SIGTERM')) return 'exited';
  if (await waitGone(pid, graceMs)) return 'exited';
  signal(target, 'SIGKILL');
  // SIGKILL cannot be ignored, but a process in uninterruptible sleep (D) dies only when the syscall returns.
  if (await waitGone(pid, Math.max(graceMs, KILL_GRACE_MS))) return 'killed';
  throw new ZiuError('ERR_ZIU_STOP', `process ${pid} is still there after SIGKILL; it is probably stuck in the kernel (see /proc/${pid}/stack), stop it by hand`);
}

/** false if there was nothing left to signal */
function signal(target: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(target, sig);
    return true;
  } catch (err) {
    if (hasCode(err, 'ESRCH')) return false;
    throw err;
  }
}
