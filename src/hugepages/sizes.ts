import { UsageError } from '../errors.js';

/** A hugepage size ziu knows how to use, and where the kernel keeps its counters. */
export interface PageSizeInfo {
  readonly name: '2M' | '1G';
  readonly bytes: number;
  /** Directory name under /sys/kernel/mm/hugepages and nodeN/hugepages. */
  readonly sysfsDir: string;
}

export const PAGE_2M = 2 * 1024 * 1024;
export const PAGE_1G = 1024 * 1024 * 1024;

export const PAGE_SIZES: readonly PageSizeInfo[] = [
  { name: '2M', bytes: PAGE_2M, sysfsDir: 'hugepages-2048kB' },
  { name: '1G', bytes: PAGE_1G, sysfsDir: 'hugepages-1048576kB' },
];

/** The largest byte size parseSize accepts (1 PiB): beyond it a typo is likelier than a need. */
export const MAX_SIZE = 2 ** 50;

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Facts about a supported page size; a UsageError for any other byte count. */
export function pageSizeInfo(bytes: number): PageSizeInfo {
  const info = PAGE_SIZES.find((p) => p.bytes === bytes);
  if (info === undefined) throw new UsageError(`unknown page size '${formatBytes(bytes)}': use 2M or 1G`);
  return info;
}

/** "2M", "2m", "2MB", "2048kB", "1G", "1GB" -> bytes; only 2 MiB and 1 GiB are accepted. */
export function parsePageSize(text: string): number {
  const m = /^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$/i.exec(text);
  const bytes = m === null ? NaN : Number(m[1]) * (UNITS[(m[2] ?? '').toLowerCase()] ?? NaN);
  const info = PAGE_SIZES.find((p) => p.bytes === bytes);
  if (info === undefined) throw new UsageError(`unknown page size '${text}': use 2M or 1G`);
  return info.bytes;
}

/**
 * "64M", "1G", "512K", "4096", "1.5G" -> bytes (binary units). A fraction is
 * fine as long as it lands on a whole number of bytes.
 */
export function parseSize(text: string): number {
  const t = text.trim();
  if (t.startsWith('-')) throw new UsageError(`invalid size '${text}': must be greater than zero`);
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(t);
  if (m === null) {
    throw new UsageError(`invalid size '${text}': use a number of bytes with an optional K, M, G or T suffix, e.g. 64M`);
  }
  const bytes = Number(m[1]) * (UNITS[(m[2] ?? '').toLowerCase()] ?? NaN);
  if (bytes === 0) throw new UsageError(`invalid size '${text}': must be greater than zero`);
  if (bytes > MAX_SIZE) throw new UsageError(`invalid size '${text}': larger than the limit of 1024T (2^50 bytes)`);
  if (!Number.isInteger(bytes)) throw new UsageError(`invalid size '${text}': ${bytes} is not a whole number of bytes`);
  return bytes;
}

/** Bytes in the largest binary unit that keeps it short: 2097152 -> "2M", 1610612736 -> "1.5G". */
export function formatBytes(bytes: number): string {
  for (const [suffix, unit] of [['T', 2 ** 40], ['G', 2 ** 30], ['M', 2 ** 20], ['K', 2 ** 10]] as const) {
    if (Math.abs(bytes) >= unit) return `${Number((bytes / unit).toFixed(2))}${suffix}`;
  }
  return `${bytes}B`;
}
