import { afterEach, describe, expect, it } from 'vitest';
import { check, native } from '../../src/native/index.js';
import { closeFds } from '../../src/native/fds.js';
import { startProbe } from '../../src/probe/index.js';
import { ProtocolFeature } from '../../src/vhost/index.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { HostileFrontend } from '../hostile/mem-frontend.js';

type Ring = { q: number; packets: number; enabled: boolean; started: boolean };
const ringsOf = async (dp: RunningDatapath, name: string): Promise<Ring[]> => {
  const p = (await dp.status()).ports.find((x) => x.name === name) as unknown as { rings: Ring[] };
  return p.rings;
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('ziu-datapath with 4 queue pairs per port', () => {
  let dp: RunningDatapath | null = null;
  afterEach(async () => {
    await dp?.stop();
    dp = null;
  });

  it('takes frames from every TX queue and spreads them over every RX queue by flow; nothing lost, no reordering within a queue', async () => {
    dp = await startDatapath();
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 4000, size: 128, queues: 4 });
    await sleep(2000);
    const live = await ringsOf(dp, 'b');
    expect(live.every((r) => r.started && r.enabled)).toBe(true);
    const report = await probe.stop();
    expect(report.sent).toBeGreaterThan(7000);
    expect(report).toMatchObject({ lost: 0, duplicated: 0, unknown: 0, notSent: 0 });
    expect(report.received).toBe(report.sent);
    // One flow per TX queue (round-robin), each kept on one RX queue: a quarter each, in order within it.
    expect(report.queues).toMatchObject({ count: 4, reorderedInQueue: 0 });
    for (const n of report.queues!.rxFrames) expect(n).toBeGreaterThan(report.sent / 4 - 50);

    const a = await ringsOf(dp, 'a');
    const b = await ringsOf(dp, 'b');
    expect(a.map((r) => r.q)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    for (const q of [1, 3, 5, 7]) expect(a[q]!.packets).toBeGreaterThan(report.sent / 4 - 50);
    for (const q of [0, 2, 4, 6]) expect(b[q]!.packets).toBeGreaterThan(report.received / 4 - 50);
  });

  it('a queue disabled with SET_VRING_ENABLE gets nothing more; its flow moves to another queue without loss', async () => {
    dp = await startDatapath();
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 4000, size: 128, queues: 4 });
    await sleep(500);
    await probe.setRxRingEnabled(2, false);
    const before = await ringsOf(dp, 'b');
    expect(before[2]).toMatchObject({ enabled: false, started: true });
    const rxBefore = probe.stats().native.rxQueues;
    await sleep(1000);
    const after = await ringsOf(dp, 'b');
    const rxAfter = probe.stats().native.rxQueues;
    const report = await probe.stop();
    expect(after[2]!.packets).toBe(before[2]!.packets);
    expect(rxAfter[1]).toBe(rxBefore[1]);
    // The three queues still enabled took the whole second's traffic (4000 frames, ~1 s).
    const moved = [0, 4, 6].reduce((n, q) => n + after[q]!.packets - before[q]!.packets, 0);
    expect(moved).toBeGreaterThan(3000);
    expect(report).toMatchObject({ lost: 0, duplicated: 0, notSent: 0 });
    expect(report.received).toBe(report.sent);
  });

  it('refuses a ring past 15, and past 1 without VHOST_USER_PROTOCOL_F_MQ, as a protocol violation; the other ports go on', async () => {
    dp = await startDatapath({ ports: { a: 'server', b: 'server', h1: 'server', h2: 'server' } });
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 2000, size: 64, queues: 2 });
    const call = check(native.eventfd(0, false), 'eventfd');
    try {
      // MQ negotiated: rings 0..15 exist, 16 does not.
      const f1 = await HostileFrontend.connect(dp.sock['h1']!);
      await f1.negotiate(ProtocolFeature.MQ);
      const queues = await f1.call({ type: 'GET_QUEUE_NUM', needReply: false });
      expect(queues).toBe(8n);
      expect(await f1.call({ type: 'SET_VRING_CALL', needReply: true, index: 15, fd: call })).toBe(0n);
      expect(await f1.call({ type: 'SET_VRING_CALL', needReply: true, index: 16, fd: call })).toBeNull();
      expect(await f1.closedWithin(1000)).toBe(true);
      f1.close();
      // Without MQ: rings 0 and 1 only.
      const f2 = await HostileFrontend.connect(dp.sock['h2']!);
      await f2.negotiate();
      expect(await f2.call({ type: 'SET_VRING_NUM', needReply: true, index: 1, num: 256 })).toBe(0n);
      expect(await f2.call({ type: 'SET_VRING_NUM', needReply: true, index: 2, num: 256 })).toBeNull();
      f2.close();
    } finally {
      closeFds([call]);
    }
    const st = await dp.status();
    const h1 = st.ports.find((p) => p.name === 'h1')!;
    const h2 = st.ports.find((p) => p.name === 'h2')!;
    expect(h1).toMatchObject({ connected: false, lastError: 'vhost-user SET_VRING_CALL: ring index 16 is out of range (the device has 16 rings)' });
    expect(h2).toMatchObject({
      connected: false,
      lastError: 'vhost-user SET_VRING_NUM: ring 2 needs VHOST_USER_PROTOCOL_F_MQ, which the frontend did not negotiate: it has rings 0 and 1',
    });
    const report = await probe.stop();
    expect(report).toMatchObject({ lost: 0, duplicated: 0, notSent: 0 });
  });
});
