import { describe, expect, it } from 'vitest';
import { cdf, summarizeRun, type Sample } from '../../src/bench/results.js';
import { pairRatio, percentile, summarize } from '../../src/bench/stats.js';
import { phaseAt } from '../../src/bench/window.js';

function sample(mode: string, index: number, outageUs: number, lost = 0): Sample {
  return { mode, index, outageUs, maxLatencyUs: 20, latencyPhase: 'freeze', maxLatenessUs: 5, latenessPhase: 'before', hostNoiseUs: 300, hostNoisePhase: 'freeze', sent: 10, received: 10 - lost, lost, duplicated: 0, reordered: 0, notSent: 0, reconnects: [0], gapAtMs: 0, gapPhase: 'freeze', wallMs: 100 * index, switchoverUs: mode === 'handover' ? 50 : null, oldPid: 1, newPid: 2, phases: {}, prepopulateMs: null, pairs: [] };
}

describe('bench statistics', () => {
  it('nearest-rank percentiles: always a measured value', () => {
    const ten = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5].sort((a, b) => a - b);
    expect(percentile(ten, 0.5)).toBe(5);
    expect(percentile(ten, 0.9)).toBe(9);
    expect(percentile(ten, 0.99)).toBe(10);
    expect(percentile([42], 0.5)).toBe(42);
    expect(() => percentile([], 0.5)).toThrow('percentile of no samples');
    expect(summarize([3, 1, 2])).toEqual({ min: 1, p50: 2, p90: 3, p99: 3, max: 3 });
    expect(summarize([])).toBeNull();
  });

  it('ratios come from pairs that both completed, p50 over p50 and p99 over p99', () => {
    const r = pairRatio([1000, 2000, undefined, 4000], [10, 20, 30, 40]);
    expect(r).toEqual({ p50: 100, p99: 100, pairs: 3, perPair: [100, 100, 100] });
    expect(pairRatio([1], [])).toBeNull();
    expect(pairRatio([1], [0])).toBeNull();
  });

  it('summarizes a run: totals of lost frames, switchover only for handover, ratios only for modes that ran', () => {
    const samples = [sample('handover', 1, 100), sample('restart', 1, 300_000, 5), sample('handover', 2, 200), sample('restart', 2, 500_000)];
    const { doc, ratios } = summarizeRun(['handover', 'restart'], samples, 2);
    expect(doc.cores).toBe(2);
    expect(doc.modes['handover']).toEqual({
      upgrades: 2,
      outageUs: { min: 100, p50: 100, p90: 200, p99: 200, max: 200 },
      latencyUs: { min: 20, p50: 20, p90: 20, p99: 20, max: 20 },
      latenessUs: { min: 5, p50: 5, p90: 5, p99: 5, max: 5 },
      hostNoiseUs: { min: 300, p50: 300, p90: 300, p99: 300, max: 300 },
      lost: 0,
      duplicated: 0,
      reordered: 0,
      notSent: 0,
      wallMs: { min: 100, p50: 100, p90: 200, p99: 200, max: 200 },
      switchoverUs: { min: 50, p50: 50, p90: 50, p99: 50, max: 50 },
    });
    expect(doc.modes['restart']).toMatchObject({ lost: 5, switchoverUs: null });
    expect(doc.ratios).toEqual({ 'restart/handover': { p50: 3000, p99: 2500 } });
    expect(ratios['restart/handover']!.perPair).toEqual([3000, 2500]);
    expect(summarizeRun(['restart'], samples, 2).doc.ratios).toEqual({});
  });

  it('places a gap in the step it began in', () => {
    const phases = { preflight: 10, reserve: 5, freeze: 1, resume: 1 };
    expect(phaseAt(-5, phases)).toBe('before');
    expect(phaseAt(-0.5, phases)).toBe('preflight');
    expect(phaseAt(12, phases)).toBe('reserve');
    expect(phaseAt(15.5, phases)).toBe('freeze');
    expect(phaseAt(30, phases)).toBe('after');
  });

  it('an empirical CDF rises by 1/n at each sample', () => {
    expect(cdf([30, 10, 20, 40])).toEqual([[10, 0], [10, 0.25], [20, 0.5], [30, 0.75], [40, 1]]);
    expect(cdf([])).toEqual([]);
  });
});
