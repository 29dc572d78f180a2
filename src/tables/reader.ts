import fs from 'node:fs';
import { hasCode, ZiuError } from '../errors.js';
import type { BridgeDumpEntry, FlowDumpEntry, TableDump } from '../native/datapath-native.js';
import { check, native } from '../native/index.js';
import { ControlClient } from '../control/client.js';
import { closeFds } from '../native/fds.js';
import { openTrustedFile } from '../trusted-dir.js';

/**
 * `ziu tables`: a datapath's bridge and flow tables read straight from their
 * files, as the vRouter agent maps its flow and bridge tables (docs/tables.md).
 * The datapath says where they are (status); we open them ourselves: a path
 * through a verified directory without following symlinks (owned by us or
 * root, writable by nobody else), a memfd through /proc/<pid>/fd, and check
 * that it is the very file the datapath maps (device and inode). `show`
 * maps read-only. `age` maps read-write and only ever sets the mark bit of a
 * flow's state word, by compare-and-swap: the datapath does the rest.
 */

export interface TableLocation {
  path: string | null;
  fd: number;
  /** st_dev:st_ino as the datapath sees it */
  file: string;
  format: number;
}

export interface Located {
  pid: number;
  instance: string;
  bridge: TableLocation;
  flow: TableLocation;
}

/** Where the datapath on `control` keeps its tables. */
export async function locateTables(control: string): Promise<Located> {
  const client = await ControlClient.connect(control);
  try {
    const r = await client.request({ op: 'status' });
    closeFds(r.fds);
    if (!r.body.ok) throw new ZiuError('ERR_ZIU_TABLE', `status on ${control}: ${r.body.error.message}`);
    const st = (r.body as { status?: { pid?: number; instance?: string; role?: string; tables?: { bridge?: TableLocation; flow?: TableLocation } | null } }).status ?? {};
    const t = st.tables;
    if (typeof st.pid !== 'number' || !t?.bridge || !t.flow) {
      throw new ZiuError('ERR_ZIU_TABLE', `the datapath on ${control} (pid ${st.pid ?? '?'}, ${st.role ?? '?'}) reports no tables${st.role === 'standby' ? ': a standby instance has none until it imports them' : ''}`);
    }
    return { pid: st.pid, instance: st.instance ?? '?', bridge: t.bridge, flow: t.flow };
  } finally {
    client.close();
  }
}

/** Open a table the datapath maps (read-only unless write), checked to be that very file. */
export function openTable(loc: Located, kind: 'bridge' | 'flow', write: boolean): number {
  const t = loc[kind];
  const flags = write ? fs.constants.O_RDWR : fs.constants.O_RDONLY;
  let fd: number;
  const where = t.path ?? `/proc/${loc.pid}/fd/${t.fd} (a memfd)`;
  try {
    try {
      fd = t.path !== null ? openTrustedFile(t.path, flags) : fs.openSync(`/proc/${loc.pid}/fd/${t.fd}`, flags);
    } catch (err) {
      // The path is only where the file was: removed from under the datapath (which still maps it), or
      // replaced. The datapath's own fd is the file itself (checked by device and inode below).
      if (t.path === null) throw err;
      try {
        fd = fs.openSync(`/proc/${loc.pid}/fd/${t.fd}`, flags);
      } catch {
        throw err;
      }
    }
  } catch (cause) {
    const why = (cause as Error).message.replace(/^refusing [^:]*: /, '');
    throw new ZiuError(hasCode(cause, 'ERR_ZIU_UNTRUSTED_PATH') ? 'ERR_ZIU_UNTRUSTED_PATH' : 'ERR_ZIU_TABLE', `cannot open the ${kind} table ${where}: ${why}`, { cause });
  }
  const st = check(native.fstat(fd), 'fstat', { fd });
  if (`${st.dev}:${st.ino}` !== t.file) {
    native.close(fd);
    throw new ZiuError('ERR_ZIU_TABLE', `${where} is not the ${kind} table the datapath maps (another file is at that path now)`);
  }
  return fd;
}

export interface TablesView {
  pid: number;
  instance: string;
  nowS: number;
  bridge: { format: number; entries: number; live: number; macs: Array<{ mac: string; port: string; ageS: number }> };
  flows: {
    format: number;
    entries: number;
    live: number;
    idleS: number;
    list: Array<{
      inPort: string;
      proto: string;
      src: string;
      dst: string;
      action: 'forward' | 'drop';
      outPort: string | null;
      packets: number;
      bytes: number;
      idleS: number;
      ageS: number | null;
      tcpFlags: number | null;
      marked: boolean;
      /** set by the flow op: enforced, never aged */
      pinned: boolean;
    }>;
  };
}

function dump(fd: number, kind: 1 | 2, max: number, what: string): TableDump {
  const d = native.tableDump(fd, kind, max);
  if ('problem' in d) throw new ZiuError('ERR_ZIU_TABLE', `${what}: ${d.problem}`);
  return d;
}

const PROTO: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' };

function addr(b: Uint8Array, family: number): string {
  if (family === 4) return Array.from(b.subarray(0, 4)).join('.');
  if (family === 6) {
    const w: string[] = [];
    for (let i = 0; i < 16; i += 2) w.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    return w.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
  }
  return Array.from(b.subarray(0, 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Every MAC and up to `max` flows, with port names and ages. */
export async function showTables(control: string, max = 100_000): Promise<TablesView> {
  const loc = await locateTables(control);
  const bfd = openTable(loc, 'bridge', false);
  let b: TableDump;
  let f: TableDump;
  try {
    b = dump(bfd, 1, max, `the bridge table of ${loc.instance}`);
  } finally {
    native.close(bfd);
  }
  const ffd = openTable(loc, 'flow', false);
  try {
    f = dump(ffd, 2, max, `the flow table of ${loc.instance}`);
  } finally {
    native.close(ffd);
  }
  const name = (id: number): string => b.ports[id] ?? `#${id}`;
  const now = b.nowS;
  return {
    pid: loc.pid,
    instance: loc.instance,
    nowS: now,
    bridge: {
      format: b.format,
      entries: b.entries,
      live: b.list.length,
      macs: (b.list as BridgeDumpEntry[]).map((e) => ({ mac: e.mac, port: name(e.port), ageS: Math.max(0, now - e.lastSeenS) })),
    },
    flows: {
      format: f.format,
      entries: f.entries,
      live: f.live,
      idleS: f.idleS,
      list: (f.list as FlowDumpEntry[]).map((e) => ({
        inPort: name(e.inPort),
        proto: e.family === 0 ? `eth 0x${e.ethertype.toString(16).padStart(4, '0')}` : `${e.family === 4 ? 'ip4' : 'ip6'} ${PROTO[e.proto] ?? e.proto}`,
        src: addr(e.src, e.family) + (e.sport || e.dport ? `:${e.sport}` : ''),
        dst: addr(e.dst, e.family) + (e.sport || e.dport ? `:${e.dport}` : ''),
        action: e.action === 1 ? 'drop' : 'forward',
        outPort: e.action === 1 ? null : name(e.outPort),
        packets: e.packets,
        bytes: e.bytes,
        idleS: Math.max(0, now - e.lastSeenS),
        ageS: f.format >= 2 ? Math.max(0, now - e.createdS) : null,
        tcpFlags: f.format >= 2 ? e.tcpFlags : null,
        marked: e.marked,
        pinned: e.pinned,
      })),
    },
  };
}

/**
 * Ask the datapath to age out the flows idle at least idleS (default: the
 * table's own idle time, the rule the datapath applies by itself): each is
 * marked; the datapath removes a marked flow that stays idle about a second
 * more, and clears the mark of one that carries traffic meanwhile.
 */
export async function ageTables(control: string, idleS?: number): Promise<{ marked: number; live: number; idleS: number }> {
  const loc = await locateTables(control);
  const fd = openTable(loc, 'flow', true);
  try {
    const h = native.tableCheck(fd, 2);
    if ('problem' in h) throw new ZiuError('ERR_ZIU_TABLE', `the flow table of ${loc.instance}: ${h.problem}`);
    const idle = idleS ?? h.idleS;
    const r = native.tableAge(fd, idle);
    if (typeof r === 'number') check(r, 'tableAge', { fd });
    else if ('problem' in r) throw new ZiuError('ERR_ZIU_TABLE', `the flow table of ${loc.instance}: ${r.problem}`);
    const ok = r as { marked: number; live: number };
    return { ...ok, idleS: idle };
  } finally {
    native.close(fd);
  }
}
