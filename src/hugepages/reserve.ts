import { join } from 'node:path';
import pRetry from 'p-retry';
import { UsageError, ZiuError } from '../errors.js';
import { logger } from '../log.js';
import type { HugepageHost } from './host.js';
import { pageSizeInfo } from './sizes.js';
import { compactMemoryFile, readCount, sizeDir } from './sysfs.js';

const log = logger('hugepages');

export interface ReserveOptions {
  pageSize: number;
  /** The pool size wanted (nr_hugepages), not an increment: pages already there count. */
  total: number;
  /** Reserve on this NUMA node only; the whole machine when omitted. */
  node?: number;
}

export interface ReleaseOptions {
  pageSize: number;
  /** The pool size wanted; 0 (the default) gives back every page not in use. */
  total?: number;
  node?: number;
}

export interface ReserveResult {
  pageSize: number;
  node: number | null;
  /** nr_hugepages before the call. */
  before: number;
  requested: number;
  /** nr_hugepages as read back after the call. */
  after: number;
  /** True when memory had to be compacted before the kernel gave enough. */
  compacted: boolean;
}

export interface ReleaseResult {
  pageSize: number;
  node: number | null;
  before: number;
  requested: number;
  after: number;
  /** Pages that could not be given back: in use, or promised to a mapping. */
  floor: number;
  /** True when `requested` was below `floor` and the pool stopped at the floor. */
  clamped: boolean;
}

/** The kernel gave fewer pages than asked, even after compaction; the old value is back. */
export class HugepagesShortError extends ZiuError {
  constructor(
    readonly pageSize: number,
    readonly node: number | null,
    readonly requested: number,
    readonly got: number,
    readonly before: number,
    readonly restored: number,
    readonly file: string,
    /** Why memory could not be compacted, when it could not. */
    readonly compactFailure?: string,
  ) {
    const name = pageSizeInfo(pageSize).name;
    const where = node === null ? '' : ` on node ${node}`;
    const boot = `hugepagesz=${name} hugepages=${node === null ? requested : `${node}:${requested}`}`;
    const compaction = compactFailure === undefined ? 'compacting it did not help' : `it could not be compacted (${compactFailure})`;
    const now = restored === before ? `is back to ${before}` : `is at ${restored}, not back to ${before}`;
    super(
      'ERR_ZIU_HUGEPAGES_SHORT',
      `asked for ${requested} x ${name} pages${where}, the kernel gave ${got} (was ${before}): ` +
        `memory is fragmented or short, and ${compaction}; ${file} ${now}. ` +
        `Free some memory, ask for fewer pages, or reserve them at boot (${boot})`,
    );
    this.name = 'HugepagesShortError';
  }
}

class ShortGrant extends Error {
  constructor(readonly got: number) {
    super(`kernel gave ${got} pages`);
  }
}

/**
 * Grow nr_hugepages to at least `total`; never shrinks it. The kernel may give
 * fewer pages than asked when memory is fragmented, so the value is read back;
 * if short, memory is compacted once and the write retried. Still short: the
 * previous value is restored and HugepagesShortError thrown, so a failed
 * reservation leaves the host as it was.
 */
export async function reserve(host: HugepageHost, opts: ReserveOptions): Promise<ReserveResult> {
  const { pageSize, total, node } = opts;
  checkCount('total', total);
  const file = join(await sizeDir(host, pageSize, node), 'nr_hugepages');
  const before = await readCount(host, file);
  const base = { pageSize, node: node ?? null, before, requested: total };
  if (before >= total) return { ...base, after: before, compacted: false };

  let compacted = false;
  let compactFailure: string | undefined;
  try {
    const after = await pRetry(
      async () => {
        await host.writeFile(file, String(total));
        const got = await readCount(host, file);
        if (got < total) throw new ShortGrant(got);
        return got;
      },
      {
        retries: 1,
        minTimeout: 0,
        onFailedAttempt: async (err) => {
          // Anything but a short grant (EACCES, EINVAL) is not helped by compaction.
          if (!(err instanceof ShortGrant)) throw err;
          if (err.retriesLeft === 0) return;
          log.warn({ file, requested: total, got: err.got }, 'kernel gave fewer hugepages than asked; compacting memory');
          // Containers often mount /proc/sys read-only: retry anyway, freed pages may have merged.
          try {
            await host.writeFile(compactMemoryFile(host), '1');
            compacted = true;
          } catch (e) {
            compactFailure = e instanceof Error ? e.message : String(e);
            log.warn({ err: e }, 'could not compact memory');
          }
        },
      },
    );
    log.info({ file, before, after, compacted }, 'reserved hugepages');
    return { ...base, after, compacted };
  } catch (err) {
    const restored = await restore(host, file, before, err);
    if (err instanceof ShortGrant) {
      throw new HugepagesShortError(pageSize, node ?? null, total, err.got, before, restored, file, compactFailure);
    }
    throw err;
  }
}

/** Put nr_hugepages back after a failed reserve; a failure here outranks the first one. */
async function restore(host: HugepageHost, file: string, value: number, first: unknown): Promise<number> {
  try {
    // A write refused outright (EACCES) changed nothing: do not repeat it.
    if ((await readCount(host, file)) === value) return value;
    await host.writeFile(file, String(value));
    const now = await readCount(host, file);
    log.warn({ file, restored: now }, 'hugepage reservation failed; previous value restored');
    return now;
  } catch (err) {
    throw new ZiuError(
      'ERR_ZIU_HUGEPAGES_RESTORE',
      `could not restore ${file} to ${value} after a failed reservation: ${err instanceof Error ? err.message : String(err)}`,
      { cause: new AggregateError([err, first]) },
    );
  }
}

/**
 * Shrink nr_hugepages towards `total`; never grows it and never goes below the
 * pages in use plus those promised to mappings (resv_hugepages), because the
 * kernel would otherwise turn the excess into surplus pages or refuse. Going
 * below that floor is not an error: the pool stops there and the result says
 * `clamped`, since the caller's aim (give back what is unused) is met.
 */
export async function release(host: HugepageHost, opts: ReleaseOptions): Promise<ReleaseResult> {
  const { pageSize, node } = opts;
  const total = opts.total ?? 0;
  checkCount('total', total);
  const dir = await sizeDir(host, pageSize, node);
  const file = join(dir, 'nr_hugepages');
  const before = await readCount(host, file);
  const free = await readCount(host, join(dir, 'free_hugepages'));
  const floor = await floorOf(host, pageSize, node, before, free);
  const base = { pageSize, node: node ?? null, before, requested: total, floor };
  if (total >= before) return { ...base, after: before, clamped: false };

  const target = Math.max(total, floor);
  if (target < before) await host.writeFile(file, String(target));
  const after = await readCount(host, file);
  log.info({ file, before, requested: total, floor, after }, 'released hugepages');
  return { ...base, after, clamped: total < floor };
}

/**
 * Globally the floor is (nr - free) + resv. Per node there is no resv file, so
 * a node may give back only its free pages that the global pool can spare
 * beyond the promised ones.
 */
async function floorOf(host: HugepageHost, pageSize: number, node: number | undefined, nr: number, free: number): Promise<number> {
  const global = await sizeDir(host, pageSize);
  const resv = await readCount(host, join(global, 'resv_hugepages'));
  if (node === undefined) return nr - free + resv;
  const globalFree = await readCount(host, join(global, 'free_hugepages'));
  const spare = Math.max(0, Math.min(free, globalFree - resv));
  return nr - spare;
}

export interface ChangeByOptions {
  pageSize: number;
  /** pages to add or give back, relative to the pool as it is now */
  pages: number;
  node?: number;
}

/**
 * Grow the pool by `pages` from what it holds now, not to a total read
 * earlier: pages another caller added meanwhile are kept. As reserve():
 * compacts once if short, and restores the size it found on a shortfall.
 */
export async function growBy(host: HugepageHost, opts: ChangeByOptions): Promise<ReserveResult> {
  checkCount('pages', opts.pages);
  const now = await readCount(host, join(await sizeDir(host, opts.pageSize, opts.node), 'nr_hugepages'));
  return reserve(host, { pageSize: opts.pageSize, total: now + opts.pages, ...(opts.node === undefined ? {} : { node: opts.node }) });
}

/**
 * Give back up to `pages` pages from what the pool holds now, never below the
 * pages in use or promised (release()): `before - after` says how many went
 * back, and a shortfall is `clamped`, not an error.
 */
export async function shrinkBy(host: HugepageHost, opts: ChangeByOptions): Promise<ReleaseResult> {
  checkCount('pages', opts.pages);
  const now = await readCount(host, join(await sizeDir(host, opts.pageSize, opts.node), 'nr_hugepages'));
  return release(host, { pageSize: opts.pageSize, total: Math.max(0, now - opts.pages), ...(opts.node === undefined ? {} : { node: opts.node }) });
}

function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new UsageError(`invalid ${name} '${value}': use a whole number of pages, 0 or more`);
  }
}
