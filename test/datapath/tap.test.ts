import { afterEach, describe, expect, it } from 'vitest';
import { startEcho } from '../../src/probe/index.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { Netns, netnsUnavailable, parsePing } from '../helpers/netns.js';
import { Testpmd, testpmdUnavailable } from '../helpers/testpmd.js';

const why = netnsUnavailable();
if (why) console.warn(`skipping tap uplink tests: ${why}`);

// The uplink: ziu-datapath's tap device moved into a namespace of its own
// (198.18.0.1), a "VM" on a vhost-user port answering for 198.18.0.2.
describe.skipIf(why !== null)('a tap uplink in a network namespace', () => {
  let dp: RunningDatapath | null = null;
  let ns: Netns | null = null;
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
    await dp?.stop();
    dp = null;
    await ns?.delete();
    ns = null;
  });

  async function uplink(tag: string): Promise<{ dp: RunningDatapath; ns: Netns }> {
    const ifname = `zt${process.pid % 100000}${tag}`.slice(0, 15);
    dp = await startDatapath({ ports: { vm: 'server' }, taps: { up: ifname } });
    ns = await Netns.create(tag);
    await ns.adopt(ifname, '198.18.0.1/24');
    return { dp, ns };
  }

  it('ping from the namespace reaches ziu probe --echo and is answered: 200 pings, zero loss', async () => {
    const { dp, ns } = await uplink('p');
    const echo = await startEcho({ socket: dp.sock['vm']!, ip: '198.18.0.2' });
    cleanups.push(() => echo.stop());
    const r = await ns.exec(['ping', '-c', '200', '-i', '0.01', '-W', '1', '198.18.0.2']);
    expect(parsePing(String(r.stdout))).toEqual({ transmitted: 200, received: 200 });
    const report = await echo.stop();
    cleanups.pop();
    expect(report.icmpReplies).toBe(200);
    expect(report.arpReplies).toBeGreaterThanOrEqual(1);
    const up = (await dp.status()).ports.find((p) => p.name === 'up')!;
    expect(up.counters!.rxPackets).toBeGreaterThanOrEqual(201);
  });

  const noPmd = testpmdUnavailable();
  it.skipIf(noPmd !== null)('the same with DPDK testpmd in icmpecho mode as the VM', async () => {
    const { dp, ns } = await uplink('d');
    const pmd = Testpmd.start({ path: dp.sock['vm']!, mode: 'icmpecho' });
    cleanups.push(() => pmd.kill());
    await pmd.ready();
    const r = await ns.exec(['ping', '-c', '200', '-i', '0.01', '-W', '1', '198.18.0.2']);
    expect(parsePing(String(r.stdout))).toEqual({ transmitted: 200, received: 200 });
  }, 60_000);
});
