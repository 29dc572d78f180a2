/**
 * What a benchmark run takes, checked before anything starts, with messages
 * that name the option and the bad value (labels are the caller's: the CLI
 * says '--ports', the library 'ports').
 */
import os from 'node:os';
import { UsageError } from '../errors.js';
import { formatBytes, PAGE_2M } from '../hugepages/index.js';
import { checkInteger } from '../options.js';
import { LIMITS as PROBE_LIMITS } from '../probe/options.js';

/** How the datapath is replaced under traffic. */
export const MODES = ['handover', 'restart', 'restart-cold'] as const;
export type Mode = (typeof MODES)[number];

export const DEFAULTS = {
  upgrades: 10,
  ports: 1,
  rate: 10_000,
  size: 64,
  mem: 64 * 2 ** 20,
  /** traffic before and after each upgrade inside its measurement window */
  settleMs: 300,
} as const;

export const LIMITS = {
  upgrades: { min: 1, max: 10_000 },
  /**
   * Port pairs: a compute node's worth of VMs (every pair takes two
   * vhost-user ports; ziu-datapath serves up to 1024 ports).
   */
  ports: { min: 1, max: 256 },
  /** idle ports beside the pairs: up to ziu-datapath's 1024 ports in all */
  idlePorts: { min: 0, max: 512 },
  rate: PROBE_LIMITS.rate,
  size: PROBE_LIMITS.size,
  /** one 2 MiB page at least (the datapath needs ~350 KiB for its MAC table and staging buffers) */
  mem: { min: PAGE_2M },
  settleMs: { min: 0, max: 60_000 },
} as const;

/** The memory page size of the datapath instances: 2 MiB hugepages as root, else tmpfs. */
export const PAGE_SIZE = PAGE_2M;

/** --mode: one mode, or all three interleaved upgrade by upgrade. */
export function parseModes(text: string, label = 'mode'): Mode[] {
  if (text === 'all') return [...MODES];
  if ((MODES as readonly string[]).includes(text)) return [text as Mode];
  throw new UsageError(`invalid ${label} '${text}': use one of ${[...MODES, 'all'].join(', ')}`);
}

export function checkUpgrades(n: number, label = 'upgrades'): number {
  return checkInteger(n, LIMITS.upgrades.min, LIMITS.upgrades.max, label);
}

export function checkPorts(n: number, label = 'ports'): number {
  return checkInteger(n, LIMITS.ports.min, LIMITS.ports.max, label, ' port pairs (each pair is two vhost-user ports)');
}

export function checkRate(n: number, label = 'rate'): number {
  return checkInteger(n, LIMITS.rate.min, LIMITS.rate.max, label, ' frames per second per port pair');
}

export function checkSize(n: number, label = 'size'): number {
  return checkInteger(n, LIMITS.size.min, LIMITS.size.max, label, ' bytes');
}

/**
 * Memory per datapath instance. Two instances live side by side in every mode
 * (the new one's memory is made before the old one stops, except in
 * restart-cold, where it is made right after), so twice this must be free.
 */
export function checkMem(bytes: number, label = 'mem', freeBytes = os.freemem()): number {
  if (!Number.isSafeInteger(bytes) || bytes < LIMITS.mem.min) {
    throw new UsageError(`invalid ${label} '${Number.isSafeInteger(bytes) ? formatBytes(bytes) : bytes}': use at least ${formatBytes(LIMITS.mem.min)}`);
  }
  if (2 * bytes > freeBytes) {
    throw new UsageError(
      `${label} ${formatBytes(bytes)}: two datapath instances side by side need ${formatBytes(2 * bytes)}, this host has ${formatBytes(freeBytes)} of memory available`,
    );
  }
  return bytes;
}
