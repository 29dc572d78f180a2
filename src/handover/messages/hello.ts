import { checkPlacement, type Applied, type Placement, type Policy } from '../../sched/placement.js';
import { VERSION } from '../../version.js';
import { HANDOVER_PROTOCOL, type StateFormat } from '../state.js';
import { ZiuError } from '../../errors.js';
import { hex, type Reader } from '../reader.js';
import { body, type Codec } from './codec.js';

/**
 * hello and status (docs/handover-protocol.md, section 5): who an instance
 * is, what it speaks, where it is in a handover; and its full status.
 */

/** Where an instance is in a handover (section 4). */
export type Role = 'active' | 'exporting' | 'frozen' | 'handed-over' | 'standby' | 'imported' | 'resumed' | 'handed-back';

/** Table formats a datapath reads, and the one it serves (writes); docs/tables.md. */
export interface TableFormats {
  bridge: { read: number[]; write: number };
  flow: { read: number[]; write: number };
}

/** The table files an instance serves (hello): what a successor must be able to read. */
export interface HelloTables {
  bridge: { format: number; bytes: number; path: string | null };
  flow: { format: number; bytes: number; path: string | null };
}

/** What a datapath binary speaks: `<command> --handover-info`, and the first fields of hello. */
export interface HandoverInfo {
  protocol: number;
  datapath: string;
  version: string;
  stateFormats: { export: number[]; import: number[] };
  /** absent from datapaths without table files */
  tableFormats?: TableFormats;
}

export interface Hello extends HandoverInfo {
  instance: string;
  pid: number;
  /** a Role from ziu-datapath; another datapath may say something else */
  role: string;
  /** the path it listens on now (the standby path on a new instance before commit) */
  control: string;
  /** the worker placement it was started with or inherited; null when none (or an older datapath) */
  worker: Placement | null;
  /** how to start another instance like it (`ziu upgrade --new <binary>`); null from a datapath that does not say */
  launch: Launch | null;
  /** its tables; null or absent when it has none (an older datapath, or a standby instance) */
  tables?: HelloTables | null;
}

/**
 * How an instance was started, for a successor that takes the same
 * configuration: its flags without its own memory, the directory its
 * relative paths resolve from, and the service manager it reports to.
 */
export interface Launch {
  /** its command-line flags (a --config file path among them), without --mem-file: a successor's memory is its own */
  args: string[];
  /** its working directory, absolute */
  cwd: string;
  /** the service manager's notify socket (its NOTIFY_SOCKET under systemd), or null */
  notifySocket: string | null;
}

/** This binary's handover info, for the formats it was told to speak. */
export function handoverInfo(formats: readonly StateFormat[], flowFormats: readonly number[] = [1, 2]): HandoverInfo {
  return {
    protocol: HANDOVER_PROTOCOL,
    datapath: 'ziu-datapath',
    version: VERSION,
    stateFormats: { export: [...formats], import: [...formats] },
    tableFormats: { bridge: { read: [1], write: 1 }, flow: { read: [...flowFormats], write: Math.max(...flowFormats) } },
  };
}

const INFO_FIELDS = ['protocol', 'datapath', 'version', 'stateFormats', 'tableFormats'] as const;

function decodeInfo(doc: unknown, where: string): HandoverInfo {
  const r = body(doc, where);
  const f = r.child('stateFormats');
  const info: HandoverInfo = { protocol: r.num('protocol'), datapath: r.has('datapath') ? r.str('datapath') : 'unknown', version: r.str('version'), stateFormats: { export: f.nums('export'), import: f.nums('import') } };
  if (r.has('tableFormats') && !r.nullable('tableFormats')) {
    const t = r.child('tableFormats');
    const one = (k: string): { read: number[]; write: number } => ({ read: t.child(k).nums('read'), write: t.child(k).num('write') });
    info.tableFormats = { bridge: one('bridge'), flow: one('flow') };
  }
  return info;
}

export function decodeTables(r: Reader): HelloTables | null {
  if (!r.has('tables') || r.nullable('tables')) return null;
  const t = r.child('tables');
  const one = (k: string): { format: number; bytes: number; path: string | null } => {
    const x = t.child(k);
    return { format: x.num('format'), bytes: x.num('bytes'), path: x.nullable('path') ? null : x.str('path') };
  };
  return { bridge: one('bridge'), flow: one('flow') };
}

/** The line `<command> --handover-info` prints. */
export const handoverInfoCodec: Codec<HandoverInfo> = {
  encode: (v) => ({ ...v }),
  decode: (doc) => decodeInfo(doc, 'handover info'),
  fields: INFO_FIELDS,
};

export const helloReply: Codec<Hello> = {
  encode: (v) => ({ ...v }),
  decode(doc) {
    const info = decodeInfo(doc, 'hello reply');
    const r = body(doc, 'hello reply');
    let worker: Placement | null = null;
    if (r.has('worker') && !r.nullable('worker')) {
      try {
        worker = checkPlacement(r.raw('worker'), 'hello reply.worker');
      } catch (cause) {
        throw new ZiuError('ERR_ZIU_CONTROL_BAD_MESSAGE', (cause as Error).message, { cause });
      }
    }
    const launch = r.has('launch') && !r.nullable('launch') ? decodeLaunch(r.child('launch')) : null;
    return { ...info, instance: r.str('instance'), pid: r.num('pid'), role: r.str('role'), control: r.str('control'), worker, launch, ...(r.has('tables') ? { tables: decodeTables(r) } : {}) };
  },
  fields: [...INFO_FIELDS, 'instance', 'pid', 'role', 'control', 'worker', 'launch', 'tables'],
};

function decodeLaunch(l: Reader): Launch {
  const args = l.strs('args');
  const cwd = l.str('cwd');
  if (!cwd.startsWith('/')) throw l.fail(`${l.where}.cwd: expected an absolute path`);
  // A NUL inside an argument could not have come from a real command line.
  if (args.some((a) => a.includes('\0'))) throw l.fail(`${l.where}.args: an argument holds a NUL byte`);
  const notifySocket = l.has('notifySocket') && !l.nullable('notifySocket') ? l.str('notifySocket') : null;
  return { args, cwd, notifySocket };
}

// ---- status ----

export interface PortCounters {
  rxPackets: number;
  txPackets: number;
  dropsNoBuffer: number;
  dropsInvalid: number;
  /** frames from this port sent to every other port (broadcast, multicast, unknown unicast); not checked */
  floods?: number;
}

export interface PortStatus {
  kind: string;
  name: string;
  connected?: boolean;
  disconnects?: number;
  lastError?: string | null;
  counters: PortCounters | null;
  [more: string]: unknown;
}

/** An instance's part in a handover; times are "0x..." CLOCK_MONOTONIC ns, "0x0" = not yet. */
export interface HandoverStatus {
  role: string;
  upgradeId: string | null;
  frozen: boolean;
  frozenNs: string;
  thawedNs: string;
  firstPassNs: string;
  /** the times of the last freeze, resume or thaw */
  last: Record<string, string>;
}

export interface WorkerStatus {
  requested: Placement | null;
  applied: Applied;
  fallback: string | null;
}

export interface Status {
  version: string;
  instance: string;
  pid: number;
  uptimeMs: number;
  role: string;
  handover: HandoverStatus | null;
  memFiles: Array<{ path: string; bytes: number }>;
  /** the packet worker's placement, as asked and as the kernel has it (absent from older datapaths) */
  worker: WorkerStatus | null;
  ports: PortStatus[];
  [more: string]: unknown;
}

/**
 * The status document is for people and programs alike: the fields the
 * orchestrator acts on are checked, the rest (ring detail, counters it
 * does not read) passes through to `ziu status` unchanged.
 */
export const statusReply: Codec<{ status: Status }> = {
  encode: (v) => ({ status: v.status }),
  decode(doc) {
    const r = body(doc, 'status reply').child('status');
    const ports = r.list('ports').map((p): PortStatus => {
      const counters = p.nullable('counters') ? null : p.child('counters');
      return {
        ...p.obj,
        kind: p.str('kind'),
        name: p.str('name'),
        ...(p.has('connected') ? { connected: p.bool('connected') } : {}),
        ...(p.has('disconnects') ? { disconnects: p.num('disconnects') } : {}),
        counters: counters && {
          ...counters.obj,
          rxPackets: counters.num('rxPackets'),
          txPackets: counters.num('txPackets'),
          dropsNoBuffer: counters.num('dropsNoBuffer'),
          dropsInvalid: counters.num('dropsInvalid'),
        },
      };
    });
    const status: Status = {
      ...r.obj,
      version: r.str('version'),
      instance: r.str('instance'),
      pid: r.num('pid'),
      uptimeMs: r.has('uptimeMs') ? r.num('uptimeMs') : 0,
      role: r.str('role'),
      handover: r.has('handover') && !r.nullable('handover') ? handoverStatus(r.child('handover')) : null,
      memFiles: r.list('memFiles').map((m) => ({ path: m.str('path'), bytes: m.num('bytes') })),
      worker: r.has('worker') && !r.nullable('worker') ? workerStatus(r.child('worker')) : null,
      ports,
    };
    return { status };
  },
  fields: ['status'],
};

function handoverStatus(h: Reader): HandoverStatus {
  const ns = (k: string): string => hex(h.big(k));
  const last = h.child('last');
  return {
    role: h.str('role'),
    upgradeId: h.nullable('upgradeId') ? null : h.str('upgradeId'),
    frozen: h.bool('frozen'),
    frozenNs: ns('frozenNs'),
    thawedNs: ns('thawedNs'),
    firstPassNs: ns('firstPassNs'),
    last: Object.fromEntries(Object.keys(last.obj).map((k) => [k, hex(last.big(k))])),
  };
}

function workerStatus(w: Reader): WorkerStatus {
  const a = w.child('applied');
  const placement = (p: Reader): Placement => ({ cpus: p.nullable('cpus') ? null : p.nums('cpus'), priority: p.nullable('priority') ? null : p.num('priority') });
  return {
    requested: w.nullable('requested') ? null : placement(w.child('requested')),
    applied: { tid: a.num('tid'), policy: a.oneOf('policy', POLICIES), priority: a.num('priority'), cpus: a.nums('cpus') },
    fallback: w.nullable('fallback') ? null : w.str('fallback'),
  };
}

const POLICIES: readonly Policy[] = ['other', 'fifo', 'rr', 'batch', 'idle'];
