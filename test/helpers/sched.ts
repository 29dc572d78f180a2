import fs from 'node:fs';

/** policy and rt_priority from /proc/<pid>/task/<tid>/stat (fields 41, 40), and Cpus_allowed_list from its status */
export function procSched(pid: number, tid: number): { policy: number; rtPriority: number; cpusAllowed: string } {
  const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  // comm may hold spaces: the fields after it start past the last ')'
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const field = (n: number): number => Number(rest[n - 3]);
  const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  const cpus = /^Cpus_allowed_list:\s*(\S+)$/m.exec(status)?.[1] ?? '';
  return { policy: field(41), rtPriority: field(40), cpusAllowed: cpus };
}
