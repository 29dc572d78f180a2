/** Order statistics of a benchmark's samples, and same-run ratios between modes. */

export interface Summary {
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/**
 * Nearest-rank percentile (the smallest value with at least q of the samples
 * at or below it): always a value that was measured, never an interpolation
 * between two. With 10 samples p90 is the 9th and p99 the largest.
 */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) throw new RangeError('percentile of no samples');
  if (!(q > 0 && q <= 1)) throw new RangeError(`percentile: q must be in (0, 1], got ${q}`);
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!;
}

/** min, p50, p90, p99, max; null when there are no samples. */
export function summarize(values: readonly number[], digits = 1): Summary | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const r = (x: number): number => round(x, digits);
  return { min: r(s[0]!), p50: r(percentile(s, 0.5)), p90: r(percentile(s, 0.9)), p99: r(percentile(s, 0.99)), max: r(s[s.length - 1]!) };
}

export interface PairRatio {
  /** p50 of the slower mode over p50 of the faster one, both over the same pairs */
  p50: number;
  p99: number;
  /** how many pairs (upgrade i of each mode, run back to back) went in */
  pairs: number;
  /** each pair's own ratio, in upgrade order (null where the denominator is 0) */
  perPair: Array<number | null>;
}

/**
 * Ratios of `num` over `den` from pairs measured back to back in one session:
 * pair i is upgrade i of each mode, so both sides saw the same machine, the
 * same noise. Pairs where either side is missing are left out. null if no pair
 * is complete or a denominator percentile is 0.
 */
export function pairRatio(num: readonly (number | undefined)[], den: readonly (number | undefined)[]): PairRatio | null {
  const pairs: Array<[number, number]> = [];
  for (let i = 0; i < Math.min(num.length, den.length); i++) {
    const a = num[i];
    const b = den[i];
    if (a !== undefined && b !== undefined) pairs.push([a, b]);
  }
  if (pairs.length === 0) return null;
  const ns = pairs.map((p) => p[0]).sort((x, y) => x - y);
  const ds = pairs.map((p) => p[1]).sort((x, y) => x - y);
  const d50 = percentile(ds, 0.5);
  const d99 = percentile(ds, 0.99);
  if (d50 <= 0 || d99 <= 0) return null;
  return {
    p50: round(percentile(ns, 0.5) / d50, 1),
    p99: round(percentile(ns, 0.99) / d99, 1),
    pairs: pairs.length,
    perPair: pairs.map(([a, b]) => (b > 0 ? round(a / b, 1) : null)),
  };
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
