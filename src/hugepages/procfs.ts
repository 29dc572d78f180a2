import { join } from 'node:path';
import type { HugepageHost } from './host.js';
import { parseSize, PAGE_1G, PAGE_2M } from './sizes.js';

// Parsers for the /proc files the hugepage module reads: mounts, buddyinfo, meminfo.

/** One line of /proc/mounts, paths unescaped. */
export interface MountEntry {
  source: string;
  dir: string;
  fsType: string;
  options: string[];
}

/** A hugetlbfs mount and the page size its files use. */
export interface HugetlbfsMount {
  dir: string;
  pageSize: number;
  options: string[];
}

/** What buddyinfo says one node could still give as hugepages at runtime. */
export interface BuddyNode {
  node: number;
  /** Free blocks of order >= 9 (DMA32, Normal, Movable), counted in 2 MiB units. */
  blocks2M: number;
  /** Free blocks of order >= 18 in 1 GiB units: 0 unless the kernel's max order reaches 18. */
  blocks1G: number;
  /** Highest order listed, e.g. 10 (4 MiB blocks) on x86-64. */
  maxOrder: number;
  /** Bytes free in blocks of the highest order. */
  maxOrderBytes: number;
}

/** x86-64 base page; buddyinfo counts blocks of 2^order of these. */
export const BASE_PAGE = 4096;
const ORDER_2M = Math.log2(PAGE_2M / BASE_PAGE);
const ORDER_1G = Math.log2(PAGE_1G / BASE_PAGE);

// ZONE_DMA is the first 16 MiB, kept for old devices; hugepages never come from it.
const HUGEPAGE_ZONES = new Set(['DMA32', 'Normal', 'Movable']);

/** The kernel writes space, tab, newline and backslash in mount paths as \ooo octal. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMounts(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const [source, dir, fsType, opts] = line.trim().split(/\s+/);
    if (source === undefined || dir === undefined || fsType === undefined) continue;
    out.push({
      source: unescapeMountField(source),
      dir: unescapeMountField(dir),
      fsType,
      options: (opts ?? '').split(',').filter((o) => o !== ''),
    });
  }
  return out;
}

/**
 * The hugetlbfs mounts among /proc/mounts entries. The kernel prints the page
 * size as e.g. "pagesize=2M" or "pagesize=1024M"; a mount without the option
 * uses the default size (Hugepagesize in meminfo).
 */
export function hugetlbfsMounts(entries: MountEntry[], defaultPageSize: number | null): HugetlbfsMount[] {
  const out: HugetlbfsMount[] = [];
  for (const e of entries) {
    if (e.fsType !== 'hugetlbfs') continue;
    const opt = e.options.find((o) => o.startsWith('pagesize='));
    const pageSize = opt === undefined ? defaultPageSize : sizeOrNull(opt.slice('pagesize='.length));
    if (pageSize === null) continue;
    out.push({ dir: e.dir, pageSize, options: e.options });
  }
  return out;
}

function sizeOrNull(text: string): number | null {
  try {
    return parseSize(text);
  } catch {
    return null;
  }
}

/** "Hugepagesize:    2048 kB" -> 2097152; null when meminfo does not say. */
export function parseHugepagesize(meminfo: string): number | null {
  const m = /^Hugepagesize:\s+(\d+)\s*kB\s*$/m.exec(meminfo);
  return m === null ? null : Number(m[1]) * 1024;
}

/**
 * "Node 0, zone   Normal   933   989 ..." -> per node, what could become
 * hugepages: an order-k block (k >= 9) holds 2^(k-9) 2 MiB pages.
 */
export function parseBuddyinfo(text: string): BuddyNode[] {
  const byNode = new Map<number, BuddyNode>();
  for (const line of text.split('\n')) {
    const m = /^\s*Node\s+(\d+),\s*zone\s+(\S+)\s+([\d\s]+)$/.exec(line);
    if (m === null) continue;
    const node = Number(m[1]);
    const counts = (m[3] ?? '').trim().split(/\s+/).map(Number);
    const entry = byNode.get(node) ?? { node, blocks2M: 0, blocks1G: 0, maxOrder: counts.length - 1, maxOrderBytes: 0 };
    byNode.set(node, entry);
    if (!HUGEPAGE_ZONES.has(m[2] ?? '')) continue;
    const maxOrder = counts.length - 1;
    entry.maxOrder = maxOrder;
    counts.forEach((count, order) => {
      if (order >= ORDER_2M) entry.blocks2M += count * 2 ** (order - ORDER_2M);
      if (order >= ORDER_1G) entry.blocks1G += count * 2 ** (order - ORDER_1G);
    });
    entry.maxOrderBytes += (counts[maxOrder] ?? 0) * 2 ** maxOrder * BASE_PAGE;
  }
  return [...byNode.values()].sort((a, b) => a.node - b.node);
}

export async function readMounts(host: HugepageHost): Promise<MountEntry[]> {
  return parseMounts(await host.readFile(join(host.procRoot, 'mounts')));
}

/** A /proc file's text, or null where the kernel or container does not provide it. */
export async function readOptional(host: HugepageHost, name: string): Promise<string | null> {
  const path = join(host.procRoot, name);
  return (await host.exists(path)) ? host.readFile(path) : null;
}
