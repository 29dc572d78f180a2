/**
 * A tap whose device disappears (its network namespace deleted) while the
 * probe forwards a -> b: the datapath must not spin on the dead fd (EPOLLERR,
 * EBADFD), the tap port goes down with a reason in status and the log, its fd
 * is released, and the rest keeps forwarding.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openFds } from '../helpers/fds.js';
import { Netns, netnsUnavailable } from '../helpers/netns.js';
import { cpuPercent, fdsSettle, logLinesFor, sleep, slowestStatus, startRig, statusOrNull, stopRig, type Rig } from './harness.js';

const why = netnsUnavailable();
if (why) console.warn(`skipping the vanishing tap test: ${why}`);

describe.skipIf(why !== null)('a tap whose device vanishes', () => {
  let rig: Rig | null = null;
  let ns: Netns | null = null;
  afterEach(async () => {
    await ns?.delete();
    ns = null;
    await stopRig(rig);
    rig = null;
  }, 60_000);

  it('goes down with a reason; the datapath does not spin; the other ports lose nothing', async () => {
    const ifname = `zv${process.pid % 100000}`.slice(0, 15);
    rig = await startRig({ taps: { up: ifname } });
    const { dp, probe } = rig;
    ns = await Netns.create('vanish');
    await ns.adopt(ifname, '198.18.7.1/24');
    // Some traffic out of the namespace into the tap, so the tap has been read from.
    await ns.exec(['ping', '-c', '3', '-i', '0.01', '-W', '1', '-b', '198.18.7.255']);
    const cpuBefore = await cpuPercent(dp.pid);
    const baseline = openFds(dp.pid);
    await ns.delete();
    ns = null;
    await sleep(300);
    const cpuAfter = await cpuPercent(dp.pid);
    const slowest = await slowestStatus(dp, 1000);
    // The dead tap's fd is released: one fewer than with it open.
    const fds = await fdsSettle(dp.pid, baseline - 1);
    const report = await probe.stop();
    const up = (await statusOrNull(dp))?.ports.find((p) => p.name === 'up') ?? ({} as Record<string, unknown>);
    const lines = logLinesFor(rig.logFile, 'up').map((l) => JSON.stringify(l));
    console.log(`tap vanished: datapath cpu ${cpuBefore.toFixed(0)}% before, ${cpuAfter.toFixed(0)}% after; slowest status ${slowest.toFixed(1)} ms; lost ${report.lost}; port ${JSON.stringify(up)}`);

    expect(cpuAfter).toBeLessThan(cpuBefore + 15);
    expect(slowest).toBeLessThan(100);
    expect({ lost: report.lost, duplicated: report.duplicated, reordered: report.reordered, notSent: report.notSent }).toEqual({ lost: 0, duplicated: 0, reordered: 0, notSent: 0 });
    expect(fds).toBe(baseline - 1);
    expect(up['state']).toBe('down');
    expect(String(up['lastError'])).toMatch(/tap device .* gone/);
    expect(lines.some((l) => /tap device .* gone/.test(l)), lines.join('\n')).toBe(true);
  }, 30_000);
});
