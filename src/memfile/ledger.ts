import fs from 'node:fs';
import path from 'node:path';
import { hasCode } from '../errors.js';
import { TrustedDir } from '../trusted-dir.js';

/**
 * What ziu itself added to nr_hugepages for a mem file, so that removing the
 * file gives back those pages and no others (pages reserved by an operator or
 * another program are not ziu's to release). One small JSON file per mem file
 * under the state dir (default /run/ziu): hugetlbfs itself cannot hold it,
 * every byte there costs a hugepage.
 *
 * The state dir and everything under it are verified (ours, 0700) and every
 * file is reached through a directory fd without following symlinks: a state
 * dir another user made is refused, never written through.
 */
export interface LedgerEntry {
  pageSize: number;
  /** pages this file's creation added to the pool */
  addedPages: number;
  created: string;
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL } = fs.constants;

export class Ledger {
  constructor(readonly dir: string) {}

  /** <state>/memfiles/<instance>, verified (and made, with create); null if it does not exist. */
  #instanceDir(instance: string, create: boolean): TrustedDir | null {
    try {
      return TrustedDir.open(path.join(this.dir, 'memfiles', instance), { create });
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return null;
      throw err;
    }
  }

  get(instance: string, role: string): LedgerEntry | null {
    const dir = this.#instanceDir(instance, false);
    if (dir === null) return null;
    try {
      if (dir.lstat(`${role}.json`) === null) return null;
      const fd = dir.openFile(`${role}.json`, O_RDONLY);
      try {
        return JSON.parse(fs.readFileSync(fd, 'utf8')) as LedgerEntry;
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      dir.close();
    }
  }

  put(instance: string, role: string, entry: LedgerEntry): void {
    const dir = this.#instanceDir(instance, true)!;
    try {
      const tmp = `${role}.json.tmp`;
      dir.remove(tmp);
      const fd = dir.openFile(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600);
      try {
        fs.writeFileSync(fd, JSON.stringify(entry));
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(dir.at(tmp), dir.at(`${role}.json`));
    } finally {
      dir.close();
    }
  }

  delete(instance: string, role: string): void {
    const dir = this.#instanceDir(instance, false);
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
}
