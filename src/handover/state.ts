import { ZiuError } from '../errors.js';
import { hex, Reader } from './reader.js';

/**
 * Device state as it crosses the handover: what the old instance knows about
 * each device, in a form that does not depend on either instance's code. The
 * fds travel beside it, named by fdName(); the state says which exist.
 *
 * Two wire formats exist (docs/handover-protocol.md). They carry the same
 * information; the format number says how it is spelled, so that an old and
 * a new datapath can agree on one both understand, and a datapath that
 * understands neither refuses before anything changes.
 */

export const HANDOVER_PROTOCOL = 1;

/** Queue pairs a device state may carry: rings 0 .. 2 * MAX_QUEUE_PAIRS - 1. */
export const MAX_QUEUE_PAIRS = 8;

export interface RingExport {
  /** virtio-net numbering: 2k = RX of queue pair k, 2k+1 = TX of pair k */
  q: number;
  num: number | null;
  addr: { desc: bigint; avail: bigint; used: bigint } | null;
  /** last_avail_idx as the old instance last knew it (the taker resyncs from used->idx) */
  base: number;
  kick: 'fd' | 'poll' | 'none';
  call: boolean;
  err: boolean;
  enabled: boolean;
  started: boolean;
}

export interface VhostExport {
  kind: 'vhost-user';
  name: string;
  path: string;
  mode: 'server' | 'client';
  /** listener fd travels (server mode) */
  listening: boolean;
  /** a frontend is connected: its socket travels */
  connected: boolean;
  /** changes whenever the device state changes (a message handled, a (dis)connect) */
  generation: number;
  owner: boolean;
  features: bigint | null;
  protocolFeatures: bigint;
  status: number;
  mtu: number | null;
  regions: Array<{ gpa: bigint; size: bigint; uaddr: bigint; offset: bigint }>;
  /** rings 0 .. 2n-1 for n queue pairs (1..MAX_QUEUE_PAIRS), in order */
  rings: RingExport[];
  /** bytes of a vhost-user message received but not yet complete (base64), and how many fds came with them */
  pending: { data: string; fds: number } | null;
}

export interface TapExport {
  kind: 'tap';
  name: string;
  ifname: string;
}

export type DeviceExport = VhostExport | TapExport;

/** What `export` (and `freeze`, for devices that changed) carries. */
export interface StateExport {
  /** the old instance's control socket path; its listener fd travels as control/listener */
  control: string;
  devices: DeviceExport[];
}

/** fds are named by device, role and queue, never by position. */
export function fdName(device: string, role: 'listener' | 'socket' | 'tap'): string;
export function fdName(device: string, role: 'region' | 'pending', index: number): string;
export function fdName(device: string, role: 'kick' | 'call' | 'err', queue: number): string;
export function fdName(device: string, role: string, n?: number): string {
  if (role === 'kick' || role === 'call' || role === 'err') return `${device}/ring/${n}/${role}`;
  return n === undefined ? `${device}/${role}` : `${device}/${role}/${n}`;
}

export const CONTROL_LISTENER_FD = 'control/listener';
export const BATON_FD = 'handover/baton';
/** an eventfd the old side writes when frozen: the new side's worker takes over on it */
export const GO_FD = 'handover/go';

/** Formats this code can write and read. */
export const STATE_FORMATS = [1, 2] as const;
export type StateFormat = (typeof STATE_FORMATS)[number];

export function isStateFormat(n: unknown): n is StateFormat {
  return n === 1 || n === 2;
}

export function encodeState(format: StateFormat, s: StateExport): Record<string, unknown> {
  return format === 1 ? encodeV1(s) : encodeV2(s);
}

/** Decode and validate; any problem is ERR_ZIU_STATE naming the field. */
export function decodeState(format: number, doc: unknown): StateExport {
  if (!isStateFormat(format)) throw bad(`state format ${String(format)} is not one of ${STATE_FORMATS.join(', ')}`);
  const r = reader(doc, `state (format ${format})`);
  if (r.num('format') !== format) throw bad(`state says format ${String(r.obj['format'])}, the message says ${format}`);
  return format === 1 ? decodeV1(r) : decodeV2(r);
}

// ---- format 1: a list of devices, rings as a list ----

function encodeV1(s: StateExport): Record<string, unknown> {
  return {
    format: 1,
    control: s.control,
    devices: s.devices.map((d) =>
      d.kind === 'tap'
        ? { kind: 'tap', name: d.name, ifname: d.ifname }
        : {
            kind: 'vhost-user',
            name: d.name,
            path: d.path,
            mode: d.mode,
            listening: d.listening,
            connected: d.connected,
            generation: d.generation,
            owner: d.owner,
            features: d.features === null ? null : hex(d.features),
            protocolFeatures: hex(d.protocolFeatures),
            status: d.status,
            mtu: d.mtu,
            regions: d.regions.map((g) => ({ gpa: hex(g.gpa), size: hex(g.size), uaddr: hex(g.uaddr), offset: hex(g.offset) })),
            rings: d.rings.map((q) => ({
              q: q.q,
              num: q.num,
              desc: q.addr ? hex(q.addr.desc) : null,
              avail: q.addr ? hex(q.addr.avail) : null,
              used: q.addr ? hex(q.addr.used) : null,
              base: q.base,
              kick: q.kick,
              call: q.call,
              err: q.err,
              enabled: q.enabled,
              started: q.started,
            })),
            pending: d.pending,
          },
    ),
  };
}

function decodeV1(r: Reader): StateExport {
  return {
    control: r.str('control'),
    devices: r.list('devices').map((d): DeviceExport => {
      const kind = d.str('kind');
      if (kind === 'tap') return { kind: 'tap', name: d.name('name'), ifname: d.str('ifname') };
      if (kind !== 'vhost-user') throw bad(`${d.where}.kind: '${kind}' is not 'vhost-user' or 'tap'`);
      const name = d.name('name');
      return {
        kind,
        name,
        path: d.str('path'),
        mode: d.oneOf('mode', ['server', 'client'] as const),
        listening: d.bool('listening'),
        connected: d.bool('connected'),
        generation: d.num('generation'),
        owner: d.bool('owner'),
        features: d.nullable('features') ? null : d.big('features'),
        protocolFeatures: d.big('protocolFeatures'),
        status: d.num('status'),
        mtu: d.nullable('mtu') ? null : d.num('mtu'),
        regions: d.list('regions').map((g) => ({ gpa: g.big('gpa'), size: g.big('size'), uaddr: g.big('uaddr'), offset: g.big('offset') })),
        rings: ringsOf(
          `${d.where}.rings: must be rings 0, 1, ...`,
          d.list('rings').map((q) => ({
            q: q.num('q'),
            num: q.nullable('num') ? null : q.num('num'),
            addr: q.nullable('desc') ? null : { desc: q.big('desc'), avail: q.big('avail'), used: q.big('used') },
            base: q.num('base'),
            kick: q.oneOf('kick', ['fd', 'poll', 'none'] as const),
            call: q.bool('call'),
            err: q.bool('err'),
            enabled: q.bool('enabled'),
            started: q.bool('started'),
          })),
        ),
        pending: pendingOf(d),
      };
    }),
  };
}

// ---- format 2: devices keyed by name, split by kind; queues named rx/tx
// (pair 0) and rx<k>/tx<k> (pair k > 0); negotiation and memory grouped;
// addresses as [desc, avail, used] ----

/** Ring q's name in format 2: a single-queue device's rings keep the names they had before multi-queue. */
function queueName(q: number): string {
  const pair = q >> 1;
  return `${q & 1 ? 'tx' : 'rx'}${pair === 0 ? '' : pair}`;
}

const QUEUE_NAME = /^(rx|tx)([1-9][0-9]*)?$/;

function encodeV2(s: StateExport): Record<string, unknown> {
  const vhostUser: Record<string, unknown> = {};
  const taps: Record<string, unknown> = {};
  for (const d of s.devices) {
    if (d.kind === 'tap') {
      taps[d.name] = { ifname: d.ifname };
      continue;
    }
    vhostUser[d.name] = {
      socket: { path: d.path, mode: d.mode, listening: d.listening, connected: d.connected, pending: d.pending },
      generation: d.generation,
      negotiated: {
        owner: d.owner,
        features: d.features === null ? null : hex(d.features),
        protocolFeatures: hex(d.protocolFeatures),
        status: d.status,
        mtu: d.mtu,
      },
      memory: d.regions.map((g) => [hex(g.gpa), hex(g.size), hex(g.uaddr), hex(g.offset)]),
      queues: Object.fromEntries(
        d.rings.map((q) => [
          queueName(q.q),
          {
            size: q.num,
            addrs: q.addr ? [hex(q.addr.desc), hex(q.addr.avail), hex(q.addr.used)] : null,
            lastAvail: q.base,
            fds: { kick: q.kick, call: q.call, err: q.err },
            state: q.started ? (q.enabled ? 'running' : 'started') : q.enabled ? 'enabled' : 'stopped',
          },
        ]),
      ),
    };
  }
  return { format: 2, control: s.control, vhostUser, taps };
}

function decodeV2(r: Reader): StateExport {
  const devices: DeviceExport[] = [];
  for (const [name, d] of r.entries('vhostUser')) {
    d.checkName(name, d.where);
    const sock = d.child('socket');
    const neg = d.child('negotiated');
    const queues = d.child('queues');
    const names = Object.keys(queues.obj);
    for (const n of names) if (!QUEUE_NAME.test(n)) throw bad(`${queues.where}.${n}: not a queue name (rx, tx, rx1, tx1, ...)`);
    const rings = Array.from({ length: names.length }, (_, q): RingExport => {
      const x = queues.child(queueName(q));
      const addrs = x.nullable('addrs') ? null : x.bigs('addrs', 3);
      const fds = x.child('fds');
      const state = x.oneOf('state', ['running', 'started', 'enabled', 'stopped'] as const);
      return {
        q,
        num: x.nullable('size') ? null : x.num('size'),
        addr: addrs ? { desc: addrs[0]!, avail: addrs[1]!, used: addrs[2]! } : null,
        base: x.num('lastAvail'),
        kick: fds.oneOf('kick', ['fd', 'poll', 'none'] as const),
        call: fds.bool('call'),
        err: fds.bool('err'),
        enabled: state === 'running' || state === 'enabled',
        started: state === 'running' || state === 'started',
      };
    });
    devices.push({
      kind: 'vhost-user',
      name,
      path: sock.str('path'),
      mode: sock.oneOf('mode', ['server', 'client'] as const),
      listening: sock.bool('listening'),
      connected: sock.bool('connected'),
      generation: d.num('generation'),
      owner: neg.bool('owner'),
      features: neg.nullable('features') ? null : neg.big('features'),
      protocolFeatures: neg.big('protocolFeatures'),
      status: neg.num('status'),
      mtu: neg.nullable('mtu') ? null : neg.num('mtu'),
      regions: d.tuples('memory', 4).map((t) => ({ gpa: t[0]!, size: t[1]!, uaddr: t[2]!, offset: t[3]! })),
      rings: ringsOf(`${queues.where}: must be rx, tx, rx1, tx1, ...`, rings),
      pending: pendingOf(sock),
    });
  }
  for (const [name, t] of r.entries('taps')) {
    t.checkName(name, t.where);
    devices.push({ kind: 'tap', name, ifname: t.str('ifname') });
  }
  return { control: r.str('control'), devices };
}

// ---- validation ----

function reader(doc: unknown, where: string): Reader {
  return new Reader(doc, where, 'ERR_ZIU_STATE');
}


/** Whole queue pairs, 1..MAX_QUEUE_PAIRS, ring q at index q. */
function ringsOf(what: string, rings: RingExport[]): RingExport[] {
  const n = rings.length;
  if (n < 2 || n > 2 * MAX_QUEUE_PAIRS || n % 2 !== 0 || rings.some((r, i) => r.q !== i)) {
    throw bad(`${what} of 1 to ${MAX_QUEUE_PAIRS} whole queue pairs, in order`);
  }
  return rings;
}

function pendingOf(d: Reader): VhostExport['pending'] {
  if (d.nullable('pending')) return null;
  const p = d.child('pending');
  return { data: p.str('data'), fds: p.num('fds') };
}

function bad(message: string): ZiuError {
  return new ZiuError('ERR_ZIU_STATE', message);
}
