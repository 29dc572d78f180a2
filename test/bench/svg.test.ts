import { describe, expect, it } from 'vitest';
import { formatUs, plot } from '../../src/bench/svg.js';

describe('bench plots', () => {
  it('a log axis spans whole decades; every series is drawn and named; text is escaped', () => {
    const svg = plot({
      title: 'Outage <per> upgrade & more',
      x: { label: 'upgrade', min: 1, max: 3, ticks: [1, 2, 3] },
      y: { label: 'gap', log: true, format: formatUs },
      series: [
        { name: 'handover', color: '#1b7837', points: [[1, 80], [2, 120], [3, 95]] },
        { name: 'restart', color: '#d95f02', points: [[1, 300_000], [2, 420_000], [3, 0]] },
      ],
    });
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="760" height="420"/);
    expect(svg).toContain('>Outage &lt;per&gt; upgrade &amp; more</text>');
    for (const t of ['10 µs', '100 µs', '1 ms', '10 ms', '100 ms', '1 s']) expect(svg).toContain(`>${t}</text>`);
    expect(svg).toContain('>handover</text>');
    expect(svg).toContain('>restart</text>');
    expect(svg.match(/<path /g)).toHaveLength(2);
    expect(svg.match(/<circle /g)).toHaveLength(6);
    expect(svg).not.toContain('NaN');
  });

  it('steps for a CDF, no markers', () => {
    const svg = plot({ title: 'CDF', x: { label: 'x', log: true }, y: { label: 'y', min: 0, max: 1 }, step: true, series: [{ name: 'a', color: '#000', points: [[10, 0], [10, 0.5], [100, 1]] }] });
    expect(svg).toMatch(/<path d="M[\d.]+,[\d.]+ H[\d.]+ L[\d.]+,[\d.]+ H[\d.]+ L/);
    expect(svg).not.toContain('<circle');
    expect(formatUs(850)).toBe('850 µs');
    expect(formatUs(12_500)).toBe('12.5 ms');
    expect(formatUs(1_234_567)).toBe('1.23 s');
  });
});
