/**
 * Work per pass is bounded: a hostile frontend (frontend.ts, its own process)
 * posts RX buffers that are indirect tables of 32768 descriptors, 32767 of them
 * empty, while the probe floods broadcast frames a -> b (so every frame is
 * also offered to the hostile port). Walking such chains would stretch each
 * pass, and with it every port and the control plane, by tens of ms per
 * frame. The ring must be marked broken and the port dropped instead.
 */
import { afterEach, describe, it } from 'vitest';
import { expectContained, runHostile, startRig, stopRig, type Rig } from './harness.js';

describe('hostile descriptor chains', () => {
  let rig: Rig | null = null;
  afterEach(async () => {
    await stopRig(rig);
    rig = null;
  }, 60_000);

  it('RX buffers of 32768 descriptors: the ring is broken and dropped, the others keep forwarding, status answers', async () => {
    rig = await startRig({ broadcast: true });
    const r = await runHostile(rig, 'rx-long-chains');
    expectContained(r, /ring 0 broken: a descriptor chain longer than 256 descriptors/);
  }, 30_000);
});
