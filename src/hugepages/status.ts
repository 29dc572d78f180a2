import { join } from 'node:path';
import type { HugepageHost } from './host.js';
import {
  BASE_PAGE,
  type BuddyNode,
  type HugetlbfsMount,
  hugetlbfsMounts,
  parseBuddyinfo,
  parseHugepagesize,
  readMounts,
  readOptional,
} from './procfs.js';
import { formatBytes, PAGE_SIZES, type PageSizeInfo } from './sizes.js';
import { globalSizeDir, listNodes, nodeSizeDir, readCount } from './sysfs.js';

export interface NodePages {
  node: number;
  total: number;
  free: number;
  surplus: number;
}

export interface PageSizeStatus {
  pageSize: number;
  name: PageSizeInfo['name'];
  total: number;
  free: number;
  /** Promised to mappings but not yet faulted in: counted in free, yet not available. */
  reserved: number;
  surplus: number;
  /** [] on a kernel without NUMA sysfs. */
  nodes: NodePages[];
}

export interface HugepageStatus {
  /** Hugepagesize from meminfo, the size of hugetlbfs mounts without pagesize=. */
  defaultPageSize: number | null;
  /** Only the sizes this kernel offers (no 1G entry without gigantic pages). */
  sizes: PageSizeStatus[];
  mounts: HugetlbfsMount[];
  /** [] when /proc/buddyinfo is not readable. */
  buddy: BuddyNode[];
  /** Caveats a person should read alongside the numbers. */
  notes: string[];
}

/** A snapshot of the host's hugepage pools, mounts and what could still be reserved. */
export async function readStatus(host: HugepageHost): Promise<HugepageStatus> {
  const meminfo = await readOptional(host, 'meminfo');
  const defaultPageSize = meminfo === null ? null : parseHugepagesize(meminfo);
  const buddyText = await readOptional(host, 'buddyinfo');
  const buddy = buddyText === null ? [] : parseBuddyinfo(buddyText);
  const nodes = await listNodes(host);

  const sizes: PageSizeStatus[] = [];
  for (const info of PAGE_SIZES) {
    const s = await readSize(host, info, nodes);
    if (s !== null) sizes.push(s);
  }
  return {
    defaultPageSize,
    sizes,
    mounts: hugetlbfsMounts(await readMounts(host), defaultPageSize),
    buddy,
    notes: notesFor(buddy, buddyText !== null),
  };
}

async function readSize(host: HugepageHost, info: PageSizeInfo, nodes: number[]): Promise<PageSizeStatus | null> {
  const dir = globalSizeDir(host, info.bytes);
  if (!(await host.exists(dir))) return null;
  const count = (name: string, d = dir): Promise<number> => readCount(host, join(d, name));
  const perNode: NodePages[] = [];
  for (const node of nodes) {
    const nd = nodeSizeDir(host, node, info.bytes);
    // A memoryless node (CPUs only) may list no hugepage directory.
    if (!(await host.exists(nd))) continue;
    perNode.push({
      node,
      total: await count('nr_hugepages', nd),
      free: await count('free_hugepages', nd),
      surplus: await count('surplus_hugepages', nd),
    });
  }
  return {
    pageSize: info.bytes,
    name: info.name,
    total: await count('nr_hugepages'),
    free: await count('free_hugepages'),
    reserved: await count('resv_hugepages'),
    surplus: await count('surplus_hugepages'),
    nodes: perNode,
  };
}

function notesFor(buddy: BuddyNode[], haveBuddyinfo: boolean): string[] {
  if (!haveBuddyinfo) return ['/proc/buddyinfo is not readable: cannot tell how many pages could still be reserved'];
  const notes: string[] = [];
  for (const b of buddy) {
    if (b.blocks1G > 0) continue;
    // The buddy allocator stops at 4 MiB; the kernel builds a 1 GiB page by
    // migrating pages out of a range, which buddyinfo cannot predict.
    notes.push(
      `node ${b.node}: 1G reservations at runtime need contiguous memory; ` +
        `buddyinfo shows at most ${b.maxOrderBytes / 2 ** 20} MiB in max-order (${formatBytes(2 ** b.maxOrder * BASE_PAGE)}) blocks`,
    );
  }
  return notes;
}
