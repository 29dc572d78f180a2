import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { UsageError } from '../errors.js';
import { formatBytes, parseSize } from '../memfile/sizes.js';
import { checkNamePart } from '../memfile/names.js';
import { DEFAULT_GUEST_MEMORY, MAX_GUEST_REGIONS, type GuestMemoryLimits } from './guest-memory.js';
import { checkSocketPath } from '../net/socket.js';
import { NO_PLACEMENT, parseCpuList, parsePriority, type Placement } from '../sched/placement.js';
import type { PortMode } from './vhost/port.js';
import { parseOffload, type OffloadSpec } from './offload.js';
import { TABLE_FORMATS, type FlowFormat } from './tables.js';

export interface VhostUserSpec {
  name: string;
  path: string;
  mode: PortMode;
}

export interface TapSpec {
  name: string;
  ifname: string;
}

export interface DatapathConfig {
  instance: string;
  control: string;
  memFiles: string[];
  vhostUser: VhostUserSpec[];
  taps: TapSpec[];
  /** bridge table entries when the table is a memfd (no bridgeTable) */
  macEntries: number;
  /** the bridge table file (--bridge-table); none: a memfd of macEntries entries */
  bridgeTable?: string;
  /** the flow table file (--flow-table); none: a memfd */
  flowTable?: string;
  /** flow table formats this instance reads (converts from); it serves the highest (--flow-formats) */
  flowFormats: readonly FlowFormat[];
  /** a flow idle this long is aged out (a new flow table's header carries it) */
  flowIdleS: number;
  /** where the packet worker runs (--worker-cpus, --worker-priority); the rest of the process stays off those CPUs */
  worker: Placement;
  /** per-port caps on a frontend's memory table (--guest-mem-max, --guest-regions-max) */
  guestMemory: GuestMemoryLimits;
  /** --offload: an acceleration module and its device (docs/offload.md); null: none */
  offload: OffloadSpec | null;
}

/** --guest-mem-max: a size (64G); at least 1M, at most 1024T. */
export function parseGuestMemMax(text: string, label = '--guest-mem-max'): bigint {
  let n: number;
  try {
    n = parseSize(text);
  } catch (cause) {
    throw new UsageError(`${label}: ${(cause as Error).message}`, { cause });
  }
  if (n < 1 << 20) throw new UsageError(`${label} '${text}': use at least 1M`);
  return BigInt(n);
}

/** --guest-regions-max: 1..8. */
export function parseGuestRegionsMax(text: string, label = '--guest-regions-max'): number {
  const n = Number(text);
  if (!/^\s*\d+\s*$/.test(text) || n < 1 || n > MAX_GUEST_REGIONS) throw new UsageError(`${label} '${text}': use 1 to ${MAX_GUEST_REGIONS}`);
  return n;
}

/** How the caps read in help text. */
export const GUEST_MEMORY_DEFAULTS = `${formatBytes(Number(DEFAULT_GUEST_MEMORY.maxBytes))}, ${DEFAULT_GUEST_MEMORY.maxRegions} regions`;

const PORT_NAME = /^[A-Za-z0-9._-]{1,32}$/;
const IFNAME = /^[A-Za-z0-9._-]{1,15}$/;

/** "<name>=<socket path>[,server|client]" (server: we listen; the default). */
export function parseVhostUser(text: string): VhostUserSpec {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UsageError(`--vhost-user '${text}': use <name>=<socket path>[,server|client]`);
  const name = text.slice(0, eq);
  let rest = text.slice(eq + 1);
  let mode: PortMode = 'server';
  const m = /,(server|client)$/.exec(rest);
  if (m) {
    mode = m[1] as PortMode;
    rest = rest.slice(0, -m[0].length);
  }
  if (!PORT_NAME.test(name)) throw new UsageError(`--vhost-user '${text}': port name '${name}' must be 1-32 of [A-Za-z0-9._-]`);
  checkSocketPath(rest);
  return { name, path: rest, mode };
}

/** "<name>=<ifname>" */
export function parseTap(text: string): TapSpec {
  const [name, ifname, extra] = text.split('=');
  if (!name || !ifname || extra !== undefined || !PORT_NAME.test(name) || !IFNAME.test(ifname)) {
    throw new UsageError(`--tap '${text}': use <name>=<interface name> (at most 15 characters of [A-Za-z0-9._-])`);
  }
  return { name, ifname };
}

/** Check a whole configuration, from flags or a file; names every problem it finds first. */
export function checkConfig(c: Partial<DatapathConfig>, options: { standby?: boolean } = {}): DatapathConfig {
  if (!c.control) throw new UsageError('--control <path> is required: the control socket the orchestrator talks to');
  checkSocketPath(c.control);
  if (!c.memFiles || c.memFiles.length === 0) throw new UsageError('at least one --mem-file is required: packet buffers and tables live there');
  const vhostUser = c.vhostUser ?? [];
  const taps = c.taps ?? [];
  // A standby instance with no ports of its own takes whatever its predecessor hands over.
  if (vhostUser.length + taps.length === 0 && !c.offload && !options.standby) throw new UsageError('no ports: give --vhost-user and/or --tap');
  const names = new Set<string>();
  for (const p of [...vhostUser, ...taps]) {
    if (names.has(p.name)) throw new UsageError(`port name '${p.name}' is used twice`);
    names.add(p.name);
  }
  const paths = new Set<string>();
  for (const p of vhostUser) {
    if (paths.has(p.path) || p.path === c.control) throw new UsageError(`socket path '${p.path}' is used twice`);
    paths.add(p.path);
  }
  const instance = c.instance ?? `dp-${process.pid}`;
  checkNamePart('instance', instance);
  const macEntries = c.macEntries ?? 4096;
  if (!Number.isInteger(macEntries) || macEntries < 16 || macEntries > 1 << 22) {
    throw new UsageError(`macEntries ${macEntries}: use 16 to ${1 << 22}`);
  }
  const guestMemory = c.guestMemory ?? DEFAULT_GUEST_MEMORY;
  const flowFormats = c.flowFormats ?? TABLE_FORMATS.flow;
  if (flowFormats.length === 0 || !flowFormats.every((f) => (TABLE_FORMATS.flow as readonly number[]).includes(f))) {
    throw new UsageError(`flow formats ${flowFormats.join(',')}: use a list of ${TABLE_FORMATS.flow.join(', ')}`);
  }
  const flowIdleS = c.flowIdleS ?? 300;
  if (!Number.isInteger(flowIdleS) || flowIdleS < 1 || flowIdleS > 86400) throw new UsageError(`flow idle time ${flowIdleS}: use 1 to 86400 seconds`);
  const tables = [c.bridgeTable, c.flowTable].filter((t): t is string => t !== undefined);
  for (const t of tables) {
    if (t === '' || c.memFiles.includes(t)) throw new UsageError(`table file '${t}': give each table a file of its own (not a --mem-file)`);
  }
  if (tables.length === 2 && tables[0] === tables[1]) throw new UsageError(`--bridge-table and --flow-table are the same file '${tables[0]}'`);
  return {
    instance,
    control: c.control,
    memFiles: c.memFiles,
    vhostUser,
    taps,
    macEntries,
    ...(c.bridgeTable !== undefined ? { bridgeTable: c.bridgeTable } : {}),
    ...(c.flowTable !== undefined ? { flowTable: c.flowTable } : {}),
    flowFormats,
    flowIdleS,
    worker: c.worker ?? NO_PLACEMENT,
    guestMemory,
    offload: c.offload ?? null,
  };
}

/** --flow-formats: "1", "2" or "1,2". */
export function parseFlowFormats(v: string, label = '--flow-formats'): FlowFormat[] {
  const list = v.split(',').map((x) => Number(x.trim()));
  if (list.length === 0 || !list.every((f) => (TABLE_FORMATS.flow as readonly number[]).includes(f))) {
    throw new UsageError(`${label} '${v}': use a list of ${TABLE_FORMATS.flow.join(', ')}`);
  }
  return list as FlowFormat[];
}

/** A JSON or YAML file with the same fields as the flags (vhostUser entries as objects or strings). */
export function readConfigFile(path: string): Partial<DatapathConfig> {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (cause) {
    throw new UsageError(`cannot read config file '${path}': ${(cause as Error).message}`, { cause });
  }
  let doc: unknown;
  try {
    doc = /\.ya?ml$/.test(path) ? parseYaml(text) : JSON.parse(text);
  } catch (cause) {
    throw new UsageError(`config file '${path}' is not valid ${/\.ya?ml$/.test(path) ? 'YAML' : 'JSON'}: ${(cause as Error).message}`, { cause });
  }
  if (typeof doc !== 'object' || doc === null) throw new UsageError(`config file '${path}' must hold an object`);
  const d = doc as Record<string, unknown>;
  const known = new Set(['instance', 'control', 'memFiles', 'vhostUser', 'taps', 'macEntries', 'bridgeTable', 'flowTable', 'flowFormats', 'flowIdleS', 'workerCpus', 'workerPriority', 'guestMemMax', 'guestRegionsMax', 'offload']);
  for (const k of Object.keys(d)) if (!known.has(k)) throw new UsageError(`config file '${path}': unknown field '${k}' (known: ${[...known].join(', ')})`);
  const list = (k: string): unknown[] => (Array.isArray(d[k]) ? (d[k] as unknown[]) : d[k] === undefined ? [] : [d[k]]);
  return {
    ...(typeof d['instance'] === 'string' ? { instance: d['instance'] } : {}),
    ...(typeof d['control'] === 'string' ? { control: d['control'] } : {}),
    ...(typeof d['macEntries'] === 'number' ? { macEntries: d['macEntries'] } : {}),
    ...(typeof d['offload'] === 'string' ? { offload: parseOffload(d['offload']) } : {}),
    ...(typeof d['bridgeTable'] === 'string' ? { bridgeTable: d['bridgeTable'] } : {}),
    ...(typeof d['flowTable'] === 'string' ? { flowTable: d['flowTable'] } : {}),
    ...(d['flowFormats'] !== undefined ? { flowFormats: parseFlowFormats(String(d['flowFormats']), `config file '${path}': flowFormats`) } : {}),
    ...(typeof d['flowIdleS'] === 'number' ? { flowIdleS: d['flowIdleS'] } : {}),
    ...(d['workerCpus'] !== undefined || d['workerPriority'] !== undefined
      ? {
          worker: {
            cpus: d['workerCpus'] === undefined ? null : parseCpuList(String(d['workerCpus']), `config file '${path}': workerCpus`),
            priority: d['workerPriority'] === undefined ? null : parsePriority(String(d['workerPriority']), `config file '${path}': workerPriority`),
          },
        }
      : {}),
    ...(d['guestMemMax'] !== undefined || d['guestRegionsMax'] !== undefined
      ? {
          guestMemory: {
            maxBytes: d['guestMemMax'] === undefined ? DEFAULT_GUEST_MEMORY.maxBytes : parseGuestMemMax(String(d['guestMemMax']), `config file '${path}': guestMemMax`),
            maxRegions: d['guestRegionsMax'] === undefined ? DEFAULT_GUEST_MEMORY.maxRegions : parseGuestRegionsMax(String(d['guestRegionsMax']), `config file '${path}': guestRegionsMax`),
          },
        }
      : {}),
    memFiles: list('memFiles').map(String),
    vhostUser: list('vhostUser').map((v) => (typeof v === 'string' ? parseVhostUser(v) : parseVhostUser(`${(v as VhostUserSpec).name}=${(v as VhostUserSpec).path},${(v as VhostUserSpec).mode ?? 'server'}`))),
    taps: list('taps').map((v) => (typeof v === 'string' ? parseTap(v) : parseTap(`${(v as TapSpec).name}=${(v as TapSpec).ifname}`))),
  };
}

/**
 * The flags a successor can be started with to run as this instance does
 * (reported in hello): the command line without --mem-file, since two
 * instances never share memory; the orchestrator gives the new one its own.
 * A --config file stays: the successor reads it again (its memFiles are
 * overridden by the new --mem-file).
 */
export function reusableArgs(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (a === '--mem-file') {
      i++;
      continue;
    }
    if (a.startsWith('--mem-file=') || a === '--handover-info') continue;
    out.push(a);
  }
  return out;
}
