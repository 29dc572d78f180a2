import { join } from 'node:path';
import { UsageError, ZiuError } from '../errors.js';
import type { HugepageHost } from './host.js';
import { pageSizeInfo } from './sizes.js';

// Where the kernel keeps hugepage counters (Documentation/admin-guide/mm/hugetlbpage.rst).

export type Counter = 'nr_hugepages' | 'free_hugepages' | 'resv_hugepages' | 'surplus_hugepages';

export function globalSizeDir(host: HugepageHost, pageSize: number): string {
  return join(host.sysRoot, 'kernel/mm/hugepages', pageSizeInfo(pageSize).sysfsDir);
}

export function nodesDir(host: HugepageHost): string {
  return join(host.sysRoot, 'devices/system/node');
}

export function nodeSizeDir(host: HugepageHost, node: number, pageSize: number): string {
  return join(nodesDir(host), `node${node}`, 'hugepages', pageSizeInfo(pageSize).sysfsDir);
}

export function compactMemoryFile(host: HugepageHost): string {
  return join(host.procRoot, 'sys/vm/compact_memory');
}

/** NUMA node numbers in ascending order; [] when sysfs has no node directory. */
export async function listNodes(host: HugepageHost): Promise<number[]> {
  const dir = nodesDir(host);
  if (!(await host.exists(dir))) return [];
  return (await host.readdir(dir))
    .map((name) => /^node(\d+)$/.exec(name)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

/** A sysfs counter as a number; anything but a plain decimal is an error naming the file. */
export async function readCount(host: HugepageHost, path: string): Promise<number> {
  const text = await host.readFile(path);
  const t = text.trim();
  if (!/^\d+$/.test(t)) throw new ZiuError('ERR_ZIU_SYSFS', `unexpected content in ${path}: '${t}'`);
  return Number(t);
}

/**
 * The directory holding a page size's counters, globally or for one node,
 * checked to exist so the caller gets "no 1G pages" rather than ENOENT.
 */
export async function sizeDir(host: HugepageHost, pageSize: number, node?: number): Promise<string> {
  const info = pageSizeInfo(pageSize);
  const global = globalSizeDir(host, pageSize);
  if (!(await host.exists(global))) {
    throw new ZiuError('ERR_ZIU_HUGEPAGES_UNSUPPORTED', `this kernel has no ${info.name} hugepages: ${global} is missing`);
  }
  if (node === undefined) return global;
  if (!Number.isSafeInteger(node) || node < 0) throw new UsageError(`invalid NUMA node '${node}': use 0, 1, ...`);
  const dir = nodeSizeDir(host, node, pageSize);
  if (!(await host.exists(dir))) {
    const nodes = await listNodes(host);
    const known = nodes.length === 0 ? 'sysfs lists no NUMA nodes' : `nodes are ${nodes.join(', ')}`;
    throw new ZiuError('ERR_ZIU_NO_NODE', `no ${info.name} hugepages on NUMA node ${node}: ${dir} is missing (${known})`);
  }
  return dir;
}
