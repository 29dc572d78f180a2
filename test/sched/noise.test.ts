import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { startNoise } from '../../src/sched/noise.js';
import { onlineCpus } from '../../src/sched/placement.js';

const root = process.getuid?.() === 0;

describe("the host's noise floor", () => {
  it('wakes on every CPU to a 1 ms schedule, says how late, and leaves no thread behind', async () => {
    const threads = fs.readdirSync('/proc/self/task').length;
    const meter = startNoise(onlineCpus(), 1000);
    expect(fs.readdirSync('/proc/self/task').length).toBe(threads + onlineCpus().length);
    await new Promise((r) => setTimeout(r, 300));
    const cpus = meter.stop();
    expect(cpus.map((c) => c.cpu)).toEqual(onlineCpus());
    for (const c of cpus) {
      // SCHED_FIFO 99 as root; without the privilege it says it ran SCHED_OTHER
      expect(c.priority).toBe(root ? 99 : 0);
      expect(c.samples).toBeGreaterThan(100);
      expect(c.samples).toBeLessThanOrEqual(310);
      expect(c.maxUs).toBeGreaterThanOrEqual(c.meanUs);
      expect(c.p99Us).toBeLessThanOrEqual(c.maxUs);
    }
    expect(meter.stop()).toBe(cpus);
    expect(fs.readdirSync('/proc/self/task').length).toBe(threads);
  });
});
