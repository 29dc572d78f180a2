import fs from 'node:fs';
import { hasCode, UsageError } from '../errors.js';

/**
 * A process as more than a pid: the pid and the time it started (field 22 of
 * /proc/<pid>/stat, in clock ticks since boot). A pid read from a journal or
 * a lock file may by now belong to someone else; the pair never does.
 */
export interface ProcessRef {
  pid: number;
  startTime: number;
}

/** The process behind a pid right now, or null if there is none. */
export function processRef(pid: number): ProcessRef | null {
  const stat = readStat(pid);
  if (stat === null) return null;
  // Fields after the command name (which may hold ') '): state is field 3, starttime field 22.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTime = Number(fields[22 - 3]);
  return Number.isSafeInteger(startTime) ? { pid, startTime } : null;
}

/** True if `ref` is that very process (not a later one with its pid). */
export function isSameProcess(ref: ProcessRef): boolean {
  return processRef(ref.pid)?.startTime === ref.startTime;
}

/** A ProcessRef from a journal or lock document, or null if it does not hold one. */
export function toProcessRef(v: unknown): ProcessRef | null {
  if (typeof v !== 'object' || v === null) return null;
  const { pid, startTime } = v as { pid?: unknown; startTime?: unknown };
  return Number.isSafeInteger(pid) && (pid as number) > 0 && Number.isSafeInteger(startTime) ? { pid: pid as number, startTime: startTime as number } : null;
}

/** /proc/<pid>/stat, or null if there is no such process. */
export function readStat(pid: number): string | null {
  checkPid(pid);
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ESRCH')) return null;
    throw err;
  }
}

export function checkPid(pid: number): void {
  // 0 and negative pids address process groups (-1: every process we may signal).
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new UsageError(`pid must be a positive integer, got ${pid}`);
}
