import { afterEach, describe, expect, it } from 'vitest';
import { ProtocolFeature, VirtioFeature } from '../../src/vhost/index.js';
import { startProbe } from '../../src/probe/index.js';
import { openFds } from '../helpers/fds.js';
import { loopback, sleep, threadCount } from './helpers.js';

let cleanup: (() => void) | null = null;
afterEach(() => {
  cleanup?.();
  cleanup = null;
});

describe('probe against the loopback back-end (client mode)', () => {
  it('sends the front-end sequence as virtio-user does and negotiates VERSION_1 | PROTOCOL_FEATURES, REPLY_ACK', async () => {
    const lb = await loopback();
    cleanup = lb.done;
    const probe = await startProbe({ tx: lb.tx, rx: lb.rx, rate: 100, size: 64 });
    const dev = await lb.backend.ready(lb.tx);
    await probe.stop();
    const perRing = (i: number): string[] => ['SET_VRING_NUM', 'SET_VRING_BASE', 'SET_VRING_ADDR', 'SET_VRING_KICK'].map((t) => `${t}:${i}`);
    expect(dev.requests).toEqual([
      'SET_OWNER',
      'GET_FEATURES',
      'GET_PROTOCOL_FEATURES',
      'SET_PROTOCOL_FEATURES',
      'SET_VRING_CALL',
      'SET_VRING_CALL',
      'SET_FEATURES',
      'SET_MEM_TABLE',
      ...[...perRing(0), ...perRing(1)].map((s) => s.split(':')[0]),
      'SET_VRING_ENABLE',
      'SET_VRING_ENABLE',
    ]);
    // MRG_RXBUF was offered but the probe does not implement it
    expect(dev.features).toBe(VirtioFeature.VERSION_1 | VirtioFeature.F_PROTOCOL_FEATURES);
    expect(dev.protocolFeatures).toBe(ProtocolFeature.REPLY_ACK);
    expect(dev.memTableNeedReply).toEqual([true]);
    expect(dev.bases).toEqual([0, 0]);
  });

  it('without protocol features: no GET_PROTOCOL_FEATURES, no ENABLE, no need_reply; traffic still flows', async () => {
    const lb = await loopback({ features: VirtioFeature.VERSION_1 });
    cleanup = lb.done;
    const probe = await startProbe({ tx: lb.tx, rx: lb.rx, rate: 1000, size: 64 });
    await sleep(200);
    const r = await probe.stop();
    const dev = lb.backend.devices.get(lb.rx)!;
    expect(dev.requests).not.toContain('GET_PROTOCOL_FEATURES');
    expect(dev.requests).not.toContain('SET_VRING_ENABLE');
    expect(dev.memTableNeedReply).toEqual([false]);
    expect(dev.features).toBe(VirtioFeature.VERSION_1);
    expect(r.sent).toBeGreaterThan(100);
    expect(r.received).toBe(r.sent);
  });

  it('refuses a back-end without VERSION_1, naming it, and leaks nothing', async () => {
    const lb = await loopback({ features: VirtioFeature.F_PROTOCOL_FEATURES });
    cleanup = lb.done;
    const fds = openFds();
    await expect(startProbe({ tx: lb.tx, rx: lb.rx, rate: 10, size: 64 })).rejects.toThrow(
      /does not offer VIRTIO_F_VERSION_1 \(features 0x40000000\)/,
    );
    await sleep(20);
    expect(openFds()).toBe(fds);
  });

  it('2000 pps for 1 s: every frame arrives once, in order, with a latency', async () => {
    const lb = await loopback();
    cleanup = lb.done;
    const threads = threadCount();
    const probe = await startProbe({ tx: lb.tx, rx: lb.rx, rate: 2000, size: 128 });
    expect(threadCount()).toBe(threads + 2);
    await sleep(1000);
    const live = probe.stats();
    expect(live.connected).toBe(true);
    const r = await probe.stop();
    expect(threadCount()).toBe(threads);
    expect(r.sent).toBeGreaterThanOrEqual(1900);
    expect(r.sent).toBeLessThanOrEqual(2100);
    expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, reordered: 0, unknown: 0, notSent: 0, inFlight: 0, reconnects: 0, rate: 2000, size: 128 });
    expect(r.latencyUs.p50).toBeGreaterThan(0);
    expect(r.latencyUs.p99).toBeGreaterThanOrEqual(r.latencyUs.p50);
    expect(r.latencyUs.max).toBeGreaterThanOrEqual(r.latencyUs.p99);
    // the double runs on a 1 ms timer plus kicks: gaps stay far below 100 ms
    expect(r.maxGapUs).toBeGreaterThan(0);
    expect(r.maxGapUs).toBeLessThan(100_000);
    expect(r.durationS).toBeGreaterThan(0.99);
  });

  it('one socket for tx and rx is one port that sends to itself', async () => {
    const lb = await loopback();
    cleanup = lb.done;
    lb.backend.route(lb.tx, lb.tx);
    const probe = await startProbe({ tx: lb.tx, rx: lb.tx, rate: 1000, size: 64 });
    await sleep(300);
    const r = await probe.stop();
    expect(lb.backend.devices.size).toBe(1);
    expect(r.sent).toBeGreaterThan(250);
    expect(r).toMatchObject({ received: r.sent, lost: 0, duplicated: 0, reordered: 0 });
  });

  it('every 100th frame dropped: lost = sent / 100', async () => {
    const lb = await loopback({ transform: (f, i) => (i % 100 === 99 ? [] : [f]) });
    cleanup = lb.done;
    const probe = await startProbe({ tx: lb.tx, rx: lb.rx, rate: 5000, size: 64 });
    await sleep(1000);
    const r = await probe.stop();
    expect(Math.abs(r.lost - Math.floor(r.sent / 100))).toBeLessThanOrEqual(1);
    expect(r.received + r.lost).toBe(r.sent);
    expect(r.duplicated).toBe(0);
    expect(r.reordered).toBe(0);
  });

  it('one frame delivered twice: duplicated = 1', async () => {
    const lb = await loopback({ transform: (f, i) => (i === 50 ? [f, f] : [f]) });
    cleanup = lb.done;
    const probe = await startProbe({ tx: lb.tx, rx: lb.rx, rate: 2000, size: 64 });
    await sleep(200);
    const r = await probe.stop();
    expect(r).toMatchObject({ duplicated: 1, reordered: 0, lost: 0, received: r.sent });
  });

  it('two frames swapped: reordered, nothing lost', async () => {
    let held: Buffer | null = null;
    const lb = await loopback({
      transform: (f, i) => {
        if (i === 40) {
          held = Buffer.from(f);
          return [];
        }
        if (i === 41) return [f, held!];
        return [f];
      },
    });
    cleanup = lb.done;
    const probe = await startProbe({ tx: lb.tx, rx: lb.rx, rate: 2000, size: 64 });
    await sleep(200);
    const r = await probe.stop();
    expect(r.reordered).toBeGreaterThanOrEqual(1);
    expect(r).toMatchObject({ duplicated: 0, lost: 0, received: r.sent });
  });

  it('frames without the probe marker count as unknown', async () => {
    const lb = await loopback();
    cleanup = lb.done;
    const probe = await startProbe({ tx: lb.tx, rx: lb.rx, rate: 500, size: 64 });
    await lb.backend.ready(lb.rx);
    const other = Buffer.alloc(60);
    other.writeUInt16BE(0x0800, 12);
    for (let i = 0; i < 7; i++) expect(lb.backend.inject(lb.rx, other)).toBe(true);
    await sleep(100);
    expect(probe.stats().unknown).toBe(7);
    const r = await probe.stop();
    expect(r.unknown).toBe(7);
    expect(r.received).toBe(r.sent);
  });

  it('starting and stopping leaks no fds and no threads', async () => {
    const lb = await loopback();
    cleanup = lb.done;
    await sleep(50); // what earlier tests closed is gone
    const fds = openFds();
    const threads = threadCount();
    for (let i = 0; i < 3; i++) {
      const probe = await startProbe({ tx: lb.tx, rx: lb.rx, rate: 1000, size: 64 });
      await sleep(50);
      await probe.stop();
    }
    await sleep(20); // the double closes its side of each connection on the next loop turn
    expect(openFds()).toBe(fds);
    expect(threadCount()).toBe(threads);
  });
});
