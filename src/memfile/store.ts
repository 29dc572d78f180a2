import fs from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { ZiuError, UsageError, hasCode } from '../errors.js';
import {
  defaultMountDir,
  ensureMount,
  formatBytes,
  growBy,
  HUGETLBFS_MAGIC,
  pageSizeInfo,
  readStatus,
  unmount,
  PAGE_SIZES,
  type HugepageHost,
} from '../hugepages/index.js';
import { logger } from '../log.js';
import { ensureTrustedDir, TrustedDir } from '../trusted-dir.js';
import { check, native } from '../native/index.js';
import { fileId, processAlive, processesHolding, processRef, type ProcessRef } from '../process/index.js';
import { removeEntry, scan, statEntry } from './files.js';
import { Ledger, type LedgerEntry } from './ledger.js';
import { checkNamePart } from './names.js';
import { PoolAccounts, type DebtView, type GiveBack, type Intent, type Settlement } from './pool.js';
import { PoolLock } from './pool-lock.js';

const log = logger('memfile');

/** f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;
const BASE_PAGE = 4096;
/**
 * The host's pool lock lives here (as <dir>/hugepages/lock), not in each
 * state dir: nr_hugepages is one counter per host, and two ziu processes
 * with different state dirs (two vswitches on one node) that both read it
 * and write it back raised lose one of the raises.
 */
const HOST_POOL_LOCK_DIR = '/run/ziu';
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
  /** how long a pool change waits for another's (default $ZIU_POOL_LOCK_TIMEOUT_MS or 300 s) */
  poolLockTimeoutMs?: number;
  /**
   * where the pool lock lives (<dir>/hugepages/lock): default $ZIU_POOL_LOCK_DIR,
   * else /run/ziu on the real host whatever the state dir (the kernel's pool
   * is one per host), else the state dir (a fake host in tests)
   */
  poolLockDir?: string;
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
  /** pages that could not go back because a process still maps the file: owed, given back once it is gone */
  debtPages: number;
  /** the pids that still held the file when debtPages could not go back */
  heldBy: number[];
}

export interface SettleResult {
  settlements: Settlement[];
  /** the pool lock was busy and the caller would not wait: who holds it */
  deferred: string | null;
}

/** What `hugepages status` shows of ziu's share of the pool. */
export interface PoolReport {
  debt: DebtView[];
  intents: Intent[];
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
 * undone in reverse order on any failure, and a creation killed half-way
 * leaves a ledger entry that the next settlement undoes. Every pool change
 * happens under the pool lock, relative to the pool as it is then.
 */
export class MemFileStore {
  readonly host: HugepageHost;
  readonly tmpfsDir: string;
  readonly privileged: boolean;
  readonly ledger: Ledger;
  readonly accounts: PoolAccounts;
  readonly #hugetlbfsDir: (pageSize: number) => string;
  readonly #lockTimeoutMs: number | undefined;
  /** where the pool lock lives: one per host for the real host, whatever the state dir */
  readonly poolLockDir: string;

  constructor(options: MemFileStoreOptions) {
    this.host = options.host;
    this.#hugetlbfsDir = options.hugetlbfsDir ?? ((p) => defaultMountDir(p));
    this.tmpfsDir = options.tmpfsDir ?? process.env['ZIU_TMPFS_DIR'] ?? '/dev/shm/ziu';
    this.ledger = new Ledger(options.stateDir ?? process.env['ZIU_STATE_DIR'] ?? '/run/ziu');
    this.accounts = new PoolAccounts(this.host, this.ledger, (p) => path.resolve(this.hugetlbfsDir(p)));
    this.privileged = options.privileged ?? process.getuid?.() === 0;
    this.#lockTimeoutMs = options.poolLockTimeoutMs;
    this.poolLockDir = options.poolLockDir ?? process.env['ZIU_POOL_LOCK_DIR'] ?? (this.host.sysRoot === '/sys' ? HOST_POOL_LOCK_DIR : this.ledger.dir);
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
    if (!this.privileged) {
      throw new UsageError(
        `creating a hugetlbfs mem file needs root (it writes nr_hugepages and mounts hugetlbfs): run as root or use --backing tmpfs`,
      );
    }
    // The state dir is checked before anything changes: one another user made is refused here, not after a reservation.
    ensureTrustedDir(this.ledger.dir, { create: true });
    return this.withPoolLock(`memfile create ${instance}/${role}`, async () => {
      await this.#settleLocked(true);
      return this.#createHugetlbfsLocked(instance, role, bytes, pageSize, notes);
    });
  }

  /**
   * Under the pool lock: mount, then the ledger entry as an intent, then the
   * pool raised by what is missing, then the file fallocated, then the entry
   * ready. A crash anywhere leaves an entry that says what to give back.
   */
  async #createHugetlbfsLocked(instance: string, role: string, bytes: number, pageSize: number, notes: string[]): Promise<MemFile> {
    const name = pageSizeInfo(pageSize).name;
    const memfile = `${instance}/${role}`;
    const undo: Array<() => Promise<void>> = [];
    try {
      const status = await readStatus(this.host);
      const size = status.sizes.find((s) => s.pageSize === pageSize);
      if (size === undefined) {
        throw new ZiuError('ERR_ZIU_NO_HUGEPAGES', `this kernel offers no ${name} hugepages (no sysfs directory for them)`);
      }
      const mount = await ensureMount(this.host, { pageSize, dir: this.hugetlbfsDir(pageSize) });
      if (mount.created) {
        notes.push(`mounted hugetlbfs (pagesize=${name}) at ${mount.dir}`);
        undo.push(async () => {
          await unmount(this.host, mount.dir);
        });
      }
      const file = path.join(mount.dir, instance, role);
      this.#checkNotTaken(memfile, file, mount.dir);

      const missing = Math.max(0, bytes / pageSize - (size.free - size.reserved));
      testHook('after-read');
      const entry: LedgerEntry = { pageSize, addedPages: missing, created: new Date().toISOString(), state: 'reserving', dir: mount.dir, ...owner() };
      this.ledger.put(instance, role, entry);
      undo.push(async () => this.#dropIntent(instance, role, entry));
      if (missing > 0) {
        const r = await growBy(this.host, { pageSize, pages: missing });
        entry.addedPages = r.after - r.before;
        testHook('after-reserve');
        // Exactly what this call added, from the pool as it is then: never "back to before".
        undo.push(async () => {
          await this.accounts.giveBack(pageSize, entry.addedPages, { memfile, path: file, file: null });
          entry.addedPages = 0;
        });
        notes.push(`reserved ${entry.addedPages} more ${name} pages (nr_hugepages ${r.before} -> ${r.after})`);
      }
      this.ledger.put(instance, role, { ...entry, state: 'allocating' });

      const made = await this.#createFile(mount.dir, instance, role, bytes, undo);
      this.ledger.put(instance, role, { ...entry, state: 'ready' });
      return { instance, role, backing: 'hugetlbfs', path: made.path, bytes, allocated: made.allocated, pageSize, addedPages: entry.addedPages };
    } catch (err) {
      await rollback(undo, memfile);
      throw err;
    }
  }

  /**
   * Refuse a name whose entry is a mem file in place or a create in progress.
   * A stale entry (its file removed outside ziu) is replaced, with a warning:
   * nobody can tell whether its pages went back with the file.
   */
  #checkNotTaken(memfile: string, file: string, dir: string): void {
    const [instance, role] = memfile.split('/') as [string, string];
    const entry = this.ledger.get(instance, role);
    if (entry === null) return;
    const inProgress = entry.state !== undefined && entry.state !== 'ready' && entry.owner !== undefined && processAlive(entry.owner);
    if (inProgress) {
      throw new ZiuError('ERR_ZIU_MEMFILE_EXISTS', `mem file ${memfile} at ${file} is being ${entry.state === 'removing' ? 'removed' : 'created'} by pid ${entry.owner!.pid}: wait for it to finish`);
    }
    if (statEntry(dir, instance, role) !== null) throw new ZiuError('ERR_ZIU_MEMFILE_EXISTS', `mem file ${memfile} already exists at ${file}: remove it first`);
    log.warn({ memfile, path: file, addedPages: entry.addedPages }, `replacing the ledger entry of ${memfile}: its file was removed outside ziu, so its ${entry.addedPages} pages are not given back by ziu`);
  }

  /** Undo of the intent: gone once its pages went back; kept (for a later settlement) if they could not be. */
  #dropIntent(instance: string, role: string, entry: LedgerEntry): void {
    if (entry.addedPages === 0) {
      this.ledger.delete(instance, role);
      return;
    }
    log.error({ memfile: `${instance}/${role}`, addedPages: entry.addedPages }, 'kept the ledger entry of a failed create: its pages were not given back; the next settlement does it once this process is gone');
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
  /**
   * Mem files no process maps or holds open: what a stopped service leaves,
   * whatever its upgrades named their memory. A file created for a datapath
   * that has not started yet is unused too, so this is for after a stop.
   */
  async unused(): Promise<MemFile[]> {
    return (await this.list()).filter((f) => {
      if (f.path === null) return false;
      try {
        return processesHolding(fileId(fs.statSync(f.path, { bigint: true }))).length === 0;
      } catch {
        // gone meanwhile
        return false;
      }
    });
  }

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

  /**
   * Remove <instance>/<role>, or every role of <instance> when role is
   * omitted, and give back the pages ziu added for them. Pages a process
   * still maps cannot go back now: they are kept as debt (debtPages) and
   * given back by a later command once that process is gone.
   */
  async remove(instance: string, role?: string): Promise<RemoveResult[]> {
    checkNamePart('instance', instance);
    if (role !== undefined) checkNamePart('role', role);
    if (!this.privileged) return this.#removeLocked(instance, role, []);
    return this.withPoolLock(`memfile remove ${instance}${role === undefined ? '' : `/${role}`}`, async () =>
      this.#removeLocked(instance, role, await this.#settleLocked(true)),
    );
  }

  async #removeLocked(instance: string, role: string | undefined, settled: Settlement[]): Promise<RemoveResult[]> {
    const matches = (memfile: string): boolean => (role === undefined ? memfile.startsWith(`${instance}/`) : memfile === `${instance}/${role}`);
    // A create or remove of this name that never finished was just settled: that is its removal.
    const out: RemoveResult[] = settled.filter((s) => s.kind !== 'debt' && matches(s.memfile)).map(removedBySettlement);
    const files = (await this.list()).filter((f) => f.instance === instance && (role === undefined || f.role === role));
    if (files.length === 0 && out.length === 0) {
      const what = role === undefined ? `instance ${instance} has no mem files` : `no mem file ${instance}/${role}`;
      throw new ZiuError('ERR_ZIU_NO_MEMFILE', `${what} (looked in ${this.#where()})`);
    }
    for (const f of files) out.push(await this.#removeOne(f));
    return out;
  }

  async #removeOne(f: MemFile): Promise<RemoveResult> {
    const p = f.path!;
    const dir = path.dirname(path.dirname(p));
    // Who holds it is asked by device and inode: once unlinked, the name is gone.
    const id = f.backing === 'hugetlbfs' ? (statEntry(dir, f.instance, f.role)?.id ?? null) : null;
    // Said before the file goes: a remove killed half-way is finished by the next settlement.
    const entry = f.backing === 'hugetlbfs' ? this.ledger.get(f.instance, f.role) : null;
    if (entry !== null) this.ledger.put(f.instance, f.role, { ...entry, state: 'removing', dir: entry.dir ?? dir, ...owner() });
    // Through verified directory fds, and only a regular file of ours: never something outside ziu's files.
    removeEntry(dir, f.instance, f.role);
    try {
      removeEntry(dir, f.instance, null);
    } catch {
      // other roles of the instance remain
    }
    let g: GiveBack = { releasedPages: 0, debtPages: 0, holders: [] };
    if (f.backing === 'hugetlbfs' && f.addedPages > 0) {
      g = await this.accounts.giveBack(f.pageSize, f.addedPages, { memfile: `${f.instance}/${f.role}`, path: p, file: id });
    }
    this.ledger.delete(f.instance, f.role);
    const heldBy = g.holders.map((h) => h.pid);
    log.info({ instance: f.instance, role: f.role, path: p, releasedPages: g.releasedPages, debtPages: g.debtPages, heldBy }, 'mem file removed');
    return { instance: f.instance, role: f.role, backing: f.backing, path: p, bytes: f.bytes, releasedPages: g.releasedPages, debtPages: g.debtPages, heldBy };
  }

  /** Run fn holding the hugepage pool lock (pool-lock.ts); every pool change ziu makes goes through here. */
  async withPoolLock<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const lock = await PoolLock.acquire(this.poolLockDir, what, this.#lockTimeoutMs === undefined ? {} : { timeoutMs: this.#lockTimeoutMs });
    try {
      return await fn();
    } finally {
      lock.release();
    }
  }

  /**
   * Settle what ziu owes the pool: debt whose holders are gone, and with
   * orphans, what creates and removes whose owner died left half done. With
   * wait false a busy lock defers it (`deferred` says who holds it): a
   * command that only reads must not wait behind another's fallocate.
   * Nothing to do without root, or before ziu ever wrote its state dir.
   */
  async settle(opts: { what: string; orphans: boolean; wait: boolean }): Promise<SettleResult> {
    if (!this.privileged || !this.#hasState()) return { settlements: [], deferred: null };
    if (opts.wait) return { settlements: await this.withPoolLock(opts.what, () => this.#settleLocked(opts.orphans)), deferred: null };
    const got = PoolLock.tryAcquire(this.poolLockDir, opts.what);
    if (got.lock === null) {
      const by = got.holder === null ? 'another process' : `pid ${got.holder.pid} (${got.holder.what})`;
      return { settlements: [], deferred: `the hugepage pool lock is held by ${by}` };
    }
    try {
      return { settlements: await this.#settleLocked(opts.orphans), deferred: null };
    } finally {
      got.lock.release();
    }
  }

  async #settleLocked(orphans: boolean): Promise<Settlement[]> {
    return [...(orphans ? await this.accounts.settleOrphans() : []), ...(await this.accounts.settleDebt())];
  }

  /** Pages owed and ledger entries that are not mem files in place, for status; null without root (the state dir is root's). */
  poolReport(): PoolReport | null {
    if (!this.privileged) return null;
    if (!this.#hasState()) return { debt: [], intents: [] };
    return { debt: this.accounts.debts(), intents: this.accounts.intents() };
  }

  #hasState(): boolean {
    return fs.existsSync(path.join(this.ledger.dir, 'memfiles')) || fs.existsSync(path.join(this.ledger.dir, 'hugepages'));
  }

  #where(): string {
    return [...PAGE_SIZES.map((p) => this.hugetlbfsDir(p.bytes)), this.tmpfsDir].join(', ');
  }
}

/** Undo the steps of a failed creation, newest first; a step that fails is logged and the others still run. */
async function rollback(undo: Array<() => Promise<void>>, memfile: string): Promise<void> {
  for (const step of undo.reverse()) {
    try {
      await step();
    } catch (err) {
      log.error({ err, memfile }, 'could not undo a step of a failed mem file creation');
    }
  }
}

/** This process, as a ledger entry's owner: a pid alone could be someone else's by the time it is read. */
function owner(): { owner?: ProcessRef } {
  const self = processRef(process.pid);
  return self === null ? {} : { owner: self };
}

/** A create or remove that never finished, settled on the way into remove(): reported as what remove did. */
function removedBySettlement(s: Settlement): RemoveResult {
  const [instance, role] = s.memfile.split('/') as [string, string];
  return { instance, role, backing: 'hugetlbfs', path: s.path, bytes: s.bytes, releasedPages: s.releasedPages, debtPages: s.debtPages, heldBy: [] };
}

/**
 * Test-only: ZIU_TEST_KILL_AT=<point> SIGKILLs this process there (a crash
 * in the middle of a create), ZIU_TEST_STOP_AT=<point> SIGSTOPs it (a create
 * caught in the middle, still alive and holding the pool lock).
 * after-read: the pool read, nothing changed yet; after-reserve: the pool raised, the file not made.
 */
function testHook(point: 'after-read' | 'after-reserve'): void {
  if (process.env['ZIU_TEST_KILL_AT'] === point) process.kill(process.pid, 'SIGKILL');
  if (process.env['ZIU_TEST_STOP_AT'] === point) process.kill(process.pid, 'SIGSTOP');
}
