import fs from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UsageError, ZiuError } from '../errors.js';
import { logger } from '../log.js';
import { check, native } from '../native/index.js';
import { processRef } from '../process/index.js';
import { TrustedDir } from '../trusted-dir.js';

const log = logger('memfile');
const { EAGAIN } = constants.errno;
const POLL_MS = 20;
/** Long enough for another create's fallocate of hundreds of GiB (about 130 ms per GiB of 2M pages). */
const DEFAULT_TIMEOUT_MS = 300_000;

/** Who holds the lock, written into the lock file for the error a waiter gives up with. */
export interface PoolLockHolder {
  pid: number;
  startTime?: number;
  what: string;
  since: string;
}

export interface PoolLockOptions {
  /** give up after this long (default $ZIU_POOL_LOCK_TIMEOUT_MS or 300 s) */
  timeoutMs?: number;
}

/**
 * The hugepage pool lock: an exclusive flock(2) on <stateDir>/hugepages/lock,
 * held by every pool change ziu makes (a create's reserve, fallocate and
 * ledger writes; a remove's release; an undo; a settlement). It makes
 * "read the pool, change it by what I need" one step among ziu processes
 * sharing a state dir, and the kernel drops it when its holder dies, even by
 * SIGKILL. The file lives in the verified state dir (0700), so no other user
 * can hold it. One lock for every page size: pool changes are short, and a
 * create's fallocate must not overlap another's count of free pages.
 */
export class PoolLock {
  readonly file: string;
  #fd: number;

  private constructor(file: string, fd: number) {
    this.file = file;
    this.#fd = fd;
  }

  /** Wait for the lock (polling without blocking the event loop); ERR_ZIU_POOL_LOCKED after the timeout. */
  static async acquire(stateDir: string, what: string, opts: PoolLockOptions = {}): Promise<PoolLock> {
    const timeoutMs = opts.timeoutMs ?? timeoutFromEnv();
    const { file, fd } = openLockFile(stateDir);
    try {
      const started = Date.now();
      let told = false;
      while (!tryLock(fd, file)) {
        const holder = readHolder(fd);
        if (Date.now() - started >= timeoutMs) throw lockedError(file, holder, timeoutMs);
        if (!told) log.info({ lock: file, holder }, `waiting for the hugepage pool lock held by ${describe(holder)}`);
        told = true;
        await sleep(POLL_MS);
      }
      return PoolLock.#take(file, fd, what);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** The lock if it is free now, else null and who holds it (for commands that only read, and settle when they can). */
  static tryAcquire(stateDir: string, what: string): { lock: PoolLock } | { lock: null; holder: PoolLockHolder | null } {
    const { file, fd } = openLockFile(stateDir);
    try {
      if (tryLock(fd, file)) return { lock: PoolLock.#take(file, fd, what) };
      const holder = readHolder(fd);
      fs.closeSync(fd);
      return { lock: null, holder };
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  static #take(file: string, fd: number, what: string): PoolLock {
    const self = processRef(process.pid);
    const holder: PoolLockHolder = { pid: process.pid, ...(self ? { startTime: self.startTime } : {}), what, since: new Date().toISOString() };
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, `${JSON.stringify(holder)}\n`, 0);
    return new PoolLock(file, fd);
  }

  /** Let go (closing the fd drops the flock). The file stays: unlinking a lock file races with its next taker. */
  release(): void {
    if (this.#fd < 0) return;
    fs.closeSync(this.#fd);
    this.#fd = -1;
  }
}

function openLockFile(stateDir: string): { file: string; fd: number } {
  const dir = TrustedDir.open(path.join(stateDir, 'hugepages'), { create: true });
  try {
    // O_CLOEXEC (openFile's): a datapath started while we hold it must not inherit the lock.
    return { file: path.join(dir.path, 'lock'), fd: dir.openFile('lock', fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600) };
  } finally {
    dir.close();
  }
}

function tryLock(fd: number, file: string): boolean {
  const r = native.flock(fd, native.LOCK_EX | native.LOCK_NB);
  if (r === -EAGAIN) return false;
  check(r, 'flock', { path: file, fd });
  return true;
}

function readHolder(fd: number): PoolLockHolder | null {
  try {
    const buf = Buffer.alloc(4096);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    const doc = JSON.parse(buf.subarray(0, n).toString('utf8')) as Partial<PoolLockHolder>;
    return typeof doc.pid === 'number' && typeof doc.what === 'string' && typeof doc.since === 'string' ? (doc as PoolLockHolder) : null;
  } catch {
    return null; // being written, or written by nobody yet
  }
}

function describe(holder: PoolLockHolder | null): string {
  return holder === null ? 'another process' : `pid ${holder.pid} (${holder.what}, since ${holder.since})`;
}

function lockedError(file: string, holder: PoolLockHolder | null, timeoutMs: number): ZiuError {
  return new ZiuError(
    'ERR_ZIU_POOL_LOCKED',
    `the hugepage pool lock ${file} is held by ${describe(holder)}: gave up after ${timeoutMs / 1000} s; ` +
      `wait for it to finish (a large mem file takes a while to allocate), or stop that process`,
  );
}

function timeoutFromEnv(): number {
  const v = process.env['ZIU_POOL_LOCK_TIMEOUT_MS'];
  if (v === undefined || v === '') return DEFAULT_TIMEOUT_MS;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`ZIU_POOL_LOCK_TIMEOUT_MS='${v}' is not a whole number of milliseconds`);
  return n;
}
