import { resolve } from 'node:path';
import { ZiuError } from '../errors.js';
import { logger } from '../log.js';
import { checkTrustedPath } from '../trusted-dir.js';
import { HUGETLBFS_MAGIC, type HugepageHost } from './host.js';
import { hugetlbfsMounts, type MountEntry, parseHugepagesize, readMounts, readOptional } from './procfs.js';
import { formatBytes, pageSizeInfo } from './sizes.js';
import { sizeDir } from './sysfs.js';

const log = logger('hugepages');

export interface MountResult {
  dir: string;
  pageSize: number;
  /** False when an existing mount was reused. */
  created: boolean;
}

/**
 * Where ziu mounts hugetlbfs for a page size: /dev/hugepages-ziu-2M or -1G,
 * or $ZIU_HUGEPAGE_DIR_2M / $ZIU_HUGEPAGE_DIR_1G. Its own mount, so that the
 * page size is certain and the distro's /dev/hugepages is left alone.
 */
export function defaultMountDir(pageSize: number, env: NodeJS.ProcessEnv = process.env): string {
  const name = pageSizeInfo(pageSize).name;
  return env[`ZIU_HUGEPAGE_DIR_${name}`] || `/dev/hugepages-ziu-${name}`;
}

/**
 * A hugetlbfs mount for `pageSize` at `dir`: reused if there, created
 * (mkdir -p, mount) if nothing is mounted there. Anything else mounted at dir
 * is an error, never shadowed.
 */
export async function ensureMount(host: HugepageHost, opts: { pageSize: number; dir: string }): Promise<MountResult> {
  const { pageSize } = opts;
  const name = pageSizeInfo(pageSize).name;
  await sizeDir(host, pageSize);
  // Before any symlink is resolved: a mount point another user can redirect (a symlink planted
  // under /tmp that names /etc) must never get a file system mounted over it.
  checkTrustedPath(opts.dir);
  const dir = await canonical(host, opts.dir);
  const top = await topMount(host, dir);
  if (top !== undefined) {
    const meminfo = await readOptional(host, 'meminfo');
    checkHugetlbfs(top, pageSize, meminfo === null ? null : parseHugepagesize(meminfo));
    log.debug({ dir, pageSize: name }, 'reusing hugetlbfs mount');
    return { dir, pageSize, created: false };
  }
  await host.mkdirp(dir);
  await host.mount({ dir, pageSize });
  // Trust the kernel's word over mount(8)'s exit code: statfs tells the fs and its block size.
  const facts = await host.statfs(dir);
  if (facts.type !== HUGETLBFS_MAGIC || facts.bsize !== pageSize) {
    throw new ZiuError(
      'ERR_ZIU_NOT_HUGETLBFS',
      `mounted hugetlbfs for ${name} pages at ${dir}, but statfs reports f_type 0x${facts.type.toString(16)} ` +
        `with ${formatBytes(facts.bsize)} blocks`,
    );
  }
  log.info({ dir, pageSize: name }, 'mounted hugetlbfs');
  return { dir, pageSize, created: true };
}

/**
 * Unmount the hugetlbfs at dir. True if something was unmounted, false if
 * nothing was mounted there; another fs type at dir is an error, left alone.
 */
export async function unmount(host: HugepageHost, dir: string): Promise<boolean> {
  checkTrustedPath(dir);
  const path = await canonical(host, dir);
  const top = await topMount(host, path);
  if (top === undefined) return false;
  if (top.fsType !== 'hugetlbfs') throw notHugetlbfs(path, top);
  await host.umount(path);
  log.info({ dir: path }, 'unmounted hugetlbfs');
  return true;
}

/** /proc/mounts lists resolved paths, so compare against the resolved dir. */
async function canonical(host: HugepageHost, dir: string): Promise<string> {
  const abs = resolve(dir);
  return (await host.exists(abs)) ? host.realpath(abs) : abs;
}

/** Stacked mounts are listed in order; the last one at a path is the one visible. */
async function topMount(host: HugepageHost, dir: string): Promise<MountEntry | undefined> {
  return (await readMounts(host)).filter((m) => m.dir === dir).at(-1);
}

function checkHugetlbfs(entry: MountEntry, pageSize: number, defaultPageSize: number | null): void {
  if (entry.fsType !== 'hugetlbfs') throw notHugetlbfs(entry.dir, entry);
  const [mounted] = hugetlbfsMounts([entry], defaultPageSize);
  if (mounted !== undefined && mounted.pageSize !== pageSize) {
    throw new ZiuError(
      'ERR_ZIU_HUGETLBFS_PAGE_SIZE',
      `${entry.dir} is a hugetlbfs mount for ${formatBytes(mounted.pageSize)} pages, not ${pageSizeInfo(pageSize).name}`,
    );
  }
}

function notHugetlbfs(dir: string, entry: MountEntry): ZiuError {
  return new ZiuError('ERR_ZIU_NOT_HUGETLBFS', `${dir} is a ${entry.fsType} mount (from ${entry.source}), not hugetlbfs`);
}
