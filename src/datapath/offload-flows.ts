import net from 'node:net';
import { ZiuError } from '../errors.js';

/**
 * Flows as the control plane names them (the `flow` control op,
 * docs/offload.md): ports by name, addresses as text. The engine and the
 * offload module see engine port numbers and 16-byte addresses instead.
 */
export interface FlowKey {
  /** the port frames come in on */
  in: string;
  ipver: 4 | 6;
  /** IP protocol number (6 TCP, 17 UDP, 132 SCTP, ...) */
  proto: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

export interface FlowSpec extends FlowKey {
  /** forward out of this port; null: drop */
  forward: string | null;
}

const PROTOS: Record<string, number> = { tcp: 6, udp: 17, sctp: 132 };

export function flowId(k: FlowKey): string {
  return `${k.in}|${k.proto}|${k.src}|${k.dst}|${k.sport}|${k.dport}`;
}

/** 16 bytes: IPv4 in the first four. */
export function addrBytes(ipver: 4 | 6, text: string): Uint8Array {
  const out = new Uint8Array(16);
  if (ipver === 4) {
    text.split('.').forEach((p, i) => (out[i] = Number(p)));
    return out;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, null];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === null ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 255;
  });
  return out;
}

export function formatAddr(ipver: number, b: Uint8Array): string {
  if (ipver === 4) return [...b.subarray(0, 4)].join('.');
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return g.join(':');
}

function canonical(ipver: 4 | 6, text: string): string {
  return formatAddr(ipver, addrBytes(ipver, text));
}

function bad(msg: string): ZiuError {
  return new ZiuError('ERR_ZIU_FLOW', `flow: ${msg}`);
}

/** A flow key from a control request, checked field by field; ports must be known (`ports`). */
export function parseFlowKey(v: unknown, ports: ReadonlySet<string>): FlowKey {
  if (typeof v !== 'object' || v === null) throw bad('give {in, proto, src, dst, sport, dport}');
  const o = v as Record<string, unknown>;
  const known = new Set(['in', 'proto', 'src', 'dst', 'sport', 'dport', 'forward', 'drop']);
  for (const k of Object.keys(o)) if (!known.has(k)) throw bad(`unknown field '${k}' (known: ${[...known].join(', ')})`);
  if (typeof o['in'] !== 'string' || !ports.has(o['in'])) throw bad(`in: '${String(o['in'])}' is not a port of this datapath (${[...ports].join(', ')})`);
  const p = o['proto'];
  const proto = typeof p === 'string' ? PROTOS[p.toLowerCase()] : p;
  if (typeof proto !== 'number' || !Number.isInteger(proto) || proto < 0 || proto > 255) throw bad(`proto: '${String(p)}' is not tcp, udp, sctp or 0-255`);
  const src = o['src'];
  const dst = o['dst'];
  if (typeof src !== 'string' || typeof dst !== 'string' || net.isIP(src) === 0 || net.isIP(src) !== net.isIP(dst)) throw bad(`src and dst must be two IPv4 or two IPv6 addresses`);
  const ipver = net.isIP(src) as 4 | 6;
  const port = (k: 'sport' | 'dport'): number => {
    const x = o[k] ?? 0;
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 65535) throw bad(`${k}: ${String(x)} is not 0-65535`);
    return x;
  };
  return { in: o['in'], ipver, proto, src: canonical(ipver, src), dst: canonical(ipver, dst), sport: port('sport'), dport: port('dport') };
}

/**
 * A flow to set: its key and either `forward: <port>` or `drop: true`. The
 * host's flow table pins it and enforces its action, also when the module
 * refuses it or fails.
 */
export function parseFlowSpec(v: unknown, ports: ReadonlySet<string>): FlowSpec {
  const key = parseFlowKey(v, ports);
  const o = v as Record<string, unknown>;
  const fwd = o['forward'];
  const drop = o['drop'];
  if (drop !== undefined && drop !== true) throw bad(`drop: give true, or leave it out and give forward`);
  if (drop === true) {
    if (fwd !== undefined && fwd !== null) throw bad('give forward or drop, not both');
    return { ...key, forward: null };
  }
  if (typeof fwd !== 'string' || !ports.has(fwd)) throw bad(`forward: '${String(fwd)}' is not a port of this datapath (or give drop: true)`);
  if (fwd === key.in) throw bad(`forward: a flow cannot go back out of ${fwd}, the port it comes in on`);
  return { ...key, forward: fwd };
}
