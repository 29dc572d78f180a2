import fs from 'node:fs';
import path from 'node:path';
import { hasCode, ZiuError } from './errors.js';
import { logger } from './log.js';

/*
 * The directories ziu trusts (docs/security.md, "Local users"). ziu runs as
 * root beside other local users who may own files under /dev/shm and /tmp, so
 * a path is trusted only when no other user can change what it names: every
 * directory on the way is owned by root or by us and writable by nobody else
 * (a sticky directory such as /tmp may be world-writable, but then what we
 * use in it must be ours), and every symlink on the way sits in such a
 * directory and is owned by root or us. Once a path passes, nobody but root
 * or us can swap any part of it, so the check cannot be raced.
 *
 * Files are then opened relative to the directory's fd, with O_NOFOLLOW.
 * Node has no openat(2); /proc/self/fd/<dirfd>/<name> is the same thing: the
 * kernel resolves the magic link to the very directory we checked, and
 * O_NOFOLLOW applies to <name>.
 */

const log = logger('paths');
const { O_DIRECTORY, O_NOFOLLOW, O_RDONLY, O_CLOEXEC } = fs.constants as typeof fs.constants & { O_CLOEXEC?: number };
const CLOEXEC = O_CLOEXEC ?? 0o2000000;
const S_ISVTX = 0o1000;
const MAX_SYMLINKS = 40;

function me(): number {
  return process.geteuid?.() ?? 0;
}

function ownerOk(uid: number): boolean {
  return uid === 0 || uid === me();
}

function who(uid: number): string {
  return uid === 0 ? 'root' : `uid ${uid}`;
}

/** ERR_ZIU_UNTRUSTED_PATH, logged where it is raised: the path and the reason, for the operator. */
export function untrusted(p: string, reason: string, fix?: string): ZiuError {
  const err = new ZiuError('ERR_ZIU_UNTRUSTED_PATH', `refusing ${p}: ${reason}${fix ? `; ${fix}` : ''}`);
  log.error({ path: p, reason }, `refusing an untrusted path: ${reason}`);
  return err;
}

/** One path component: no '/', not '.' or '..', not empty. */
function checkEntry(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new ZiuError('ERR_ZIU_UNTRUSTED_PATH', `'${name}' is not a single file name`);
  }
}

/** A directory other users cannot change: ours or root's, and writable by nobody else unless sticky. */
function checkDirStat(p: string, st: fs.Stats, opts: { sticky: boolean }): void {
  if (!st.isDirectory()) throw untrusted(p, 'not a directory');
  if (!ownerOk(st.uid)) throw untrusted(p, `owned by ${who(st.uid)}, not ${who(me())}: another local user made it`);
  if ((st.mode & 0o022) !== 0 && !(opts.sticky && (st.mode & S_ISVTX) !== 0)) {
    throw untrusted(p, `writable by ${(st.mode & 0o002) !== 0 ? 'every user' : 'its group'} (mode ${(st.mode & 0o7777).toString(8)})`);
  }
}

/**
 * Walk an absolute path from '/', checking every component, following only
 * trusted symlinks. Returns the resolved path of the longest prefix that
 * exists, and the components still missing.
 */
function walk(p: string, opts: { last: 'check' | 'owner' } = { last: 'check' }): { at: string; missing: string[] } {
  const queue = path.resolve(p).split('/').filter((c) => c !== '' && c !== '.');
  let cur = '/';
  checkDirStat(cur, fs.statSync(cur), { sticky: true });
  let hops = 0;
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (name === '..') {
      cur = path.dirname(cur); // an ancestor, already checked
      continue;
    }
    const next = path.join(cur, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(next);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return { at: cur, missing: [name, ...queue] };
      throw err;
    }
    if (st.isSymbolicLink()) {
      if (!ownerOk(st.uid)) throw untrusted(next, `a symlink owned by ${who(st.uid)}: another local user made it`);
      if (++hops > MAX_SYMLINKS) throw untrusted(p, 'too many symlinks');
      const target = fs.readlinkSync(next);
      if (path.isAbsolute(target)) cur = '/';
      queue.unshift(...target.split('/').filter((c) => c !== '' && c !== '.'));
      continue;
    }
    // Every directory on the way may be sticky and open (/tmp); what we use inside it is checked as its own step.
    // The last one, with 'owner', only for its owner: the caller checks (or repairs) its mode through its fd.
    if (queue.length === 0 && opts.last === 'owner' && st.isDirectory()) {
      if (!ownerOk(st.uid)) throw untrusted(next, `owned by ${who(st.uid)}, not ${who(me())}: another local user made it`, 'remove it, or point ziu at another directory');
    } else {
      checkDirStat(next, st, { sticky: true });
    }
    cur = next;
  }
  return { at: cur, missing: [] };
}

function openDirFd(p: string): number {
  return fs.openSync(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | CLOEXEC);
}

export interface TrustOptions {
  /** create what is missing, each directory with this mode (default 0o700) */
  create?: boolean;
  mode?: number;
  /**
   * A directory ziu uses but does not own the layout of (the one a
   * --mem-file is in): its mode is left alone, and a sticky one such as
   * /dev/shm is accepted, because the file in it is checked to be ours.
   */
  shared?: boolean;
}

/**
 * A directory ziu verified and holds open: files in it are reached through
 * its fd, never by following a name again.
 */
export class TrustedDir {
  readonly path: string;
  #fd: number;

  private constructor(p: string, fd: number) {
    this.path = p;
    this.#fd = fd;
  }

  /**
   * Verify (and with create, make) the directory at p. The directory itself
   * must be ours (or root's) and not writable by others: if it is ours with a
   * mode wider than asked, the mode is narrowed (and said); anything another
   * user made, or a symlink where it should be, is refused and logged.
   */
  static open(p: string, opts: TrustOptions = {}): TrustedDir {
    const mode = opts.mode ?? 0o700;
    const abs = path.resolve(p);
    const { at, missing } = walk(abs, { last: 'owner' });
    if (missing.length > 0 && !opts.create) {
      const err = new Error(`ENOENT: no such file or directory, open '${abs}'`) as NodeJS.ErrnoException;
      err.code = 'ENOENT';
      err.path = abs;
      throw err;
    }
    let dir = new TrustedDir(at, openDirFd(at));
    try {
      // An existing ancestor of what we create is only walked through; the directory itself is ours to check.
      const ancestor = missing.length > 0;
      dir.#verify({ sticky: ancestor || opts.shared === true, mode: ancestor || opts.shared ? null : mode });
      for (const name of missing) {
        const sub = dir.subdir(name, { create: true, mode });
        dir.close();
        dir = sub;
      }
      return new TrustedDir(abs, dir.#release());
    } catch (err) {
      dir.close();
      throw err;
    }
  }

  /** Verify (and with create, make) the directory `name` in this one. */
  subdir(name: string, opts: TrustOptions = {}): TrustedDir {
    checkEntry(name);
    const mode = opts.mode ?? 0o700;
    const p = path.join(this.path, name);
    if (opts.create) {
      try {
        fs.mkdirSync(this.at(name), { mode });
      } catch (err) {
        if (!hasCode(err, 'EEXIST')) throw err;
      }
    }
    let fd: number;
    try {
      fd = openDirFd(this.at(name));
    } catch (err) {
      if (hasCode(err, 'ELOOP') || hasCode(err, 'ENOTDIR')) {
        const st = fs.lstatSync(this.at(name));
        throw untrusted(p, st.isSymbolicLink() ? `a symlink (owned by ${who(st.uid)})` : 'not a directory');
      }
      throw err;
    }
    const sub = new TrustedDir(p, fd);
    try {
      sub.#verify({ sticky: false, mode });
    } catch (err) {
      sub.close();
      throw err;
    }
    return sub;
  }

  /** Owner and mode of the directory we hold; ours with a wider mode than asked is narrowed. */
  #verify(opts: { sticky: boolean; mode: number | null }): void {
    const st = fs.fstatSync(this.#fd);
    if (!ownerOk(st.uid)) throw untrusted(this.path, `owned by ${who(st.uid)}, not ${who(me())}: another local user made it`, `remove it, or point ziu at another directory`);
    // Never narrow a sticky directory: that is a shared one such as /dev/shm, named by mistake.
    if (opts.mode !== null && st.uid === me() && (st.mode & 0o777 & ~opts.mode) !== 0 && (st.mode & S_ISVTX) === 0) {
      fs.fchmodSync(this.#fd, opts.mode);
      log.warn({ path: this.path, was: (st.mode & 0o777).toString(8), now: opts.mode.toString(8) }, 'narrowed the mode of a ziu directory');
      return;
    }
    checkDirStat(this.path, st, { sticky: opts.sticky });
  }

  /** The path that reaches `name` through this directory's fd (for calls Node has no *at form of). */
  at(name: string): string {
    checkEntry(name);
    if (this.#fd < 0) throw new ZiuError('ERR_ZIU_UNTRUSTED_PATH', `${this.path} is closed`);
    return `/proc/self/fd/${this.#fd}/${name}`;
  }

  get fd(): number {
    return this.#fd;
  }

  /**
   * Open a file in this directory without following a symlink. A file that
   * exists must be a regular file owned by us or root and writable by nobody
   * else; anything else is closed and refused.
   */
  openFile(name: string, flags: number, mode = 0o600): number {
    let fd: number;
    try {
      fd = fs.openSync(this.at(name), flags | O_NOFOLLOW | CLOEXEC, mode);
    } catch (err) {
      if (hasCode(err, 'ELOOP')) throw untrusted(path.join(this.path, name), 'a symlink; ziu never opens a file through one');
      throw err;
    }
    try {
      checkFileStat(path.join(this.path, name), fs.fstatSync(fd));
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    return fd;
  }

  /** lstat of an entry, null if there is none. */
  lstat(name: string): fs.Stats | null {
    try {
      return fs.lstatSync(this.at(name));
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return null;
      throw err;
    }
  }

  /** Entries of this directory. */
  list(): fs.Dirent[] {
    return fs.readdirSync(`/proc/self/fd/${this.#fd}`, { withFileTypes: true });
  }

  /**
   * Remove one entry that is ours: a regular file, socket or (with dir) an
   * empty directory owned by us or root. A symlink is removed as the link
   * itself (unlink never follows it); anything else is refused. False if it
   * was not there.
   */
  remove(name: string, opts: { dir?: boolean } = {}): boolean {
    const st = this.lstat(name);
    if (st === null) return false;
    const p = path.join(this.path, name);
    if (opts.dir) {
      if (!st.isDirectory()) throw untrusted(p, 'not a directory');
      fs.rmdirSync(this.at(name));
      return true;
    }
    if (!(st.isFile() || st.isSocket() || st.isSymbolicLink())) throw untrusted(p, 'not a file ziu made');
    if (!st.isSymbolicLink() && !ownerOk(st.uid)) throw untrusted(p, `owned by ${who(st.uid)}: not ziu's to delete`);
    try {
      fs.unlinkSync(this.at(name));
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return false;
      throw err;
    }
    return true;
  }

  #release(): number {
    const fd = this.#fd;
    this.#fd = -1;
    return fd;
  }

  close(): void {
    if (this.#fd >= 0) fs.closeSync(this.#release());
  }
}

/** A file ziu may write: regular, ours or root's, writable by nobody else. */
export function checkFileStat(p: string, st: fs.Stats): void {
  if (!st.isFile()) throw untrusted(p, 'not a regular file');
  if (!ownerOk(st.uid)) throw untrusted(p, `owned by ${who(st.uid)}, not ${who(me())}: another local user can change it`);
  if ((st.mode & 0o022) !== 0) throw untrusted(p, `writable by other users (mode ${(st.mode & 0o7777).toString(8)})`);
}

/**
 * Verify the directory at p and everything on the way (creating what is
 * missing with create), then let it go: for callers that go on by path, which
 * is safe once no other user can change any part of it.
 */
export function ensureTrustedDir(p: string, opts: TrustOptions = {}): string {
  const d = TrustedDir.open(p, opts);
  d.close();
  return d.path;
}

/**
 * Open a file by path for writing without following a symlink anywhere other
 * users could have planted one: its directory is verified, the file itself
 * opened with O_NOFOLLOW and checked (regular, ours, not writable by others).
 */
export function openTrustedFile(p: string, flags: number, mode = 0o600): number {
  const abs = path.resolve(p);
  const dir = TrustedDir.open(path.dirname(abs), { shared: true });
  try {
    return dir.openFile(path.basename(abs), flags, mode);
  } finally {
    dir.close();
  }
}

/**
 * Check the part of a path that exists, without creating or opening
 * anything: every directory on the way ours or root's and writable by nobody
 * else (sticky excepted), every symlink on the way ours or root's. For a path
 * handed to a program by name (mount(8)), which must not be one another user
 * can redirect.
 */
export function checkTrustedPath(p: string): void {
  walk(p);
}
