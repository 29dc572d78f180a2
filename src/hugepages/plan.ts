import { UsageError } from '../errors.js';
import type { BuddyNode } from './procfs.js';
import { formatBytes, PAGE_1G, PAGE_2M, PAGE_SIZES } from './sizes.js';
import type { HugepageStatus, PageSizeStatus } from './status.js';

export type Verdict = 'fits-now' | 'fits-after-reserve' | 'does-not-fit';

/** Memory the new instance wants, in bytes of one page size, optionally on one node. */
export interface Want {
  pageSize: number;
  bytes: number;
  node?: number;
}

export interface PlanOptions {
  /** Count pages that could be reserved now (default true); false: only free pages count. */
  reserveAtRuntime?: boolean;
}

/**
 * One page size on the whole machine (node null) or on one node. Every page
 * size wanted gets a whole-machine row summing all its wants; node wants add a
 * row per node, since a node can be full while the machine is not.
 */
export interface PlanRow {
  pageSize: number;
  node: number | null;
  pagesNeeded: number;
  /** Free and not promised to a mapping; the old instance's pages are in use, so not here. */
  pagesFree: number;
  /** More pages buddyinfo suggests the kernel could reserve now; for 1G only a hint. */
  pagesAddable: number;
  verdict: Verdict;
  reason: string;
}

export interface Plan {
  /** The worst row's verdict; 'fits-now' when nothing is wanted. */
  verdict: Verdict;
  rows: PlanRow[];
}

const RANK: Record<Verdict, number> = { 'fits-now': 0, 'fits-after-reserve': 1, 'does-not-fit': 2 };

/**
 * Whether the wanted memory fits beside what is in use, judged from a status
 * snapshot. Pure: the answer is advice, reserve() is what checks for real.
 */
export function plan(status: HugepageStatus, wants: Want[], options: PlanOptions = {}): Plan {
  const runtime = options.reserveAtRuntime ?? true;
  const rows: PlanRow[] = [];
  for (const info of PAGE_SIZES) {
    const mine = wants.filter((w) => checkWant(w).pageSize === info.bytes);
    if (mine.length === 0) continue;
    const pages = (ws: Want[]): number => ws.reduce((n, w) => n + Math.ceil(w.bytes / info.bytes), 0);
    const size = status.sizes.find((s) => s.pageSize === info.bytes);
    rows.push(judge(info.bytes, null, pages(mine), size, status.buddy, runtime));
    const nodes = [...new Set(mine.flatMap((w) => (w.node === undefined ? [] : [w.node])))].sort((a, b) => a - b);
    for (const node of nodes) {
      rows.push(judge(info.bytes, node, pages(mine.filter((w) => w.node === node)), size, status.buddy, runtime));
    }
  }
  const verdict = rows.reduce<Verdict>((v, r) => (RANK[r.verdict] > RANK[v] ? r.verdict : v), 'fits-now');
  return { verdict, rows };
}

function checkWant(w: Want): Want {
  if (!PAGE_SIZES.some((p) => p.bytes === w.pageSize)) {
    throw new UsageError(`unknown page size '${formatBytes(w.pageSize)}': use 2M or 1G`);
  }
  if (!Number.isSafeInteger(w.bytes) || w.bytes <= 0) {
    throw new UsageError(`invalid size '${w.bytes}' for ${formatBytes(w.pageSize)} pages: use a whole number of bytes above 0`);
  }
  if (w.node !== undefined && (!Number.isSafeInteger(w.node) || w.node < 0)) {
    throw new UsageError(`invalid NUMA node '${w.node}': use 0, 1, ...`);
  }
  return w;
}

function judge(
  pageSize: number,
  node: number | null,
  needed: number,
  size: PageSizeStatus | undefined,
  buddy: BuddyNode[],
  runtime: boolean,
): PlanRow {
  const name = formatBytes(pageSize);
  const where = node === null ? 'in total' : `on node ${node}`;
  const head = `needs ${needed} x ${name} pages (${formatBytes(needed * pageSize)}) ${where}`;
  const row = (pagesFree: number, pagesAddable: number, verdict: Verdict, reason: string): PlanRow => ({
    pageSize, node, pagesNeeded: needed, pagesFree, pagesAddable, verdict, reason,
  });

  if (size === undefined) return row(0, 0, 'does-not-fit', `${head}; this kernel has no ${name} hugepages`);
  let free: number;
  if (node === null) {
    free = Math.max(0, size.free - size.reserved);
  } else {
    const n = size.nodes.find((x) => x.node === node);
    if (n === undefined) {
      const known = size.nodes.length === 0 ? 'sysfs lists no NUMA nodes' : `nodes are ${size.nodes.map((x) => x.node).join(', ')}`;
      return row(0, 0, 'does-not-fit', `${head}; there is no node ${node} (${known})`);
    }
    free = n.free;
  }
  if (free >= needed) return row(free, 0, 'fits-now', `${head}; ${free} free`);

  const nodes = node === null ? buddy : buddy.filter((b) => b.node === node);
  const addable = runtime ? addablePages(pageSize, nodes) : 0;
  const more = needed - free;
  const hint = hintFor(pageSize, nodes, addable);
  if (!runtime) {
    return row(free, 0, 'does-not-fit', `${head}; ${free} free and runtime reservation is off: short by ${more} pages (${formatBytes(more * pageSize)})`);
  }
  if (addable >= more) return row(free, addable, 'fits-after-reserve', `${head}; ${free} free, reserve ${more} more (${hint})`);
  const short = more - addable;
  return row(
    free,
    addable,
    'does-not-fit',
    `${head}; ${free} free and at most ${addable} more could be reserved now (${hint}): short by ${short} pages (${formatBytes(short * pageSize)})`,
  );
}

/**
 * 2M pages: free buddy blocks of order >= 9. 1G pages: free order >= 18 blocks
 * where the kernel has them, else the max-order bytes as an upper bound, since
 * the kernel assembles a gigantic page by migrating pages out of a range.
 */
function addablePages(pageSize: number, nodes: BuddyNode[]): number {
  if (pageSize === PAGE_2M) return nodes.reduce((n, b) => n + b.blocks2M, 0);
  return nodes.reduce((n, b) => n + (b.blocks1G > 0 ? b.blocks1G : Math.floor(b.maxOrderBytes / PAGE_1G)), 0);
}

function hintFor(pageSize: number, nodes: BuddyNode[], addable: number): string {
  if (nodes.length === 0) return 'buddyinfo has no data for it';
  if (pageSize === PAGE_2M) return `buddyinfo: ${addable} free 2M blocks`;
  const mib = nodes.reduce((n, b) => n + b.maxOrderBytes, 0) / 2 ** 20;
  return `not certain: 1G reservations at runtime need contiguous memory; buddyinfo shows at most ${mib} MiB in max-order blocks`;
}
