import { access, readdir, readFile, realpath, statfs, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { ZiuError } from '../errors.js';
import { ensureTrustedDir } from '../trusted-dir.js';
import { pageSizeInfo } from './sizes.js';

/** f_type of a hugetlbfs mount (linux/magic.h). */
export const HUGETLBFS_MAGIC = 0x958458f6;

/** What statfs(2) says about a directory: for hugetlbfs, bsize is the page size. */
export interface FsFacts {
  type: number;
  bsize: number;
  blocks: number;
  bfree: number;
}

/**
 * The operating system as the hugepage module sees it: sysfs and procfs files,
 * statfs and mount. Tests swap in a fake rooted in a temp dir; everything else
 * goes through the real one.
 */
export interface HugepageHost {
  readonly sysRoot: string;
  readonly procRoot: string;
  readFile(path: string): Promise<string>;
  writeFile(path: string, data: string): Promise<void>;
  readdir(path: string): Promise<string[]>;
  exists(path: string): Promise<boolean>;
  mkdirp(path: string): Promise<void>;
  /** Symlinks resolved, so the path matches what /proc/mounts lists. */
  realpath(path: string): Promise<string>;
  statfs(path: string): Promise<FsFacts>;
  mount(opts: { dir: string; pageSize: number }): Promise<void>;
  umount(dir: string): Promise<void>;
}

export interface RealHostOptions {
  sysRoot?: string;
  procRoot?: string;
}

/** The host backed by node:fs and the mount(8)/umount(8) binaries. */
export function realHost(options: RealHostOptions = {}): HugepageHost {
  return {
    sysRoot: options.sysRoot ?? '/sys',
    procRoot: options.procRoot ?? '/proc',
    readFile: (path) => readFile(path, 'utf8'),
    writeFile: (path, data) => writeFile(path, data),
    readdir: (path) => readdir(path),
    exists: (path) =>
      access(path).then(
        () => true,
        () => false,
      ),
    // Every directory on the way verified (ours or root's, no symlink another user planted), new ones 0755.
    mkdirp: async (path) => {
      ensureTrustedDir(path, { create: true, mode: 0o755, shared: true });
    },
    realpath: (path) => realpath(path),
    statfs: async (path) => {
      const s = await statfs(path);
      return { type: s.type, bsize: s.bsize, blocks: s.blocks, bfree: s.bfree };
    },
    mount: async ({ dir, pageSize }) => {
      const args = ['-t', 'hugetlbfs', '-o', `pagesize=${pageSizeInfo(pageSize).name}`, 'nodev', dir];
      await run('mount', args);
    },
    umount: async (dir) => {
      await run('umount', [dir]);
    },
  };
}

async function run(cmd: string, args: string[]): Promise<void> {
  const r = await execa(cmd, args, { reject: false, stdin: 'ignore' });
  if (r.failed) {
    const why = r.stderr.trim() || r.shortMessage;
    throw new ZiuError('ERR_ZIU_MOUNT', `${cmd} ${args.join(' ')} failed: ${why}`, { cause: r });
  }
}
