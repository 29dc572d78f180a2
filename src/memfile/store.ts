import fs from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { ZiuError, UsageError, hasCode } from '../errors.js';
import {
  defaultMountDir,
  ensureMount,
  formatBytes,
  HUGETLBFS_MAGIC,
  pageSizeInfo,
  readStatus,
  release,
  reserve,
  unmount,
  PAGE_SIZES,
  type HugepageHost,
} from '../hugepages/index.js';
import { logger } from '../log.js';
import { ensureTrustedDir, TrustedDir } from '../trusted-dir.js';
import { check, native } from '../native/index.js';
import { Ledger } from './ledger.js';
import { checkNamePart } from './names.js';

const log = logger('memfile');

/** f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;
const BASE_PAGE = 4096;
const { ENOSPC } = constants.errno;

/**
 * Where a mem file's memory comes from. hugetlbfs: real hugepages, reserved
 * and prepopulated. tmpfs: ordinary shared memory in a file (no root or no
 * hugepages). memfd: an anonymous file that lives as long as an fd to it, for
 * callers in the same process (the probe's guest memory, tests).
 */
export type Backing = 'hugetlbfs' | 'tmpfs' | 'memfd';

export interface MemFileStoreOptions {
  host: HugepageHost;
  /** hugetlbfs mount dir for a page size; default /dev/hugepages-ziu-2M|1G */
  hugetlbfsDir?: (pageSize: number) => string;
  /** default /dev/shm/ziu, or $ZIU_TMPFS_DIR */
  tmpfsDir?: string;
  /** default /run/ziu, or $ZIU_STATE_DIR */
  stateDir?: string;
  /** default: running as root */
  privileged?: boolean;
}

export interface CreateSpec {
  instance: string;
  role: string;
  /** bytes wanted; rounded up to a whole number of pages of pageSize */
  size: number;
  pageSize: number;
  /** 'auto' (the default): hugetlbfs when root and the kernel has the page size, else tmpfs */
  backing?: Backing | 'auto';
}

export interface MemFile {
  instance: string;
  role: string;
  backing: Backing;
  /** the file to give the datapath as --mem-file; null for memfd (use fd) */
  path: string | null;
  /** memfd only: the fd, owned by the caller */
  fd?: number;
  bytes: number;
  /** bytes allocated now (st_blocks): equals bytes once prepopulated */
  allocated: number;
  /** the page size backing the memory: 4096 for tmpfs and memfd */
  pageSize: number;
  /** pages ziu added to nr_hugepages for this file; given back on remove */
  addedPages: number;
}

export interface CreateResult extends MemFile {
  /** bytes asked for, before rounding */
  requested: number;
  prepopulateMs: number;
  /** what a person should know: a fallback, a mount created, pages reserved */
  notes: string[];
}

export interface RemoveResult {
  instance: string;
  role: string;
  backing: Backing;
  path: string;
  bytes: number;
  releasedPages: number;
}

/** Round up to whole pages; the datapath maps the file in whole pages anyway. */
export function roundToPages(size: number, pageSize: number): number {
  if (!Number.isSafeInteger(size) || size <= 0) throw new UsageError(`invalid size '${size}': must be greater than zero`);
  return Math.ceil(size / pageSize) * pageSize;
}

/**
 * Mem files: memory for a datapath instance, allocated and zeroed before the
 * instance starts, named <instance>/<role>. Creation either completes or
 * leaves the host as it found it: file, directory, mount and reservation are
 * undone in reverse order on any failure.
 */
export class MemFileStore {
  readonly host: HugepageHost;
  readonly tmpfsDir: string;
  readonly privileged: boolean;
  readonly ledger: Ledger;
  readonly #hugetlbfsDir: (pageSize: number) => string;

  constructor(options: MemFileStoreOptions) {
    this.host = options.host;
    this.#hugetlbfsDir = options.hugetlbfsDir ?? ((p) => defaultMountDir(p));
    this.tmpfsDir = options.tmpfsDir ?? process.env['ZIU_TMPFS_DIR'] ?? '/dev/shm/ziu';
    this.ledger = new Ledger(options.stateDir ?? process.env['ZIU_STATE_DIR'] ?? '/run/ziu');
    this.privileged = options.privileged ?? process.getuid?.() === 0;
  }

  hugetlbfsDir(pageSize: number): string {
    return this.#hugetlbfsDir(pageSize);
  }

  /** The backing 'auto' resolves to, and why (for the operator). */
  async chooseBacking(pageSize: number): Promise<{ backing: Backing; note: string | null }> {
    const name = pageSizeInfo(pageSize).name;
    if (!this.privileged) {
      return { backing: 'tmpfs', note: `not root: using tmpfs (${this.tmpfsDir}) instead of ${name} hugepages` };
    }
    const status = await readStatus(this.host);
    if (!status.sizes.some((s) => s.pageSize === pageSize)) {
      return { backing: 'tmpfs', note: `this kernel has no ${name} hugepages: using tmpfs (${this.tmpfsDir})` };
    }
    return { backing: 'hugetlbfs', note: null };
  }

  async create(spec: CreateSpec): Promise<CreateResult> {
    const instance = checkNamePart('instance', spec.instance);
    const role = checkNamePart('role', spec.role);
    const pageSize = pageSizeInfo(spec.pageSize).bytes;
    const bytes = roundToPages(spec.size, pageSize);
    const notes: string[] = [];
    let backing: Backing;
    if (spec.backing === undefined || spec.backing === 'auto') {
      const chosen = await this.chooseBacking(pageSize);
      backing = chosen.backing;
      if (chosen.note) notes.push(chosen.note);
    } else {
      backing = spec.backing;
    }
    if (bytes !== spec.size) notes.push(`size rounded up from ${spec.size} to ${bytes} bytes (${formatBytes(pageSize)} pages)`);

    const started = performance.now();
    let made: MemFile;
    if (backing === 'hugetlbfs') made = await this.#createHugetlbfs(instance, role, bytes, pageSize, notes);
    else if (backing === 'tmpfs') made = await this.#createTmpfs(instance, role, bytes);
    else made = this.#createMemfd(instance, role, bytes);
    const prepopulateMs = performance.now() - started;
    log.info({ instance, role, backing, bytes, path: made.path, ms: Math.round(prepopulateMs) }, 'mem file created');
    return { ...made, requested: spec.size, prepopulateMs, notes };
  }

  async #createHugetlbfs(instance: string, role: string, bytes: number, pageSize: number, notes: string[]): Promise<MemFile> {
    const name = pageSizeInfo(pageSize).name;
    if (!this.privileged) {
      throw new UsageError(
        `creating a hugetlbfs mem file needs root (it writes nr_hugepages and mounts hugetlbfs): run as root or use --backing tmpfs`,
      );
    }
    const pages = bytes / pageSize;
    const undo: Array<() => Promise<void>> = [];
    const rollback = async (): Promise<void> => {
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch (err) {
          log.error({ err, instance, role }, 'could not undo a step of a failed mem file creation');
        }
      }
    };

    try {
      // The ledger's state dir is checked before anything changes: one another user made is refused here, not after a reservation.
      ensureTrustedDir(this.ledger.dir, { create: true });
      const status = await readStatus(this.host);
      const size = status.sizes.find((s) => s.pageSize === pageSize);
      if (size === undefined) {
        throw new ZiuError('ERR_ZIU_NO_HUGEPAGES', `this kernel offers no ${name} hugepages (no sysfs directory for them)`);
      }
      const available = size.free - size.reserved;
      let addedPages = 0;
      if (available < pages) {
        const r = await reserve(this.host, { pageSize, total: size.total + (pages - available) });
        addedPages = r.after - r.before;
        undo.push(async () => {
          await release(this.host, { pageSize, total: r.before });
        });
        notes.push(`reserved ${addedPages} more ${name} pages (nr_hugepages ${r.before} -> ${r.after})`);
      }

      const mount = await ensureMount(this.host, { pageSize, dir: this.hugetlbfsDir(pageSize) });
      if (mount.created) {
        notes.push(`mounted hugetlbfs (pagesize=${name}) at ${mount.dir}`);
        undo.push(async () => {
          await unmount(this.host, mount.dir);
        });
      }

      const file = await this.#createFile(mount.dir, instance, role, bytes, undo);
      this.ledger.put(instance, role, { pageSize, addedPages, created: new Date().toISOString() });
      return { instance, role, backing: 'hugetlbfs', path: file.path, bytes, allocated: file.allocated, pageSize, addedPages };
    } catch (err) {
      await rollback();
      throw err;
    }
  }

  async #createTmpfs(instance: string, role: string, bytes: number): Promise<MemFile> {
    const undo: Array<() => Promise<void>> = [];
    try {
      // Ours and 0700, made if missing: one another user made (or a symlink planted there) is refused.
      ensureTrustedDir(this.tmpfsDir, { create: true, mode: 0o700 });
      const facts = await this.host.statfs(this.tmpfsDir);
      if (facts.type !== TMPFS_MAGIC) {
        throw new ZiuError(
          'ERR_ZIU_NOT_TMPFS',
          `${this.tmpfsDir} is not on tmpfs (f_type 0x${facts.type.toString(16)}): mem files there would be disk files; set ZIU_TMPFS_DIR to a tmpfs directory such as /dev/shm/ziu`,
        );
      }
      const file = await this.#createFile(this.tmpfsDir, instance, role, bytes, undo);
      return { instance, role, backing: 'tmpfs', path: file.path, bytes, allocated: file.allocated, pageSize: BASE_PAGE, addedPages: 0 };
    } catch (err) {
      for (const step of undo.reverse()) await step().catch(() => {});
      throw err;
    }
  }

  #createMemfd(instance: string, role: string, bytes: number): MemFile {
    const fd = check(native.memfdCreate(`ziu:${instance}/${role}`, 0), 'memfd_create');
    try {
      check(native.fallocate(fd, 0, 0, bytes), 'fallocate', { fd });
      const st = check(native.fstat(fd), 'fstat', { fd });
      return { instance, role, backing: 'memfd', path: null, fd, bytes, allocated: st.allocated, pageSize: BASE_PAGE, addedPages: 0 };
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /**
   * <dir>/<instance>/<role>, 0600, every page allocated and zeroed by
   * fallocate. dir is verified, the instance directory is ours (0700) and the
   * file is created through its fd with O_EXCL | O_NOFOLLOW: nothing another
   * user planted is written through.
   */
  async #createFile(
    dir: string,
    instance: string,
    role: string,
    bytes: number,
    undo: Array<() => Promise<void>>,
  ): Promise<{ path: string; allocated: number }> {
    const root = TrustedDir.open(dir, { shared: true });
    let instDir: TrustedDir;
    try {
      const made = root.lstat(instance) === null;
      instDir = root.subdir(instance, { create: true, mode: 0o700 });
      if (made) undo.push(async () => removeEntry(dir, instance, null));
    } finally {
      root.close();
    }
    const file = path.join(dir, instance, role);
    let fd: number;
    try {
      try {
        fd = instDir.openFile(role, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      } catch (err) {
        if (hasCode(err, 'EEXIST')) {
          throw new ZiuError('ERR_ZIU_MEMFILE_EXISTS', `mem file ${instance}/${role} already exists at ${file}: remove it first`, {
            cause: err,
          });
        }
        throw err;
      }
    } finally {
      instDir.close();
    }
    undo.push(async () => removeEntry(dir, instance, role));
    try {
      fs.fchmodSync(fd, 0o600); // the umask must not widen or narrow it
      const r = native.fallocate(fd, 0, 0, bytes);
      if (r === -ENOSPC) {
        throw new ZiuError(
          'ERR_ZIU_MEMFILE_NO_SPACE',
          `fallocate of ${formatBytes(bytes)} for ${file} failed: not enough free pages (ENOSPC); another process may have taken them`,
        );
      }
      check(r, 'fallocate', { path: file, fd });
      const st = check(native.fstat(fd), 'fstat', { path: file, fd });
      return { path: file, allocated: st.allocated };
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Every mem file under ziu's directories, hugetlbfs (each page size) and tmpfs. */
  async list(): Promise<MemFile[]> {
    const out: MemFile[] = [];
    for (const { bytes: pageSize } of PAGE_SIZES) {
      const dir = this.hugetlbfsDir(pageSize);
      if (!(await this.#isFs(dir, HUGETLBFS_MAGIC))) continue;
      for (const f of scan(dir)) {
        const entry = this.ledger.get(f.instance, f.role);
        out.push({ ...f, backing: 'hugetlbfs', pageSize, addedPages: entry?.addedPages ?? 0 });
      }
    }
    if (await this.#isFs(this.tmpfsDir, TMPFS_MAGIC)) {
      for (const f of scan(this.tmpfsDir)) out.push({ ...f, backing: 'tmpfs', pageSize: BASE_PAGE, addedPages: 0 });
    }
    return out;
  }

  async #isFs(dir: string, magic: number): Promise<boolean> {
    try {
      return (await this.host.statfs(dir)).type === magic;
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return false;
      throw err;
    }
  }

  /** Remove <instance>/<role>, or every role of <instance> when role is omitted. */
  async remove(instance: string, role?: string): Promise<RemoveResult[]> {
    checkNamePart('instance', instance);
    if (role !== undefined) checkNamePart('role', role);
    const files = (await this.list()).filter((f) => f.instance === instance && (role === undefined || f.role === role));
    if (files.length === 0) {
      const what = role === undefined ? `instance ${instance} has no mem files` : `no mem file ${instance}/${role}`;
      throw new ZiuError('ERR_ZIU_NO_MEMFILE', `${what} (looked in ${this.#where()})`);
    }
    const out: RemoveResult[] = [];
    for (const f of files) {
      const p = f.path!;
      // Through verified directory fds, and only a regular file of ours: never something outside ziu's files.
      removeEntry(path.dirname(path.dirname(p)), f.instance, f.role);
      try {
        removeEntry(path.dirname(path.dirname(p)), f.instance, null);
      } catch {
        // other roles of the instance remain
      }
      let releasedPages = 0;
      if (f.backing === 'hugetlbfs' && f.addedPages > 0) {
        const status = await readStatus(this.host);
        const total = status.sizes.find((s) => s.pageSize === f.pageSize)?.total ?? 0;
        const r = await release(this.host, { pageSize: f.pageSize, total: Math.max(0, total - f.addedPages) });
        releasedPages = r.before - r.after;
      }
      this.ledger.delete(f.instance, f.role);
      log.info({ instance: f.instance, role: f.role, path: p, releasedPages }, 'mem file removed');
      out.push({ instance: f.instance, role: f.role, backing: f.backing, path: p, bytes: f.bytes, releasedPages });
    }
    return out;
  }

  #where(): string {
    return [...PAGE_SIZES.map((p) => this.hugetlbfsDir(p.bytes)), this.tmpfsDir].join(', ');
  }
}

/**
 * The mem files in a ziu directory: <dir>/<instance>/<role>, regular files
 * only, read through directory fds. An entry that is not ziu's (a symlink,
 * another user's, a name ziu would not make) is skipped and logged.
 */
function scan(dir: string): Array<{ instance: string; role: string; path: string; bytes: number; allocated: number }> {
  const out = [];
  const root = TrustedDir.open(dir, { shared: true });
  try {
    for (const inst of root.list()) {
      if (!inst.isDirectory()) continue;
      let instDir: TrustedDir;
      try {
        checkNamePart('instance', inst.name);
        instDir = root.subdir(inst.name, { mode: 0o700 });
      } catch (err) {
        log.warn({ path: path.join(dir, inst.name), err: (err as Error).message }, 'skipping a directory that is not a ziu instance');
        continue;
      }
      try {
        for (const f of instDir.list()) {
          const p = path.join(dir, inst.name, f.name);
          const st = instDir.lstat(f.name);
          if (st === null || !st.isFile()) {
            if (st !== null && !f.name.endsWith('.tmp')) log.warn({ path: p }, 'skipping an entry that is not a mem file (not a regular file)');
            continue;
          }
          if (st.uid !== 0 && st.uid !== process.geteuid?.()) {
            log.warn({ path: p, uid: st.uid }, 'skipping a file another user owns');
            continue;
          }
          out.push({ instance: inst.name, role: f.name, path: p, bytes: st.size, allocated: st.blocks * 512 });
        }
      } finally {
        instDir.close();
      }
    }
  } finally {
    root.close();
  }
  return out;
}

/** Remove <dir>/<instance>/<role> (role null: the empty instance directory), through verified directory fds. */
function removeEntry(dir: string, instance: string, role: string | null): void {
  const root = TrustedDir.open(dir, { shared: true });
  try {
    if (role === null) {
      root.remove(instance, { dir: true });
      return;
    }
    if (root.lstat(instance) === null) return;
    const inst = root.subdir(instance, { mode: 0o700 });
    try {
      inst.remove(role);
    } finally {
      inst.close();
    }
  } finally {
    root.close();
  }
}
