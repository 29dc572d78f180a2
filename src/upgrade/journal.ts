import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { hasCode, ZiuError } from '../errors.js';
import type { Logger } from '../log.js';
import { ensureTrustedDir } from '../trusted-dir.js';
import { processAlive, processRef, toProcessRef } from '../process/index.js';

export interface LockInfo {
  pid: number;
  /** the holder's start time (/proc/<pid>/stat): a pid reused since is not the holder; absent in older locks */
  startTime?: number;
  upgradeId: string;
  /** ISO time */
  since: string;
  control: string;
}

export interface JournalDoc {
  version: 1;
  upgradeId: string;
  control: string;
  phase: string;
  phases: Array<{ name: string; startedAt: string; ms?: number; ok?: boolean }>;
  [key: string]: unknown;
}

// Longest file-name stem we build, leaving room for '.journal.json.tmp' under NAME_MAX (255).
const NAME_MAX_STEM = 200;

/**
 * Where the lock and journal for a datapath control socket live:
 * <stateDir>/upgrade/<name>.lock|.journal.json|.last.json. The name is the
 * absolute control path without its leading '/', '/' spelled '_' and '_' or
 * '%' percent-escaped, so that two control paths never share a name and
 * /run/ziu/dp.sock stays readable as run_ziu_dp.sock.
 */
export function upgradePaths(control: string, stateDir: string = process.env['ZIU_STATE_DIR'] ?? '/run/ziu'): { dir: string; lock: string; journal: string; last: string } {
  const abs = path.resolve(control);
  let name = abs
    .slice(1)
    .replace(/[%_]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replaceAll('/', '_');
  if (name === '') name = '%2F';
  if (name.length > NAME_MAX_STEM) name = `${name.slice(0, NAME_MAX_STEM - 17)}~${createHash('sha256').update(abs).digest('hex').slice(0, 16)}`;
  const dir = path.join(stateDir, 'upgrade');
  const stem = path.join(dir, name);
  return { dir, lock: `${stem}.lock`, journal: `${stem}.journal.json`, last: `${stem}.last.json` };
}

/**
 * One upgrade at a time per datapath. The lock holds LockInfo as JSON; a lock
 * whose pid is alive refuses with ERR_ZIU_LOCKED, one whose pid is dead
 * (a crashed orchestrator) is replaced with a warning. Returns a release
 * function (idempotent; removes the file only if it is still ours).
 */
export function acquireLock(lockPath: string, lockInfo: LockInfo, log: Logger): () => void {
  checkLockInfo(lockInfo, lockPath, 'acquireLock');
  // The holder is named by pid and start time: a later process with the same pid does not hold it.
  const self = lockInfo.pid === process.pid ? processRef(process.pid) : null;
  const info: LockInfo = self !== null && lockInfo.startTime === undefined ? { ...lockInfo, startTime: self.startTime } : lockInfo;
  // The state dir and its upgrade/ dir: ours and 0700 (made so if missing), never another user's.
  ensureTrustedDir(path.dirname(lockPath), { create: true });
  // Written in full under a private name and then link()ed into place: link
  // fails with EEXIST exactly as O_EXCL does, but nobody can ever read a lock
  // that is created and still empty.
  const tmp = `${lockPath}.${process.pid}.tmp`;
  writeSynced(tmp, `${JSON.stringify(info)}\n`);
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        fs.linkSync(tmp, lockPath);
        break;
      } catch (err) {
        if (!hasCode(err, 'EEXIST')) throw err;
      }
      const holder = readLock(lockPath);
      if (holder === null && attempt < 5) continue; // released between link() and read: try again
      if (holder === null) throw new ZiuError('ERR_ZIU_LOCKED', `upgrade lock ${lockPath} keeps appearing and vanishing; is another ziu starting upgrades in a loop?`);
      if (lockHolderAlive(holder) || attempt >= 5) {
        throw new ZiuError(
          'ERR_ZIU_LOCKED',
          `another upgrade of ${holder.control} is running: pid ${holder.pid}, upgrade ${holder.upgradeId}, since ${holder.since} (lock ${lockPath}); ` +
            `wait for it to finish, or if pid ${holder.pid} is not a ziu upgrade, remove the lock`,
        );
      }
      log.warn({ lock: lockPath, stale: holder }, `replacing a stale upgrade lock: pid ${holder.pid} (upgrade ${holder.upgradeId}) is gone${processAlive(holder.pid) ? ' (its pid now belongs to another process)' : ''}`);
      // Two orchestrators replacing the same stale lock at the same instant could
      // both win here; a stale lock at all needs a crash first, so that is accepted.
      rmIfPresent(lockPath);
    }
    fsyncDir(path.dirname(lockPath));
  } finally {
    rmIfPresent(tmp);
  }

  let released = false;
  return () => {
    if (released) return;
    released = true;
    let holder: LockInfo | null;
    try {
      holder = readLock(lockPath);
    } catch {
      holder = null;
    }
    // A lock another process took over (it judged us dead) is theirs to remove.
    if (holder !== null && holder.pid === info.pid && holder.upgradeId === info.upgradeId && holder.since === info.since) {
      rmIfPresent(lockPath);
    }
  };
}

/** True while the process that took the lock runs (by pid and start time when the lock has one). */
export function lockHolderAlive(holder: LockInfo): boolean {
  const ref = toProcessRef(holder);
  return ref !== null ? processAlive(ref) : processAlive(holder.pid);
}

/** The lock's holder, or null if there is no lock; ERR_ZIU_LOCK if the file is not a ziu lock. */
export function readLock(lockPath: string): LockInfo | null {
  checkStateDirForReading(lockPath);
  let text: string;
  try {
    text = fs.readFileSync(lockPath, 'utf8');
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return null;
    throw new ZiuError('ERR_ZIU_LOCK', `cannot read the upgrade lock ${lockPath}: ${(err as Error).message}`, { cause: err });
  }
  let info: unknown;
  try {
    info = JSON.parse(text);
  } catch (err) {
    throw badLock(lockPath, 'it is not JSON', err);
  }
  checkLockInfo(info, lockPath, 'readLock');
  return info;
}

function checkLockInfo(info: unknown, lockPath: string, who: string): asserts info is LockInfo {
  const o = info as Partial<Record<keyof LockInfo, unknown>> | null;
  const ok =
    typeof o === 'object' &&
    o !== null &&
    Number.isSafeInteger(o.pid) &&
    (o.pid as number) > 0 &&
    typeof o.upgradeId === 'string' &&
    typeof o.since === 'string' &&
    typeof o.control === 'string';
  if (ok) return;
  if (who === 'readLock') throw badLock(lockPath, 'it lacks pid, upgradeId, since or control');
  throw new ZiuError('ERR_ZIU_LOCK', `${who}: lock info needs a positive integer pid and string upgradeId, since and control, got ${JSON.stringify(info)}`);
}

function badLock(lockPath: string, why: string, cause?: unknown): ZiuError {
  return new ZiuError('ERR_ZIU_LOCK', `upgrade lock ${lockPath} is not a ziu lock (${why}); if no upgrade is running, remove it`, cause === undefined ? undefined : { cause });
}

/**
 * The upgrade journal: one JSON document, rewritten durably on every update,
 * so that `ziu recover` after an orchestrator crash sees the last phase that
 * was reached and everything recorded up to it.
 */
export class Journal {
  readonly path: string;
  #doc: JournalDoc;
  #finished = false;

  private constructor(journalPath: string, doc: JournalDoc) {
    this.path = journalPath;
    this.#doc = doc;
  }

  /**
   * Start the journal of a new upgrade. Refuses if one is there: it belongs to
   * an upgrade that did not finish, and overwriting it would lose what
   * `ziu recover` needs.
   */
  static create(journalPath: string, doc: JournalDoc): Journal {
    checkDoc(doc, journalPath);
    ensureTrustedDir(path.dirname(journalPath), { create: true });
    if (fs.existsSync(journalPath)) {
      const old = Journal.read(journalPath);
      throw new ZiuError(
        'ERR_ZIU_JOURNAL_EXISTS',
        `journal ${journalPath} of an unfinished upgrade (${old?.upgradeId ?? '?'}, phase ${old?.phase ?? '?'}) is in the way; run 'ziu recover' first`,
      );
    }
    const j = new Journal(journalPath, { ...doc });
    j.#write(journalPath);
    return j;
  }

  /** Take over the journal of an unfinished upgrade (ziu recover); null if there is none. */
  static open(journalPath: string): Journal | null {
    const doc = Journal.read(journalPath);
    return doc === null ? null : new Journal(journalPath, doc);
  }

  /** The journal at this path, or null if there is none. */
  static read(journalPath: string): JournalDoc | null {
    checkStateDirForReading(journalPath);
    let text: string;
    try {
      text = fs.readFileSync(journalPath, 'utf8');
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return null;
      throw new ZiuError('ERR_ZIU_JOURNAL', `cannot read the upgrade journal ${journalPath}: ${(err as Error).message}`, { cause: err });
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new ZiuError('ERR_ZIU_JOURNAL', `upgrade journal ${journalPath} is not valid JSON (${(err as Error).message}); inspect it, and remove it if no upgrade needs recovering`, {
        cause: err,
      });
    }
    checkDoc(doc, journalPath);
    return doc;
  }

  get doc(): JournalDoc {
    return this.#doc;
  }

  /** Merge fields into the document and write it durably. */
  update(fields: Partial<JournalDoc> & Record<string, unknown>): void {
    if (this.#finished) throw new ZiuError('ERR_ZIU_JOURNAL', `upgrade journal ${this.path} is finished; it cannot be updated`);
    this.#doc = { ...this.#doc, ...fields, version: 1 };
    this.#write(this.path);
  }

  /**
   * Record the result and move the journal to <name>.last.json, which `ziu
   * status` shows. The result is written into the journal before the rename,
   * so a crash in between leaves a journal that already says how it ended.
   */
  finish(result: Record<string, unknown>): void {
    if (this.#finished) return;
    this.#doc = { ...this.#doc, result, finishedAt: new Date().toISOString() };
    this.#write(this.path);
    fs.renameSync(this.path, lastPath(this.path));
    fsyncDir(path.dirname(this.path));
    this.#finished = true;
  }

  #write(target: string): void {
    writeDurably(target, serialize(this.#doc));
  }
}

/** The document of the last finished upgrade of this datapath, or null if there was none. */
export function readLastUpgrade(control: string, stateDir?: string): Record<string, unknown> | null {
  return Journal.read(upgradePaths(control, stateDir).last);
}

/**
 * A journal or lock decides what recover stops, thaws and removes: read one
 * only from a directory no other user could have planted it in. A directory
 * that does not exist holds nothing (the read finds no file).
 */
function checkStateDirForReading(file: string): void {
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir)) return;
  ensureTrustedDir(dir);
}

function lastPath(journalPath: string): string {
  const suffix = '.journal.json';
  return journalPath.endsWith(suffix) ? `${journalPath.slice(0, -suffix.length)}.last.json` : `${journalPath}.last.json`;
}

function checkDoc(doc: unknown, journalPath: string): asserts doc is JournalDoc {
  const o = doc as Partial<JournalDoc> | null;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw badJournal(journalPath, 'it is not a JSON object');
  if (o.version !== 1) throw badJournal(journalPath, `version ${JSON.stringify(o.version)}, this ziu reads version 1`);
  for (const key of ['upgradeId', 'control', 'phase'] as const) {
    if (typeof o[key] !== 'string') throw badJournal(journalPath, `'${key}' is not a string`);
  }
  if (!Array.isArray(o.phases)) throw badJournal(journalPath, `'phases' is not an array`);
}

function badJournal(journalPath: string, why: string): ZiuError {
  return new ZiuError('ERR_ZIU_JOURNAL', `upgrade journal ${journalPath} is invalid: ${why}; inspect it, and remove it if no upgrade needs recovering`);
}

// bigints (ring addresses, guest memory offsets) as hex strings, as on the control protocol.
function serialize(doc: unknown): string {
  return `${JSON.stringify(doc, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2)}\n`;
}

/**
 * Replace a file so that after a crash it holds either the old or the new
 * content, never a mix: write a temp file, fsync it, rename it over the
 * target, fsync the directory so the rename itself is on disk.
 */
function writeDurably(target: string, text: string): void {
  const tmp = `${target}.tmp`;
  try {
    writeSynced(tmp, text);
    fs.renameSync(tmp, target);
  } catch (err) {
    rmIfPresent(tmp);
    throw err;
  }
  fsyncDir(path.dirname(target));
}

function writeSynced(file: string, text: string): void {
  // A leftover from a crash may carry other permissions; 'wx' then creates it 0600.
  rmIfPresent(file);
  const fd = fs.openSync(file, 'wx', 0o600);
  try {
    fs.writeFileSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function rmIfPresent(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) throw err;
  }
}
