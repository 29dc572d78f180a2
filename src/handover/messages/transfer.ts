import { ZiuError } from '../../errors.js';
import { checkPlacement, type Placement } from '../../sched/placement.js';
import { isStateFormat, STATE_FORMATS, type StateFormat } from '../state.js';
import type { Reader } from '../reader.js';
import { body, type Codec } from './codec.js';
import { decodeTables, type HelloTables } from './hello.js';

/**
 * export and import (docs/handover-protocol.md, section 5): the old instance
 * writes its device state and hands out its fds; the new one adopts them.
 * The state itself is a document in a state format (src/handover/state.ts),
 * decoded by the side that has checked it may import it.
 */

export interface ExportRequest {
  /** a format the old instance exports; default: the last of its list */
  format?: StateFormat;
  /** for logs and status; default "unnamed" */
  upgradeId?: string;
}

export interface ExportReply {
  format: StateFormat;
  /** the device state in `format`, still encoded */
  state: unknown;
  /** the old instance's table files (their fds: tables/bridge, tables/flow); absent from a datapath without them */
  tables?: HelloTables | null;
  /** the names of the attached fds */
  fds: string[];
}

export interface ImportRequest {
  format: StateFormat;
  /** the export's state, as it came */
  state: unknown;
  /** the export's tables, as they came (fds tables/bridge, tables/flow) */
  tables?: HelloTables | null;
  upgradeId?: string;
  /** the old instance's worker placement (its hello.worker) */
  worker?: Placement | null;
  fds: string[];
}

export interface ImportReply {
  devices: string[];
}

/** A format field: a known format, or ERR_ZIU_STATE_FORMAT naming what came. */
function format(r: Reader): StateFormat {
  const v = r.raw('format');
  if (!isStateFormat(v)) throw new ZiuError('ERR_ZIU_STATE_FORMAT', `${r.where}.format: state format ${String(v)} is not one of ${STATE_FORMATS.join(', ')}`);
  return v;
}

function optString(r: Reader, k: string): { [key: string]: string } {
  return r.has(k) ? { [k]: r.str(k) } : {};
}

export const exportRequest: Codec<ExportRequest> = {
  encode: (v) => ({ ...v }),
  decode(doc) {
    const r = body(doc, 'export request');
    return { ...(r.has('format') ? { format: format(r) } : {}), ...optString(r, 'upgradeId') };
  },
  fields: ['format', 'upgradeId'],
};

export const exportReply: Codec<ExportReply> = {
  encode: (v) => ({ ...v }),
  decode(doc) {
    const r = body(doc, 'export reply');
    return { format: format(r), state: r.raw('state'), ...(r.has('tables') ? { tables: decodeTables(r) } : {}), fds: r.strs('fds') };
  },
  fields: ['format', 'state', 'tables', 'fds'],
};

export const importRequest: Codec<ImportRequest> = {
  encode: (v) => ({ ...v }),
  decode(doc) {
    const r = body(doc, 'import request');
    let worker: Placement | null = null;
    if (r.has('worker') && !r.nullable('worker')) worker = checkPlacement(r.raw('worker'), 'import: worker');
    return { format: format(r), state: r.raw('state'), ...(r.has('tables') ? { tables: decodeTables(r) } : {}), ...optString(r, 'upgradeId'), worker, fds: r.has('fds') ? r.strs('fds') : [] };
  },
  fields: ['format', 'state', 'tables', 'upgradeId', 'worker', 'fds'],
};

export const importReply: Codec<ImportReply> = {
  encode: (v) => ({ ...v }),
  decode: (doc) => ({ devices: body(doc, 'import reply').strs('devices') }),
  fields: ['devices'],
};
