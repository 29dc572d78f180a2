import path from 'node:path';
import { shrinkBy, PAGE_SIZES, type HugepageHost } from '../hugepages/index.js';
import { logger } from '../log.js';
import { processAlive, processesHolding, type FileId, type ProcessRef } from '../process/index.js';
import { removeEntry, statEntry } from './files.js';
import { pagesText, type DebtRecord, type EntryState, type Ledger, type LedgerItem } from './ledger.js';

const log = logger('memfile');

/** What a settlement did: pages of an unfinished create or remove, or owed by a removed file, given back. */
export interface Settlement {
  kind: 'unfinished-create' | 'unfinished-remove' | 'debt';
  /** <instance>/<role> */
  memfile: string;
  path: string;
  /** the file removed (an unfinished create's or remove's), 0 for debt */
  bytes: number;
  pageSize: number;
  releasedPages: number;
  /** pages that could not go back now, kept (or left) as debt */
  debtPages: number;
  text: string;
}

/**
 * A ledger entry that is not a mem file in place: a create or remove in
 * progress (its owner lives), an orphaned one (its owner is gone: settled), or a stale
 * one (ready, but its file was removed outside ziu: shown, never settled,
 * since nobody can tell whether its pages went back with it).
 */
export interface Intent {
  instance: string;
  role: string;
  pageSize: number;
  state: EntryState;
  addedPages: number;
  created: string;
  owner: ProcessRef | null;
  status: 'in-progress' | 'orphaned' | 'stale';
  why: string;
}

export interface DebtView {
  pageSize: number;
  pages: number;
  records: Array<DebtRecord & { waitingFor: number[] }>;
}

export interface GiveBack {
  releasedPages: number;
  debtPages: number;
  /** who still held the file when its pages could not go back */
  holders: ProcessRef[];
}

/**
 * ziu's share of the hugepage pool: pages given back relative to the pool as
 * it is, the rest recorded as debt; ledger entries of creates that never
 * finished; debt settled once nobody holds the pages. Every method that
 * changes the pool must run under the pool lock (pool-lock.ts): the store
 * takes it.
 */
export class PoolAccounts {
  constructor(
    readonly host: HugepageHost,
    readonly ledger: Ledger,
    /** the hugetlbfs mount of a page size, for entries that do not record theirs */
    readonly dirFor: (pageSize: number) => string,
  ) {}

  /**
   * Give back `pages` that ziu added for `what`: the pool shrinks by that many
   * from its size now, never below the pages in use or promised. What could
   * not go back (the file is still mapped) is recorded as debt, with the
   * processes that hold it.
   */
  async giveBack(pageSize: number, pages: number, what: { memfile: string; path: string; file: FileId | null }): Promise<GiveBack> {
    if (pages === 0) return { releasedPages: 0, debtPages: 0, holders: [] };
    const r = await shrinkBy(this.host, { pageSize, pages });
    const releasedPages = r.before - r.after;
    const debtPages = pages - releasedPages;
    if (debtPages === 0) return { releasedPages, debtPages, holders: [] };
    const holders = what.file === null ? [] : processesHolding(what.file);
    const record: DebtRecord = {
      pages: debtPages,
      memfile: what.memfile,
      path: what.path,
      file: what.file === null ? null : { dev: what.file.dev.toString(), ino: what.file.ino.toString() },
      holders,
      since: new Date().toISOString(),
    };
    this.ledger.putDebt(pageSize, [...this.ledger.debt(pageSize), record]);
    log.warn(
      { memfile: what.memfile, path: what.path, pageSize, releasedPages, debtPages, holders: holders.map((h) => h.pid) },
      `${pagesText(debtPages, pageSize)} of ${what.memfile} are still in use${holders.length ? ` by pid ${pids(holders)}` : ''}: kept as debt, given back once they are free`,
    );
    return { releasedPages, debtPages, holders };
  }

  /** Ledger entries that are not mem files in place: creates in progress, orphans, stale entries. */
  intents(): Intent[] {
    const out: Intent[] = [];
    for (const item of this.ledger.entries()) {
      const intent = this.#classify(item);
      if (intent !== null) out.push(intent);
    }
    return out;
  }

  #classify({ instance, role, entry }: LedgerItem): Intent | null {
    const state = entry.state ?? 'ready';
    const base = { instance, role, pageSize: entry.pageSize, state, addedPages: entry.addedPages, created: entry.created, owner: entry.owner ?? null };
    if (state === 'ready') {
      if (statEntry(this.#dir(entry), instance, role) !== null) return null;
      return { ...base, status: 'stale', why: `its file ${this.#path(instance, role, entry)} was removed outside ziu` };
    }
    const doing = state === 'removing' ? 'remove' : 'create';
    // Its owner holds the pool lock, so a settler rarely sees one in progress; never touch it when it does.
    if (entry.owner !== undefined && processAlive(entry.owner)) {
      return { ...base, status: 'in-progress', why: `pid ${entry.owner.pid} is ${doing === 'create' ? 'creating' : 'removing'} it` };
    }
    return { ...base, status: 'orphaned', why: `an unfinished ${doing} (${entry.owner ? `pid ${entry.owner.pid} is gone` : 'no owner recorded'})` };
  }

  /**
   * Finish what a dead process left half done: for every create or remove
   * that never finished (its owner is gone), remove the file, give back the
   * pages, delete the entry. Pages still in use become debt. An entry whose
   * owner lives is left alone. One entry failing is logged and does not stop
   * the others.
   */
  async settleOrphans(): Promise<Settlement[]> {
    const out: Settlement[] = [];
    for (const intent of this.intents()) {
      if (intent.status !== 'orphaned') continue;
      try {
        out.push(await this.#settleOrphan(intent));
      } catch (err) {
        log.error({ err, memfile: `${intent.instance}/${intent.role}` }, 'could not settle an orphaned mem file ledger entry');
      }
    }
    return out;
  }

  async #settleOrphan(intent: Intent): Promise<Settlement> {
    const { instance, role, pageSize } = intent;
    const entry = this.ledger.get(instance, role)!;
    const dir = this.#dir(entry);
    const memfile = `${instance}/${role}`;
    const file = statEntry(dir, instance, role);
    if (file !== null) {
      // A create that never returned it to anyone, or a remove already asked for.
      removeEntry(dir, instance, role);
      try {
        removeEntry(dir, instance, null);
      } catch {
        // other roles of the instance remain
      }
    }
    const g = await this.giveBack(pageSize, intent.addedPages, { memfile, path: this.#path(instance, role, entry), file: file?.id ?? null });
    this.ledger.delete(instance, role);
    const kind = intent.state === 'removing' ? 'unfinished-remove' : 'unfinished-create';
    const text =
      `gave back ${pagesText(g.releasedPages, pageSize)} of ${memfile}, ${intent.why}` +
      (file !== null ? `; removed its file` : '') +
      (g.debtPages > 0 ? `; ${g.debtPages} still in use, kept as debt` : '');
    log.info({ memfile, kind, pageSize, releasedPages: g.releasedPages, debtPages: g.debtPages }, `settled: ${text}`);
    return { kind, memfile, path: this.#path(instance, role, entry), bytes: file?.bytes ?? 0, pageSize, releasedPages: g.releasedPages, debtPages: g.debtPages, text };
  }

  /** Debt per page size, with the holders still alive. */
  debts(): DebtView[] {
    const out: DebtView[] = [];
    for (const { bytes: pageSize } of PAGE_SIZES) {
      const records = this.ledger.debt(pageSize);
      if (records.length === 0) continue;
      out.push({
        pageSize,
        pages: records.reduce((n, r) => n + r.pages, 0),
        records: records.map((r) => ({ ...r, waitingFor: r.holders.filter((h) => processAlive(h)).map((h) => h.pid) })),
      });
    }
    return out;
  }

  /**
   * Give back owed pages whose holders are all gone: as many as the pool can
   * spare now (never below the pages in use), the debt reduced by what went
   * back, oldest first. A record whose file a new process holds (the fd was
   * passed on) waits for that one.
   */
  async settleDebt(): Promise<Settlement[]> {
    const out: Settlement[] = [];
    for (const { bytes: pageSize } of PAGE_SIZES) {
      const records = this.ledger.debt(pageSize);
      if (records.length === 0) continue;
      const holders = JSON.stringify(records.map((r) => r.holders));
      const due = records.filter((r) => this.#due(r));
      const owed = due.reduce((n, r) => n + r.pages, 0);
      let left = owed === 0 ? 0 : await shrinkBy(this.host, { pageSize, pages: owed }).then((r) => r.before - r.after);
      for (const r of due) {
        const given = Math.min(r.pages, left);
        left -= given;
        r.pages -= given;
        if (given === 0) continue;
        const text = `gave back ${pagesText(given, pageSize)} owed by ${r.memfile} (removed while in use${r.holders.length ? ` by pid ${pids(r.holders)}, now gone` : ''})${r.pages > 0 ? `; ${r.pages} still owed` : ''}`;
        log.info({ memfile: r.memfile, pageSize, releasedPages: given, debtPages: r.pages }, `settled: ${text}`);
        out.push({ kind: 'debt', memfile: r.memfile, path: r.path, bytes: 0, pageSize, releasedPages: given, debtPages: r.pages, text });
      }
      if (owed > 0 || JSON.stringify(records.map((r) => r.holders)) !== holders) this.ledger.putDebt(pageSize, records.filter((r) => r.pages > 0));
    }
    return out;
  }

  /** Due when nobody holds the file any more; a new holder found (an fd passed on) replaces the old ones. */
  #due(r: DebtRecord): boolean {
    if (r.holders.some((h) => processAlive(h))) return false;
    if (r.file === null) return true;
    const now = processesHolding({ dev: BigInt(r.file.dev), ino: BigInt(r.file.ino) });
    if (now.length > 0) r.holders = now;
    return now.length === 0;
  }

  #dir(entry: { pageSize: number; dir?: string }): string {
    return entry.dir ?? this.dirFor(entry.pageSize);
  }

  #path(instance: string, role: string, entry: { pageSize: number; dir?: string }): string {
    return path.join(this.#dir(entry), instance, role);
  }
}

function pids(refs: ProcessRef[]): string {
  return refs.map((h) => h.pid).join(', ');
}
