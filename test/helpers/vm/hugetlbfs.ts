import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { pool, realHugepagesUnavailable } from '../hugepages.js';

const NR = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';

export interface GuestHugetlbfs {
  dir: string;
  pages: number;
  /** pages added to the pool for it */
  raised: number;
  /** remove what is left in it, unmount it, and give back the pages raised */
  restore(): void;
}

/**
 * A hugetlbfs mount of the test's own (2 MiB pages) with room for `bytes`
 * of guest memory, the pool raised by what it lacks. Only this mount and
 * these pages are undone: other tests on the host may hold mounts and pages
 * of their own meanwhile. Returns the reason when the host cannot give the pages.
 */
export function guestHugetlbfs(bytes: number): GuestHugetlbfs | { reason: string } {
  const why = realHugepagesUnavailable(2048);
  if (why) return { reason: why };
  const pages = Math.ceil(bytes / (2 << 20));
  const before = pool(2048);
  const raised = Math.max(0, pages - before.free);
  const giveBack = (): void => {
    if (raised > 0) fs.writeFileSync(NR, String(Math.max(0, pool(2048).total - raised)));
  };
  if (raised > 0) fs.writeFileSync(NR, String(before.total + raised));
  if (pool(2048).free < pages) {
    const free = pool(2048).free;
    giveBack();
    return { reason: `the kernel gave ${free} free 2 MiB pages of the ${pages} the guest needs (memory too fragmented)` };
  }
  const dir = fs.mkdtempSync('/tmp/ziu-vm-hugetlbfs-');
  try {
    execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M,mode=0700', 'ziu-vm', dir]);
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    giveBack();
    throw err;
  }
  return {
    dir,
    pages,
    raised,
    restore() {
      for (const f of fs.readdirSync(dir)) fs.rmSync(`${dir}/${f}`, { force: true });
      execFileSync('umount', [dir]);
      fs.rmdirSync(dir);
      giveBack();
    },
  };
}
