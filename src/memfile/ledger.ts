import fs from 'node:fs';
import path from 'node:path';
import { hasCode } from '../errors.js';

/**
 * What ziu itself added to nr_hugepages for a mem file, so that removing the
 * file gives back those pages and no others (pages reserved by an operator or
 * another program are not ziu's to release). One small JSON file per mem file
 * under the state dir (default /run/ziu): hugetlbfs itself cannot hold it,
 * every byte there costs a hugepage.
 */
export interface LedgerEntry {
  pageSize: number;
  /** pages this file's creation added to the pool */
  addedPages: number;
  created: string;
}

export class Ledger {
  constructor(readonly dir: string) {}

  #file(instance: string, role: string): string {
    return path.join(this.dir, 'memfiles', instance, `${role}.json`);
  }

  get(instance: string, role: string): LedgerEntry | null {
    try {
      return JSON.parse(fs.readFileSync(this.#file(instance, role), 'utf8')) as LedgerEntry;
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return null;
      throw err;
    }
  }

  put(instance: string, role: string, entry: LedgerEntry): void {
    const file = this.#file(instance, role);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(entry), { mode: 0o600 });
    fs.renameSync(tmp, file);
  }

  delete(instance: string, role: string): void {
    const file = this.#file(instance, role);
    fs.rmSync(file, { force: true });
    try {
      fs.rmdirSync(path.dirname(file));
    } catch {
      // not empty (other roles of the instance) or already gone
    }
  }
}
