import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasCode, sysError, ZiuError } from '../errors.js';
import type { Logger } from '../log.js';
import { native } from '../native/index.js';
import { checkPid, isSameProcess, readStat, type ProcessRef } from './identity.js';

// A child that ignores SIGTERM on a failed start gets this long before SIGKILL.
const KILL_GRACE_MS = 1000;

export type Stopped = 'exited' | 'killed' | 'not-running';

/**
 * Send SIGTERM, wait up to graceMs for the process to be gone, then SIGKILL and
 * wait again. Resolves how it ended. Works for a process we did not spawn
 * (recover). Given a ProcessRef, only that very process is signalled, through
 * a pidfd: a pid that was reused is 'not-running', and its new owner is left alone.
 */
export async function stopProcess(target: number | ProcessRef, graceMs: number): Promise<Stopped> {
  if (typeof target === 'number') {
    checkPid(target);
    return terminate(target, target, graceMs);
  }
  checkPid(target.pid);
  if (!processAlive(target)) return 'not-running';
  if (!signalRef(target, 'SIGTERM')) return 'exited';
  if (await waitGone(target, graceMs)) return 'exited';
  if (!signalRef(target, 'SIGKILL')) return 'exited';
  if (await waitGone(target, Math.max(graceMs, KILL_GRACE_MS))) return 'killed';
  throw stuck(target.pid);
}

/**
 * True if a process with this pid exists (kill(pid, 0); EPERM counts as alive)
 * and is not a zombie: a child of ours that died stays in the process table
 * until it is reaped, yet it is gone for every purpose here. Given a
 * ProcessRef, it must also be that very process (same start time).
 */
export function processAlive(target: number | ProcessRef): boolean {
  if (typeof target !== 'number') return processAlive(target.pid) && isSameProcess(target);
  const pid = target;
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
  const stat = readStat(pid);
  if (stat === null) return null;
  // The command name in parentheses may itself contain ') ', so the state is after the last one.
  const at = stat.lastIndexOf(')') + 2;
  return stat.slice(at, at + 1);
}

/** Wait up to ms for the process to be gone (exited, or a zombie; or its pid reused); true if it is. */
export async function waitGone(target: number | ProcessRef, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!processAlive(target)) return true;
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

/**
 * Signal exactly the process `ref` names: open a pidfd (it pins one process),
 * check that process is still the one started at ref.startTime, signal through
 * the pidfd. false if it is gone (or its pid belongs to another process now).
 */
function signalRef(ref: ProcessRef, sig: NodeJS.Signals): boolean {
  const fd = native.pidfdOpen(ref.pid);
  if (fd < 0) {
    if (fd === -os.constants.errno.ESRCH) return false;
    throw sysError(fd, 'pidfd_open', {});
  }
  try {
    if (!isSameProcess(ref)) return false;
    const r = native.pidfdSendSignal(fd, os.constants.signals[sig]);
    if (r === -os.constants.errno.ESRCH) return false;
    if (r < 0) throw sysError(r, `pidfd_send_signal ${sig} to pid ${ref.pid}`, { fd });
    return true;
  } finally {
    native.close(fd);
  }
}

function stuck(pid: number): ZiuError {
  return new ZiuError('ERR_ZIU_STOP', `process ${pid} is still there after SIGKILL; it is probably stuck in the kernel (see /proc/${pid}/stack), stop it by hand`);
}

/** Signal `target` (a pid, or -pgid for a whole group) and watch `pid` until it is gone. */
async function terminate(target: number, pid: number, graceMs: number): Promise<Stopped> {
  if (!processAlive(pid)) return 'not-running';
  if (!signal(target, 'SIGTERM')) return 'exited';
  if (await waitGone(pid, graceMs)) return 'exited';
  signal(target, 'SIGKILL');
  // SIGKILL cannot be ignored, but a process in uninterruptible sleep (D) dies only when the syscall returns.
  if (await waitGone(pid, Math.max(graceMs, KILL_GRACE_MS))) return 'killed';
  throw stuck(pid);
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
