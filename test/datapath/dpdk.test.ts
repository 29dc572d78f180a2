import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { Testpmd, testpmdUnavailable } from '../helpers/testpmd.js';

const why = testpmdUnavailable();
if (why) console.warn(`skipping DPDK interop tests: ${why}`);

// DPDK 22.11's virtio-user as the VMs: testpmd txonly on port a, rxonly on
// port b; what one sends must reach the other through the bridge, by
// testpmd's own statistics. Three busy pollers share 2 cores here, so the
// receiver keeps up with only part of the offered load: the test checks
// delivery and accounting, bench-forward measures rates.
describe.skipIf(why !== null)('DPDK testpmd (net_virtio_user) as the frontend', () => {
  let dp: RunningDatapath | null = null;
  const pmds: Testpmd[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const p of pmds.splice(0)) await p.kill();
    await dp?.stop();
    dp = null;
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  async function run(mode: 'client' | 'server'): Promise<void> {
    // virtio-user client mode connects to our server ports; server=1 waits for us to connect.
    const theirs = mode === 'client' ? 'server' : 'client';
    let rx: Testpmd;
    let tx: Testpmd;
    if (mode === 'client') {
      dp = await startDatapath({ ports: { a: theirs, b: theirs } });
      rx = Testpmd.start({ path: dp.sock['b']!, mode: 'rxonly' });
      pmds.push(rx);
      await rx.ready();
      tx = Testpmd.start({ path: dp.sock['a']!, mode: 'txonly', txpkts: 64 });
      pmds.push(tx);
      await tx.ready();
    } else {
      const dir = fs.mkdtempSync('/tmp/ziu-pmd-');
      dirs.push(dir);
      const paths = { a: `${dir}/a.sock`, b: `${dir}/b.sock` };
      rx = Testpmd.start({ path: paths.b, mode: 'rxonly', server: true });
      tx = Testpmd.start({ path: paths.a, mode: 'txonly', server: true, txpkts: 64 });
      pmds.push(rx, tx);
      // both wait in probe for a backend to connect: that is the datapath in client mode
      for (let i = 0; i < 100 && !(rx.output.includes('waiting for client') && tx.output.includes('waiting for client')); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      dp = await startDatapath({ ports: { a: 'client', b: 'client' }, socketPaths: paths });
      await rx.ready();
      await tx.ready();
    }
    await new Promise((r) => setTimeout(r, 2000));
    const sent = await tx.stop();
    await new Promise((r) => setTimeout(r, 300));
    const got = await rx.stop();
    const st = await dp!.status();
    const a = st.ports.find((p) => p.name === 'a')!.counters!;
    const b = st.ports.find((p) => p.name === 'b')!.counters!;

    expect(sent.txPackets).toBeGreaterThan(10_000);
    expect(got.rxPackets).toBeGreaterThan(1_000);
    // every frame testpmd sent entered the bridge (but what was still in its ring when it quit)
    expect(sent.txPackets - a.rxPackets).toBeGreaterThanOrEqual(0);
    expect(sent.txPackets - a.rxPackets).toBeLessThanOrEqual(256);
    // everything the bridge delivered to b's ring, testpmd counted (but what was in flight when it quit,
    // and, in server mode where txonly may already send, what rxonly's start-up flush of its queues
    // (flush_fwd_rx_queues) took before it counted anything)
    expect(b.txPackets - got.rxPackets).toBeGreaterThanOrEqual(0);
    expect(b.txPackets - got.rxPackets).toBeLessThanOrEqual(mode === 'client' ? 256 : 256 + b.txPackets / 100);
    // and what the bridge could not deliver (b's ring full) is counted, not lost silently
    expect(b.txPackets + b.dropsNoBuffer).toBe(a.rxPackets);
    expect(a.dropsInvalid + b.dropsInvalid).toBe(0);
  }

  it('virtio-user client mode: testpmd connects to ziu-datapath', () => run('client'), 60_000);
  it('virtio-user server mode (server=1): ziu-datapath connects to testpmd', () => run('server'), 60_000);
});
