import http from 'node:http';
import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { ZiuError } from '../errors.js';
import type { Peer, PortStatus, Status } from './peer.js';
import type { PortReport } from './report.js';

/** Frames a port has moved so far (both directions). */
export function packets(p: PortStatus | undefined): number {
  return p?.counters ? p.counters.rxPackets + p.counters.txPackets : 0;
}

/** A port must have carried enough, at its rate before the freeze, to expect this many frames within verify. */
export const MOVING_MIN_FRAMES = 3;

/**
 * Ports where traffic was flowing on the old instance: their counters moved
 * between two samples `windowMs` apart, fast enough that at least
 * MOVING_MIN_FRAMES are due within `verifyMs`. verify then requires frames on
 * each. A port slower than that (one ping a second) is not held to it: it
 * might rightly carry nothing in the verify window.
 */
export function movingPorts(before: Status, after: Status, o: { windowMs: number; verifyMs: number }): Set<string> {
  const moving = new Set<string>();
  for (const p of after.ports) {
    const b = before.ports.find((x) => x.name === p.name);
    const moved = packets(p) - packets(b);
    if (moved > 0 && (moved * o.verifyMs) / Math.max(o.windowMs, 1) >= MOVING_MIN_FRAMES) moving.add(p.name);
  }
  return moving;
}

/**
 * The new instance is healthy: it answers, every port connected on the old
 * instance is still connected without a disconnect, and traffic moves on
 * every port where it was moving before the freeze.
 */
export async function verifyNew(
  peer: Peer,
  oldStatus: Status,
  moving: Set<string>,
  ms: number,
): Promise<PortReport[]> {
  const ask = async (): Promise<Status> => {
    try {
      return await peer.status();
    } catch (cause) {
      throw new ZiuError('ERR_ZIU_VERIFY', `the new instance stopped answering during verify: ${(cause as Error).message}`, { cause });
    }
  };
  const first = await ask();
  await sleep(ms);
  const last = await ask();
  const problems: string[] = [];
  const ports: PortReport[] = oldStatus.ports.map((o) => {
    const n = last.ports.find((x) => x.name === o.name);
    const delta = n ? packets(n) - packets(first.ports.find((x) => x.name === o.name)) : null;
    if (!n) problems.push(`port ${o.name} is missing`);
    else {
      if (o.connected === true && n.connected !== true) problems.push(`port ${o.name} lost its frontend`);
      if ((n.disconnects ?? 0) > 0) problems.push(`port ${o.name} saw ${n.disconnects} disconnect(s)`);
      if (moving.has(o.name) && delta === 0) problems.push(`port ${o.name} forwarded nothing in ${ms} ms (it was moving traffic before)`);
    }
    return { name: o.name, kind: o.kind, connected: n?.connected ?? null, moving: moving.has(o.name), verifyPackets: delta };
  });
  if (problems.length > 0) throw new ZiuError('ERR_ZIU_VERIFY', `the new instance failed verification: ${problems.join('; ')}`);
  return ports;
}

/** GET the health URL: 2xx within the deadline is healthy, anything else names what came back. */
export async function checkHealth(url: string, timeoutMs = 2000): Promise<void> {
  const mod = url.startsWith('https:') ? https : http;
  await new Promise<void>((resolve, reject) => {
    const req = mod.get(url, { timeout: timeoutMs }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      if (code >= 200 && code < 300) resolve();
      else reject(new ZiuError('ERR_ZIU_HEALTH', `health URL ${url} answered ${code}`));
    });
    req.on('timeout', () => req.destroy(new ZiuError('ERR_ZIU_HEALTH', `health URL ${url} did not answer within ${timeoutMs} ms`)));
    req.on('error', (err) =>
      reject(err instanceof ZiuError ? err : new ZiuError('ERR_ZIU_HEALTH', `health URL ${url}: ${err.message}`, { cause: err })),
    );
  });
}
