import fs from 'node:fs';
import { hasCode, ZiuError } from '../errors.js';
import type { Logger } from '../log.js';
import { check, native } from '../native/index.js';
import type { TableHeader, TableProblem } from '../native/datapath-native.js';
import { closeFds } from '../native/fds.js';
import { openTrustedFile } from '../trusted-dir.js';
import type { DatapathConfig } from './config.js';
import type { Engine } from './engine.js';

/**
 * The datapath's bridge and flow tables (docs/tables.md): named table files
 * (--bridge-table, --flow-table, typically hugepage files made by `ziu
 * memfile create`) or, without them, memfds of its own. Either way an fd
 * and the engine's mapping; a successor takes the same fds at a handover.
 */

export type TableKind = 'bridge' | 'flow';
export const KIND: Record<TableKind, 1 | 2> = { bridge: 1, flow: 2 };

/** Table formats this code reads; an instance writes the highest it is allowed (--flow-formats). */
export const TABLE_FORMATS = { bridge: [1], flow: [1, 2] } as const;
export type FlowFormat = 1 | 2;

/** fd names of the tables in a handover (docs/handover-protocol.md, section 6). */
export const TABLE_FD: Record<TableKind, string> = { bridge: 'tables/bridge', flow: 'tables/flow' };

export interface TableFile {
  kind: TableKind;
  /** the file's path, null for a memfd */
  path: string | null;
  fd: number;
  format: number;
  bytes: number;
  entries: number;
  /** st_dev:st_ino: the same file seen by two instances */
  file: string;
}

/** What the tables are in a handover message (export reply, import request). */
export interface TablesWire {
  bridge: { format: number; bytes: number; path: string | null };
  flow: { format: number; bytes: number; path: string | null };
}

const DEFAULT_FLOW_ENTRIES = 65536;

function fileId(fd: number): string {
  const st = check(native.fstat(fd), 'fstat', { fd });
  return `${st.dev}:${st.ino}`;
}

export function isProblem(v: unknown): v is TableProblem {
  return typeof v === 'object' && v !== null && 'problem' in v;
}

/** A table's header, or ERR_ZIU_TABLE naming the table and what is wrong with it. */
export function checkTable(fd: number, kind: TableKind, what: string): TableHeader {
  const h = native.tableCheck(fd, KIND[kind]);
  if (isProblem(h)) throw new ZiuError('ERR_ZIU_TABLE', `${what}: ${h.problem}`);
  return h;
}

export class DatapathTables {
  bridge: TableFile | null = null;
  flow: TableFile | null = null;
  /** the predecessor's flow table we converted ours from, until commit */
  #convertedFrom: { format: number; path: string | null } | null = null;
  readonly #config: DatapathConfig;
  readonly #log: Logger;

  constructor(config: DatapathConfig, log: Logger) {
    this.#config = config;
    this.#log = log;
  }

  /** The format this instance serves its flow table in. */
  get flowFormat(): FlowFormat {
    return Math.max(...this.#config.flowFormats) as FlowFormat;
  }

  /** A plain start: our table files (made ready if fresh) or memfds, mapped writable by the engine. */
  open(engine: Engine): void {
    try {
      this.bridge = this.#own('bridge', 1, 0);
      this.flow = this.#own('flow', this.flowFormat, 0);
      engine.attachTables(this.bridge.fd, this.flow.fd, true);
    } catch (err) {
      this.close();
      throw err;
    }
    this.#log.info({ bridge: this.#describe(this.bridge), flow: this.#describe(this.flow) }, 'tables mapped');
  }

  #describe(t: TableFile | null): Record<string, unknown> | null {
    return t && { path: t.path, format: t.format, entries: t.entries, bytes: t.bytes };
  }

  /**
   * A table of our own: the configured file (fresh: a header is written;
   * a table already: taken as it is, so learned MACs and flows survive a
   * restart too) or a memfd. maxEntries: at most this many (0: what fits).
   */
  #own(kind: TableKind, format: number, maxEntries: number, avoid?: string): TableFile {
    const path = kind === 'bridge' ? this.#config.bridgeTable : this.#config.flowTable;
    const flag = kind === 'bridge' ? '--bridge-table' : '--flow-table';
    let fd: number;
    let p: string | null = path ?? null;
    if (path !== undefined) {
      try {
        fd = openTrustedFile(path, fs.constants.O_RDWR);
      } catch (cause) {
        const why = (cause as Error).message.replace(/^refusing [^:]*: /, '');
        throw new ZiuError('ERR_ZIU_TABLE', hasCode(cause, 'ERR_ZIU_UNTRUSTED_PATH') ? `refusing ${flag} ${path}: ${why}` : `cannot open ${flag} ${path}: ${why}`, { cause });
      }
      if (avoid !== undefined && fileId(fd) === avoid) {
        // The predecessor's own table, in a format we do not serve: it must stay as it is (a rollback needs it).
        native.close(fd);
        this.#log.warn({ path, kind }, `${flag} names the old instance's table, in another format: the converted table goes into a memfd instead`);
        fd = this.#memfd(kind, format, maxEntries);
        p = null;
      }
    } else {
      fd = this.#memfd(kind, format, maxEntries);
    }
    try {
      const what = p === null ? `the ${kind} table (memfd)` : `${flag} ${p}`;
      let h = native.tableCheck(fd, KIND[kind]);
      if (isProblem(h) && /^no table header/.test(h.problem)) {
        const n = native.tableInit(fd, KIND[kind], format, kind === 'bridge' ? native.DP_MAC_AGE_S : this.#config.flowIdleS, maxEntries);
        if (n === -28) throw new ZiuError('ERR_ZIU_TABLE', `${what} is too small for a ${kind} table (${native.tableBytes(KIND[kind], 16)} bytes at least)`);
        check(n, 'tableInit', { fd });
        h = native.tableCheck(fd, KIND[kind]);
      }
      if (isProblem(h)) throw new ZiuError('ERR_ZIU_TABLE', `${what}: ${h.problem}`);
      if (h.format !== format) {
        throw new ZiuError(
          'ERR_ZIU_TABLE',
          `${what} holds ${kind} table format ${h.format}; this datapath serves format ${format} (--flow-formats): give it an empty file (an upgrade converts the old instance's table)`,
        );
      }
      if (maxEntries > 0 && h.entries !== maxEntries) {
        throw new ZiuError('ERR_ZIU_TABLE', `${what} holds ${h.entries} entries; the old instance's table ${maxEntries}: a converted table needs a file of the same size`);
      }
      return { kind, path: p, fd, format: h.format, bytes: h.bytes, entries: h.entries, file: fileId(fd) };
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  #memfd(kind: TableKind, format: number, maxEntries: number): number {
    const entries = maxEntries > 0 ? maxEntries : kind === 'bridge' ? this.#config.macEntries : DEFAULT_FLOW_ENTRIES;
    const fd = check(native.memfdCreate(`ziu-${kind}-table`, 0), 'memfd_create', {});
    try {
      check(native.ftruncate(fd, check(native.tableBytes(KIND[kind], entries), 'tableBytes')), 'ftruncate', { fd });
      check(native.tableInit(fd, KIND[kind], format, kind === 'bridge' ? native.DP_MAC_AGE_S : this.#config.flowIdleS, entries), 'tableInit', { fd });
    } catch (err) {
      native.close(fd);
      throw err;
    }
    return fd;
  }

  /** What hello and export say about the tables (null: none yet, a standby instance). */
  exportWire(): TablesWire | null {
    if (this.bridge === null || this.flow === null) return null;
    return {
      bridge: { format: this.bridge.format, bytes: this.bridge.bytes, path: this.bridge.path },
      flow: { format: this.flow.format, bytes: this.flow.bytes, path: this.flow.path },
    };
  }

  /** Old side, at export: what travels, and the fds (still ours). */
  exportTables(engine: Engine): { wire: TablesWire; fds: Map<string, number> } | null {
    const wire = this.exportWire();
    if (wire === null || this.bridge === null || this.flow === null) return null;
    engine.trackTables();
    return {
      wire,
      fds: new Map([
        [TABLE_FD.bridge, this.bridge.fd],
        [TABLE_FD.flow, this.flow.fd],
      ]),
    };
  }

  /**
   * New side, at import (the engine frozen): the predecessor's tables. Same
   * flow format: the very same files, mapped read-only until we hold the
   * rings (no new table). Another format: a table of our own, converted from
   * theirs now and caught up when we take the rings. Without tables from the
   * predecessor (an older datapath): fresh ones of our own.
   */
  adopt(engine: Engine, wire: TablesWire | null, bridgeFd: number | null, flowFd: number | null): void {
    this.close(); // a second import replaces what the first one took
    if (wire === null || bridgeFd === null || flowFd === null) {
      closeFds([bridgeFd, flowFd].filter((f): f is number => f !== null));
      this.#log.warn('the old instance handed over no tables: starting with empty ones (unknown unicast floods until learned)');
      this.bridge = this.#own('bridge', 1, 0);
      this.flow = this.#own('flow', this.flowFormat, 0);
      engine.attachTables(this.bridge.fd, this.flow.fd, false);
      return;
    }
    const taken: number[] = [bridgeFd, flowFd];
    try {
      const where = (k: TableKind): string => `the old instance's ${k} table${wire[k].path ? ` (${wire[k].path})` : ''}`;
      const bh = checkTable(bridgeFd, 'bridge', where('bridge'));
      const fh = checkTable(flowFd, 'flow', where('flow'));
      if (!(this.#config.flowFormats as readonly number[]).includes(fh.format)) {
        throw new ZiuError('ERR_ZIU_TABLE_FORMAT', `${where('flow')} is in flow format ${fh.format}; this datapath reads ${this.#config.flowFormats.join(', ')}`);
      }
      this.bridge = { kind: 'bridge', path: wire.bridge.path, fd: bridgeFd, format: bh.format, bytes: bh.bytes, entries: bh.entries, file: fileId(bridgeFd) };
      if (fh.format === this.flowFormat) {
        this.flow = { kind: 'flow', path: wire.flow.path, fd: flowFd, format: fh.format, bytes: fh.bytes, entries: fh.entries, file: fileId(flowFd) };
        engine.attachTables(bridgeFd, flowFd, false);
        this.#log.info({ bridge: wire.bridge.path, flow: wire.flow.path, format: fh.format }, "adopted the old instance's tables (read-only until we hold the rings)");
        return;
      }
      const own = this.#own('flow', this.flowFormat, fh.entries, fileId(flowFd));
      taken.push(own.fd);
      this.flow = own;
      engine.attachTables(bridgeFd, own.fd, false);
      const t0 = performance.now();
      const copied = engine.convertFlows(flowFd, where('flow'));
      native.close(flowFd);
      taken.splice(taken.indexOf(flowFd), 1);
      this.#convertedFrom = { format: fh.format, path: wire.flow.path };
      this.#log.info({ from: fh.format, to: this.flowFormat, entries: copied, ms: Math.round((performance.now() - t0) * 10) / 10, path: own.path }, "converted the old instance's flow table into ours (the rest is caught up when we take the rings)");
    } catch (err) {
      closeFds(taken);
      this.bridge = this.flow = null;
      throw err;
    }
  }

  status(engine: Engine | null): Record<string, unknown> | null {
    if (this.bridge === null || this.flow === null) return null;
    const info = engine?.tablesInfo() ?? { bridge: null, flow: null };
    // fd: for a reader of a memfd table (no path), through /proc/<pid>/fd/<fd> (same uid or root only).
    const one = (t: TableFile, i: object | null): Record<string, unknown> => ({ path: t.path, fd: t.fd, file: t.file, format: t.format, entries: t.entries, bytes: t.bytes, ...(i ?? {}) });
    return {
      bridge: one(this.bridge, info.bridge),
      flow: { ...one(this.flow, info.flow && { ...info.flow, generation: String(info.flow.generation) }), convertedFrom: this.#convertedFrom },
    };
  }

  close(): void {
    closeFds([this.bridge?.fd, this.flow?.fd].filter((f): f is number => f !== undefined));
    this.bridge = this.flow = null;
  }
}
