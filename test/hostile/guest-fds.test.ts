/**
 * Kick and call fds from a hostile frontend (a process of its own, see
 * frontend.ts) may never block or spin the packet thread: the probe runs
 * a -> b meanwhile and must lose nothing, `status` answers within 100 ms, the
 * hostile port is dropped with a log line and `lastError` naming the reason,
 * and the datapath's fds come back to what they were.
 */
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { expectContained, runHostile, startRig, stopRig, type Rig } from './harness.js';

const noPython = spawnSync('python3', ['-c', 'import fcntl, os']).status === 0 ? null : 'python3 is needed to clear O_NONBLOCK from another process';
if (noPython) console.warn(`skipping call-saturated: ${noPython}`);

const CASES: Array<{ mode: string; reason: RegExp; spins?: boolean }> = [
  { mode: 'call-saturated', reason: /call fd of ring \d blocked the packet thread/ },
  { mode: 'call-pipe', reason: /SET_VRING_CALL: .*not an eventfd/ },
  // These two used to wake the worker for ever (~45% of a core): check the CPU too.
  { mode: 'kick-hup', reason: /SET_VRING_KICK: .*not an eventfd/, spins: true },
  { mode: 'kick-semaphore', reason: /SET_VRING_KICK: .*semaphore/, spins: true },
];

describe('hostile kick and call fds', () => {
  let rig: Rig | null = null;
  afterEach(async () => {
    await stopRig(rig);
    rig = null;
  }, 60_000);

  for (const c of CASES) {
    it.skipIf(c.mode === 'call-saturated' && noPython !== null)(`${c.mode}: the port is dropped, the others keep forwarding, status answers`, async () => {
      rig = await startRig();
      const r = await runHostile(rig, c.mode, { measureCpu: c.spins === true });
      expectContained(r, c.reason);
      if (c.spins) expect(r.cpu).toBeLessThan(25);
    }, 30_000);
  }
});
