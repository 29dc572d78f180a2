/**
 * Every probe option checked before anything is created, with messages that
 * name the option and the bad value. Labels are the caller's: the CLI says
 * '--size', the library 'size'.
 */
import { UsageError } from '../errors.js';
import { MAX_SOCKET_PATH } from '../net/socket.js';
import { checkInteger } from '../options.js';

export const LIMITS = {
  size: { min: 64, max: 9000 },
  rate: { min: 1, max: 10_000_000 },
  ringSize: { min: 64, max: 4096 },
  /** queue pairs per port, as QEMU's and virtio-user's queues=N (ziu-datapath serves 8) */
  queues: { min: 1, max: 8 },
  /** a week, so a typo in the unit is caught */
  durationS: { max: 7 * 24 * 3600 },
} as const;

export const DEFAULTS = {
  ringSize: 256,
  connectTimeoutMs: 10_000,
  drainMs: 100,
  replyTimeoutMs: 5_000,
} as const;

export function checkRingSize(n: number, label = 'ringSize'): number {
  checkInteger(n, LIMITS.ringSize.min, LIMITS.ringSize.max, label);
  if ((n & (n - 1)) !== 0) throw new UsageError(`invalid ${label} '${n}': a ring size is a power of two`);
  return n;
}

export function checkQueues(n: number, label = 'queues'): number {
  return checkInteger(n, LIMITS.queues.min, LIMITS.queues.max, label, ' queue pairs');
}

export function checkDurationS(s: number, label = 'duration'): number {
  if (!Number.isFinite(s) || s <= 0 || s > LIMITS.durationS.max) {
    throw new UsageError(`invalid ${label} '${s}': use seconds, more than 0 and at most ${LIMITS.durationS.max}`);
  }
  return s;
}

export function checkProbeSocket(p: string, label: string): string {
  if (typeof p !== 'string' || p.length === 0) throw new UsageError(`${label}: the socket path is empty`);
  const bytes = Buffer.byteLength(p);
  if (bytes > MAX_SOCKET_PATH) {
    throw new UsageError(`${label}: socket path '${p}' is ${bytes} bytes; unix sockets allow at most ${MAX_SOCKET_PATH}`);
  }
  if (p.includes('\0')) throw new UsageError(`${label}: socket path '${p}' contains a NUL byte`);
  return p;
}
