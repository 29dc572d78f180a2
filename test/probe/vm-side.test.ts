import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.js';
import { startTraffic, type Traffic } from '../../src/bench/traffic.js';
import { measureWindow, type Replacement } from '../../src/bench/window.js';
import { startProbe } from '../../src/probe/index.js';
import { autoPlacement } from '../../src/sched/placement.js';
import { workerArgs } from '../../src/datapath/bin.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Where a gap comes from, as the VM side tells it: a frame that waited in the
 * switch shows as latency, a slot the VM's own TX thread sent late as the
 * sender's lateness. Both through a real ziu-datapath.
 */
describe('what the VM sees, and whose fault it was', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  });

  it('a stall of the VM sender is its own lateness, not latency in the switch', async () => {
    const dp = await startDatapath();
    cleanups.push(() => dp.stop());
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 2000, size: 128, ringSize: 1024 });
    cleanups.push(() => probe.stop());
    await new Promise((r) => setTimeout(r, 300));
    const stallAtMs = probe.stats().elapsedS * 1000;
    probe.stallTx(60);
    await new Promise((r) => setTimeout(r, 300));
    const r = await probe.stop();

    expect(r).toMatchObject({ lost: 0, duplicated: 0, notSent: 0, clean: true });
    // The receiver saw the hole...
    expect(r.maxGapUs).toBeGreaterThanOrEqual(58_000);
    // ...and the sender owns it: its slots went out 60 ms late, when the stall began.
    expect(r.latenessUs.max).toBeGreaterThanOrEqual(59_000);
    // (A sender already behind its schedule when the stall came, on a loaded 2-core host, owns slots a few ms earlier.)
    expect(r.maxLatenessAtMs).toBeGreaterThan(stallAtMs - 20);
    expect(r.maxLatenessAtMs).toBeLessThan(stallAtMs + 50);
    // The frames themselves crossed the switch as fast as ever.
    expect(r.latencyUs.max).toBeLessThan(r.latenessUs.max / 2);
  });

  it('a frame held in the switch is latency and a gap, in the step that held it', async () => {
    const t = tempDir('ziu-vmside-');
    cleanups.push(async () => t.remove());
    const pair = { tx: path.join(t.dir, 'a.sock'), rx: path.join(t.dir, 'b.sock') };
    let dp: RunningDatapath | null = null;
    // The probes listen (as QEMU's server=on chardevs); the datapath connects to them.
    // Placed as a vswitch is deployed where we may (the worker alone at SCHED_FIFO, the VM elsewhere),
    // so that the host's own few-ms hiccups stay well below the 5 ms hold.
    const place = autoPlacement(1, 2000);
    if (place.note) console.log(`hold test without placement: ${place.note}`);
    const start = async (): Promise<Traffic> => {
      const up =
        dp === null
          ? startDatapath({ ports: { a: 'client', b: 'client' }, socketPaths: { a: pair.tx, b: pair.rx }, env: { ZIU_TEST_HOOKS: '1' }, extraArgs: workerArgs(place.worker) })
          : Promise.resolve(dp);
      const traffic = await startTraffic([pair], { rate: 2000, size: 128, placement: place.vm }, up.then((d) => (dp = d)));
      cleanups.push(() => traffic.stop());
      return traffic;
    };
    cleanups.push(async () => dp?.stop());
    const hold = async (): Promise<Replacement> => {
      const t0 = performance.now();
      const c = await ControlClient.connect(dp!.control);
      let body: Record<string, unknown>;
      try {
        body = (await c.call({ op: 'hold', ms: 5 })).body;
      } finally {
        c.close();
      }
      expect(body['ok']).toBe(true);
      const wallMs = performance.now() - t0;
      return { oldPid: null, newPid: null, switchoverUs: null, wallMs, phases: { hold: wallMs }, prepopulateMs: null };
    };
    // Short settles: the less time around the hold, the less room for the host's noise to outdo it.
    const s = await measureWindow('hold', 1, start, hold, { settleMs: 60, rate: 2000 });

    expect(s).toMatchObject({ lost: 0, duplicated: 0, reordered: 0, notSent: 0 });
    expect(s.outageUs).toBeGreaterThanOrEqual(5000);
    expect(s.gapPhase).toBe('hold');
    // A frame waited out the hold in its ring: the switch's doing...
    expect(s.maxLatencyUs).toBeGreaterThanOrEqual(4000);
    expect(s.latencyPhase).toBe('hold');
    // ...not the sender's.
    expect(s.maxLatenessUs).toBeLessThan(s.maxLatencyUs);
  });

  it('without ZIU_TEST_HOOKS the control socket has no hold', async () => {
    const dp = await startDatapath();
    cleanups.push(() => dp.stop());
    const c = await ControlClient.connect(dp.control);
    try {
      await expect(c.call({ op: 'hold', ms: 5 })).rejects.toMatchObject({ code: 'ERR_ZIU_CONTROL_UNKNOWN_OP' });
    } finally {
      c.close();
    }
  });
});
