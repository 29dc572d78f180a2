import fs from 'node:fs';

/** fds open in a process right now (from /proc/<pid>/fd). */
export function openFds(pid: number | 'self' = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}
