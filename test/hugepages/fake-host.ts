import { mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { HUGETLBFS_MAGIC, realHost, type FsFacts, type HugepageHost } from '../../src/hugepages/host.js';
import { pageSizeInfo, PAGE_1G, PAGE_2M } from '../../src/hugepages/sizes.js';

// A kernel's hugepage files laid out in a fresh temp dir, with just enough
// behaviour to test against: nr_hugepages writes move free pages (and the
// node/global pair together), the kernel may grant fewer pages than asked,
// and mount/umount edit <proc>/mounts.

export interface GlobalCounts {
  nr: number;
  free: number;
  resv?: number;
  surplus?: number;
}

export interface NodeCounts {
  nr: number;
  free: number;
  surplus?: number;
}

export interface WriteContext {
  path: string;
  asked: number;
  current: number;
  /** How many times 1 was written to compact_memory so far. */
  compactions: number;
}

export interface FakeOptions {
  /** Page sizes the fake kernel has; omit '1G' for a kernel without gigantic pages. */
  global?: Partial<Record<'2M' | '1G', GlobalCounts>>;
  /** Per node, per size; null for sysfs without a node directory. */
  nodes?: Array<Partial<Record<'2M' | '1G', NodeCounts>>> | null;
  buddyinfo?: string | null;
  mounts?: string;
  meminfo?: string;
  /** What the kernel stores when asked for `asked` pages; default: all of them. Throw to fail the write. */
  onWrite?: (ctx: WriteContext) => number;
  /** Thrown by writes to compact_memory, as in a container with /proc/sys read-only. */
  compactError?: Error;
  /** What statfs reports for a dir; default: derived from <proc>/mounts. */
  statfs?: (dir: string) => FsFacts;
}

export interface FakeHost {
  host: HugepageHost;
  root: string;
  /** Every write made through the host, in order, paths relative to root. */
  writes: Array<{ path: string; data: string }>;
  compactions(): number;
  /** A counter file's value, path relative to root. */
  count(rel: string): Promise<number>;
  cleanup(): Promise<void>;
}

export const MEMINFO_2M = 'MemTotal:       16318760 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n';

export function sizeRel(size: '2M' | '1G', node?: number): string {
  const dir = pageSizeInfo(size === '2M' ? PAGE_2M : PAGE_1G).sysfsDir;
  return node === undefined ? `sys/kernel/mm/hugepages/${dir}` : `sys/devices/system/node/node${node}/hugepages/${dir}`;
}

export async function fakeHost(opts: FakeOptions = {}): Promise<FakeHost> {
  const root = await realpath(await mkdtemp(join(tmpdir(), 'ziu-hugepages-')));
  const put = async (rel: string, text: string): Promise<void> => {
    await mkdir(dirname(join(root, rel)), { recursive: true });
    await writeFile(join(root, rel), text);
  };
  const global = opts.global ?? { '2M': { nr: 0, free: 0 }, '1G': { nr: 0, free: 0 } };
  for (const [size, c] of Object.entries(global) as Array<['2M' | '1G', GlobalCounts]>) {
    const d = sizeRel(size);
    await put(`${d}/nr_hugepages`, `${c.nr}\n`);
    await put(`${d}/free_hugepages`, `${c.free}\n`);
    await put(`${d}/resv_hugepages`, `${c.resv ?? 0}\n`);
    await put(`${d}/surplus_hugepages`, `${c.surplus ?? 0}\n`);
  }
  const nodes = opts.nodes === undefined ? [{ '2M': { nr: 0, free: 0 }, '1G': { nr: 0, free: 0 } }] : opts.nodes;
  for (const [i, sizes] of (nodes ?? []).entries()) {
    await put(`sys/devices/system/node/node${i}/meminfo`, '');
    for (const [size, c] of Object.entries(sizes) as Array<['2M' | '1G', NodeCounts]>) {
      const d = sizeRel(size, i);
      await put(`${d}/nr_hugepages`, `${c.nr}\n`);
      await put(`${d}/free_hugepages`, `${c.free}\n`);
      await put(`${d}/surplus_hugepages`, `${c.surplus ?? 0}\n`);
    }
  }
  if (nodes !== null) await put('sys/devices/system/node/online', `0-${Math.max(0, nodes.length - 1)}\n`);
  if (opts.buddyinfo !== null) await put('proc/buddyinfo', opts.buddyinfo ?? '');
  await put('proc/mounts', opts.mounts ?? 'sysfs /sys sysfs rw,relatime 0 0\n');
  await put('proc/meminfo', opts.meminfo ?? MEMINFO_2M);
  await put('proc/sys/vm/compact_memory', '');

  const fs = realHost({ sysRoot: join(root, 'sys'), procRoot: join(root, 'proc') });
  const writes: FakeHost['writes'] = [];
  let compactions = 0;
  const readNum = async (path: string): Promise<number> => Number((await readFile(path, 'utf8')).trim());
  const add = async (path: string, delta: number): Promise<void> => {
    if (await fs.exists(path)) await writeFile(path, `${(await readNum(path)) + delta}\n`);
  };
  const mountsFile = join(root, 'proc/mounts');
  const mountLines = async (): Promise<string[]> => (await readFile(mountsFile, 'utf8')).split('\n').filter((l) => l.trim() !== '');
  const escape = (p: string): string => p.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);

  const host: HugepageHost = {
    ...fs,
    writeFile: async (path, data) => {
      writes.push({ path: path.slice(root.length + 1), data });
      if (path === join(root, 'proc/sys/vm/compact_memory')) {
        if (opts.compactError !== undefined) throw opts.compactError;
        if (data.trim() === '1') compactions++;
        return;
      }
      if (basename(path) !== 'nr_hugepages') return fs.writeFile(path, data);
      const current = await readNum(path);
      const asked = Number(data.trim());
      const stored = opts.onWrite?.({ path, asked, current, compactions }) ?? asked;
      // New pages arrive free and freed pages leave the free count; the node
      // and global files describe the same pages, so both move.
      const delta = stored - current;
      const dir = dirname(path);
      await writeFile(path, `${stored}\n`);
      await add(join(dir, 'free_hugepages'), delta);
      const size = basename(dir);
      const other = dir.includes('/devices/system/node/')
        ? join(root, 'sys/kernel/mm/hugepages', size)
        : join(root, 'sys/devices/system/node/node0/hugepages', size);
      await add(join(other, 'nr_hugepages'), delta);
      await add(join(other, 'free_hugepages'), delta);
    },
    statfs: async (dir) => {
      if (opts.statfs !== undefined) return opts.statfs(dir);
      const line = (await mountLines()).filter((l) => l.split(/\s+/)[1] === escape(dir)).at(-1);
      const [, , type, options] = line?.split(/\s+/) ?? [];
      if (type !== 'hugetlbfs') return { type: 0xef53, bsize: 4096, blocks: 1000, bfree: 500 };
      const ps = /pagesize=(\d+)([MG])/.exec(options ?? '');
      const bsize = ps === null ? PAGE_2M : Number(ps[1]) * (ps[2] === 'G' ? 2 ** 30 : 2 ** 20);
      return { type: HUGETLBFS_MAGIC, bsize, blocks: 0, bfree: 0 };
    },
    mount: async ({ dir, pageSize }) => {
      writes.push({ path: 'mount', data: dir });
      const line = `nodev ${escape(dir)} hugetlbfs rw,relatime,pagesize=${pageSizeInfo(pageSize).name} 0 0`;
      await writeFile(mountsFile, [...(await mountLines()), line, ''].join('\n'));
    },
    umount: async (dir) => {
      writes.push({ path: 'umount', data: dir });
      const lines = await mountLines();
      const i = lines.map((l) => l.split(/\s+/)[1]).lastIndexOf(escape(dir));
      if (i < 0) throw new Error(`umount: ${dir}: not mounted`);
      lines.splice(i, 1);
      await writeFile(mountsFile, [...lines, ''].join('\n'));
    },
  };

  return {
    host,
    root,
    writes,
    compactions: () => compactions,
    count: (rel) => readNum(join(root, rel)),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}
