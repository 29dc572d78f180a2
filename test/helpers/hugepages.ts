import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const SYS = '/sys/kernel/mm/hugepages';

/** Why tests that need real hugepages cannot run here, or null when they can. */
export function realHugepagesUnavailable(pageSizeKb = 2048): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  if (!fs.existsSync(`${SYS}/hugepages-${pageSizeKb}kB`)) return `kernel has no ${pageSizeKb} kB hugepages`;
  return null;
}

export interface PoolCounters {
  total: number;
  free: number;
}

export function pool(pageSizeKb = 2048): PoolCounters {
  const read = (f: string): number => Number(fs.readFileSync(`${SYS}/hugepages-${pageSizeKb}kB/${f}`, 'utf8'));
  return { total: read('nr_hugepages'), free: read('free_hugepages') };
}

/**
 * Shrink the pool to the pages in use, so that a test about reserving pages
 * starts from none free, as on a host that pre-allocated nothing; a host
 * whose pool already holds free pages (every DPDK host's does) must pass too.
 * Restore it with a hostSnapshot() taken before.
 */
export function noFreePages(pageSizeKb = 2048): PoolCounters {
  const p = pool(pageSizeKb);
  if (p.free > 0) fs.writeFileSync(`${SYS}/hugepages-${pageSizeKb}kB/nr_hugepages`, String(p.total - p.free));
  return pool(pageSizeKb);
}

export function hugetlbfsMounts(): string[] {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'hugetlbfs')
    .map((f) => f[1]!);
}

/**
 * Snapshot the pool and the hugetlbfs mounts; restore() removes files under
 * mounts that appeared, unmounts them, and puts nr_hugepages back, whatever
 * the test did or failed to do. With mountsUnder, only mounts whose path
 * starts with it are this test's: on a shared host another test's mounts
 * appear meanwhile too, and their files are not ours to remove.
 */
export function hostSnapshot(pageSizeKb = 2048, o: { mountsUnder?: string } = {}): { restore: () => void } {
  const nr = `${SYS}/hugepages-${pageSizeKb}kB/nr_hugepages`;
  const before = fs.readFileSync(nr, 'utf8').trim();
  const mountsBefore = new Set(hugetlbfsMounts());
  return {
    restore() {
      for (const dir of hugetlbfsMounts()) {
        if (mountsBefore.has(dir) || (o.mountsUnder !== undefined && !dir.startsWith(o.mountsUnder))) continue;
        for (const entry of fs.readdirSync(dir)) fs.rmSync(`${dir}/${entry}`, { recursive: true, force: true });
        execFileSync('umount', [dir]);
        fs.rmSync(dir, { recursive: true, force: true });
      }
      fs.writeFileSync(nr, before);
    },
  };
}
