/** MAC and IPv4 addresses as the probe takes and prints them. */
import { randomBytes } from 'node:crypto';
import { UsageError } from '../errors.js';

export type Mac = Uint8Array;

export const BROADCAST_MAC: Mac = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

/** A random locally administered unicast MAC, 02:7a:69:xx:xx:xx ("zi"). */
export function randomMac(): Mac {
  const tail = randomBytes(3);
  return Uint8Array.from([0x02, 0x7a, 0x69, tail[0]!, tail[1]!, tail[2]!]);
}

export function formatMac(mac: Mac): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** 'aa:bb:cc:dd:ee:ff' (or with '-'); a multicast address is refused as our own. */
export function parseMac(text: string, what = 'MAC address'): Mac {
  const m = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(text);
  if (m === null) throw new UsageError(`invalid ${what} '${text}': use six hex bytes, e.g. 02:7a:69:00:00:01`);
  const mac = Uint8Array.from(m.slice(1).map((h) => parseInt(h, 16)));
  if (mac[0]! & 1) throw new UsageError(`invalid ${what} '${text}': a multicast address cannot be a port's own`);
  return mac;
}

/** Dotted quad to a host-order u32; 0.0.0.0 is refused (it means "no address" to the loop). */
export function parseIpv4(text: string, what = 'IPv4 address'): number {
  const parts = text.split('.');
  const ok = parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
  if (!ok) throw new UsageError(`invalid ${what} '${text}': use a dotted quad, e.g. 10.0.0.2`);
  const v = parts.reduce((acc, p) => acc * 256 + Number(p), 0);
  if (v === 0) throw new UsageError(`invalid ${what} '${text}': 0.0.0.0 cannot be answered for`);
  return v;
}

export function formatIpv4(v: number): string {
  return [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff].join('.');
}
