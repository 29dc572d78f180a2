import fs from 'node:fs';
import path from 'node:path';
import { hasCode, ZiuError } from '../errors.js';
import { formatBytes, pageSizeInfo } from '../hugepages/index.js';
import { logger } from '../log.js';
import { toProcessRef, type ProcessRef } from '../process/index.js';
import { TrustedDir } from '../trusted-dir.js';

const log = logger('memfile');

/**
 * What ziu itself added to nr_hugepages, so that it gives back those pages
 * and no others (pages reserved by an operator or another program are not
 * ziu's to release). Small JSON files under the state dir (default
 * /run/ziu): hugetlbfs itself cannot hold them, every byte there costs a
 * hugepage.
 *
 *   memfiles/<instance>/<role>.json   one entry per mem file (LedgerEntry)
 *   hugepages/debt-<2M|1G>.json       pages owed to the kernel (DebtRecord[])
 *   hugepages/lock                    the pool lock (pool-lock.ts)
 *
 * The state dir and everything under it are verified (ours, 0700) and every
 * file is reached through a directory fd without following symlinks: a state
 * dir another user made is refused, never written through.
 */

/**
 * A mem file's entry goes through these states: 'reserving' is written
 * before nr_hugepages is raised (addedPages: the pages about to be added),
 * 'allocating' once the kernel said how many it gave, 'ready' after
 * fallocate; 'removing' before a remove unlinks the file. An entry that is
 * not ready and whose owner is gone is an unfinished create or remove: the
 * next settlement removes its file and gives back its pages.
 */
export type EntryState = 'reserving' | 'allocating' | 'ready' | 'removing';

export interface LedgerEntry {
  pageSize: number;
  /** pages this file's creation added to the pool (while reserving: the pages it is about to add) */
  addedPages: number;
  created: string;
  /** absent in entries written before intents: those are ready */
  state?: EntryState;
  /** the process creating or removing the file, by pid and start time */
  owner?: ProcessRef;
  /** the hugetlbfs mount the file is in */
  dir?: string;
}

export interface LedgerItem {
  instance: string;
  role: string;
  entry: LedgerEntry;
}

/**
 * Pages a removed mem file still held when they should have gone back: a
 * process mapped it, so the pool could not shrink. They are given back once
 * the holders are gone and the pages free.
 */
export interface DebtRecord {
  pages: number;
  /** <instance>/<role> */
  memfile: string;
  path: string;
  /** the removed file as the kernel names it (decimal strings), to find processes that still hold it */
  file: { dev: string; ino: string } | null;
  /** who held it when it was removed */
  holders: ProcessRef[];
  since: string;
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
const STATES: readonly string[] = ['reserving', 'allocating', 'ready', 'removing'] satisfies EntryState[];

export class Ledger {
  constructor(readonly dir: string) {}

  /** <state>/<sub...>, verified (and made, with create); null if it does not exist. */
  #open(sub: string[], create: boolean): TrustedDir | null {
    try {
      return TrustedDir.open(path.join(this.dir, ...sub), { create });
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return null;
      throw err;
    }
  }

  get(instance: string, role: string): LedgerEntry | null {
    const dir = this.#open(['memfiles', instance], false);
    if (dir === null) return null;
    try {
      const doc = readJson(dir, `${role}.json`);
      return doc === undefined ? null : checkEntry(doc, path.join(dir.path, `${role}.json`));
    } finally {
      dir.close();
    }
  }

  put(instance: string, role: string, entry: LedgerEntry): void {
    const dir = this.#open(['memfiles', instance], true)!;
    try {
      writeJson(dir, `${role}.json`, entry);
    } finally {
      dir.close();
    }
  }

  delete(instance: string, role: string): void {
    const dir = this.#open(['memfiles', instance], false);
    if (dir === null) return;
    try {
      dir.remove(`${role}.json`);
    } finally {
      dir.close();
    }
    let parent: TrustedDir | null = null;
    try {
      parent = TrustedDir.open(path.join(this.dir, 'memfiles'));
      parent.remove(instance, { dir: true });
    } catch {
      // not empty (other roles of the instance) or already gone
    } finally {
      parent?.close();
    }
  }

  /** Every entry. One that cannot be read is logged (with its file) and left out, never deleted. */
  entries(): LedgerItem[] {
    const root = this.#open(['memfiles'], false);
    if (root === null) return [];
    const out: LedgerItem[] = [];
    try {
      for (const inst of root.list()) {
        if (!inst.isDirectory()) continue;
        const dir = root.subdir(inst.name);
        try {
          for (const f of dir.list()) {
            if (!f.isFile() || !f.name.endsWith('.json')) continue;
            const file = path.join(dir.path, f.name);
            try {
              out.push({ instance: inst.name, role: f.name.slice(0, -'.json'.length), entry: checkEntry(readJson(dir, f.name), file) });
            } catch (err) {
              log.error({ err, file }, 'skipping a mem file ledger entry that cannot be read');
            }
          }
        } finally {
          dir.close();
        }
      }
    } finally {
      root.close();
    }
    return out;
  }

  /** Pages owed to the kernel for a page size, oldest first. */
  debt(pageSize: number): DebtRecord[] {
    const dir = this.#open(['hugepages'], false);
    if (dir === null) return [];
    try {
      const name = debtFile(pageSize);
      const doc = readJson(dir, name);
      return doc === undefined ? [] : checkDebt(doc, path.join(dir.path, name));
    } finally {
      dir.close();
    }
  }

  /** Replace the debt of a page size; none left removes the file. */
  putDebt(pageSize: number, records: DebtRecord[]): void {
    const dir = this.#open(['hugepages'], records.length > 0);
    if (dir === null) return;
    try {
      if (records.length === 0) dir.remove(debtFile(pageSize));
      else writeJson(dir, debtFile(pageSize), records);
    } finally {
      dir.close();
    }
  }
}

function debtFile(pageSize: number): string {
  return `debt-${pageSizeInfo(pageSize).name}.json`;
}

/** A JSON file in a verified directory, undefined if there is none. */
function readJson(dir: TrustedDir, name: string): unknown {
  if (dir.lstat(name) === null) return undefined;
  const file = path.join(dir.path, name);
  const fd = dir.openFile(name, O_RDONLY);
  try {
    return JSON.parse(fs.readFileSync(fd, 'utf8'));
  } catch (err) {
    throw new ZiuError('ERR_ZIU_LEDGER', `${file} is not JSON: ${(err as Error).message}`, { cause: err });
  } finally {
    fs.closeSync(fd);
  }
}

/** Written in full under a private name, then renamed over: a reader never sees half a file. */
function writeJson(dir: TrustedDir, name: string, doc: unknown): void {
  const tmp = `${name}.tmp`;
  dir.remove(tmp);
  const fd = dir.openFile(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600);
  try {
    fs.writeFileSync(fd, JSON.stringify(doc));
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(dir.at(tmp), dir.at(name));
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function checkPageSize(v: unknown, file: string): number {
  try {
    return pageSizeInfo(v as number).bytes;
  } catch {
    throw new ZiuError('ERR_ZIU_LEDGER', `${file}: pageSize ${JSON.stringify(v)} is not a hugepage size ziu knows`);
  }
}

function checkEntry(doc: unknown, file: string): LedgerEntry {
  const o = (typeof doc === 'object' && doc !== null ? doc : {}) as Record<string, unknown>;
  const bad = (why: string): never => {
    throw new ZiuError('ERR_ZIU_LEDGER', `${file} is not a mem file ledger entry: ${why}`);
  };
  const pageSize = checkPageSize(o['pageSize'], file);
  if (!isCount(o['addedPages'])) bad(`addedPages ${JSON.stringify(o['addedPages'])} is not a page count`);
  if (typeof o['created'] !== 'string') bad('created is missing');
  if (o['state'] !== undefined && !STATES.includes(o['state'] as string)) bad(`state ${JSON.stringify(o['state'])} is not one of ${STATES.join(', ')}`);
  const owner = o['owner'] === undefined ? undefined : toProcessRef(o['owner']);
  if (owner === null) bad('owner is not a pid and start time');
  if (o['dir'] !== undefined && typeof o['dir'] !== 'string') bad('dir is not a path');
  return {
    pageSize,
    addedPages: o['addedPages'] as number,
    created: o['created'] as string,
    ...(o['state'] === undefined ? {} : { state: o['state'] as EntryState }),
    ...(owner === undefined ? {} : { owner: owner! }),
    ...(o['dir'] === undefined ? {} : { dir: o['dir'] as string }),
  };
}

function checkDebt(doc: unknown, file: string): DebtRecord[] {
  const bad = (why: string): never => {
    throw new ZiuError('ERR_ZIU_LEDGER', `${file} is not a hugepage debt file: ${why}`);
  };
  if (!Array.isArray(doc)) bad('not a list');
  return (doc as unknown[]).map((r, i) => {
    const o = (typeof r === 'object' && r !== null ? r : {}) as Record<string, unknown>;
    if (!isCount(o['pages'])) bad(`record ${i}: pages is not a page count`);
    if (typeof o['memfile'] !== 'string' || typeof o['path'] !== 'string' || typeof o['since'] !== 'string') bad(`record ${i}: memfile, path or since is missing`);
    const f = o['file'] as { dev?: unknown; ino?: unknown } | null | undefined;
    if (f != null && !(typeof f.dev === 'string' && /^\d+$/.test(f.dev) && typeof f.ino === 'string' && /^\d+$/.test(f.ino))) bad(`record ${i}: file is not a device and inode`);
    const holders = Array.isArray(o['holders']) ? o['holders'].map(toProcessRef) : [null];
    if (holders.includes(null)) bad(`record ${i}: holders is not a list of pids and start times`);
    return {
      pages: o['pages'] as number,
      memfile: o['memfile'] as string,
      path: o['path'] as string,
      file: f == null ? null : { dev: f.dev as string, ino: f.ino as string },
      holders: holders as ProcessRef[],
      since: o['since'] as string,
    };
  });
}

/** "3 x 2M pages (6 MiB)": how logs and reports count pages. */
export function pagesText(pages: number, pageSize: number): string {
  return `${pages} x ${pageSizeInfo(pageSize).name} page${pages === 1 ? '' : 's'} (${formatBytes(pages * pageSize)})`;
}
