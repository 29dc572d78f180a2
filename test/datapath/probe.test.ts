import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startIdle, startProbe } from '../../src/probe/index.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';

describe('ziu-datapath with the probe as both VMs', () => {
  let dp: RunningDatapath | null = null;
  afterEach(async () => {
    await dp?.stop();
    dp = null;
  });

  it('says READY=1 on NOTIFY_SOCKET, forwards 5000 pps for 3 s with zero loss and no reordering, and STOPPING=1 on shutdown', async () => {
    dp = await startDatapath();
    expect(dp.notices[0]).toMatch(/^READY=1\nSTATUS=forwarding between 2 ports\nMAINPID=\d+$/);
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 5000, size: 128 });
    await new Promise((r) => setTimeout(r, 3000));
    const report = await probe.stop();
    expect(report.sent).toBeGreaterThan(14_000);
    expect(report).toMatchObject({ lost: 0, duplicated: 0, reordered: 0, unknown: 0 });
    expect(report.received).toBe(report.sent);

    const st = await dp.status();
    const a = st.ports.find((p) => p.name === 'a')!;
    const b = st.ports.find((p) => p.name === 'b')!;
    expect(a.counters!.rxPackets).toBeGreaterThanOrEqual(report.sent);
    expect(b.counters!.txPackets).toBeGreaterThanOrEqual(report.received);
    expect(st).toMatchObject({ instance: 'test', version: expect.any(String) });

    const sockets = Object.values(dp.sock);
    const notices = dp.notices;
    expect(await dp.stop()).toBe(0);
    dp = null;
    expect(notices.at(-1)).toBe('STOPPING=1');
    for (const s of sockets) expect(fs.existsSync(s)).toBe(false);
  });

  it('a frontend that sends garbage loses its connection; the other ports keep forwarding', async () => {
    dp = await startDatapath({ ports: { a: 'server', b: 'server', bad: 'server' } });
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 2000, size: 64 });
    const { UnixSocket } = await import('../../src/net/socket.js');
    const s = await UnixSocket.connect(dp.sock['bad']!);
    const closed = new Promise<void>((r) => s.once('end', () => r()));
    s.resume();
    // request 9999, version 1, no payload
    await s.send(Buffer.from([0x0f, 0x27, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
    await closed;
    s.close();
    await new Promise((r) => setTimeout(r, 500));
    const report = await probe.stop();
    expect(report).toMatchObject({ lost: 0, duplicated: 0, reordered: 0 });
    const bad = (await dp.status()).ports.find((p) => p.name === 'bad')!;
    expect(bad).toMatchObject({ connected: false, disconnects: 1, lastError: 'vhost-user request 9999: not a request ziu handles' });
  });

  it('the receiving port announces its MAC (RARP): frames to it are not flooded, a third port gets only the announcements', async () => {
    dp = await startDatapath({ ports: { a: 'server', b: 'server', c: 'server' } });
    const idle = await startIdle({ sockets: [dp.sock['c']!], server: false });
    try {
      const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 2000, size: 64 });
      await new Promise((r) => setTimeout(r, 1500));
      const announces = probe.stats().native.announces;
      const report = await probe.stop();
      expect(report).toMatchObject({ lost: 0, duplicated: 0, unknown: 0 });
      expect(report.received).toBeGreaterThan(2500);
      expect(announces).toBeGreaterThanOrEqual(1);
      const st = await dp.status();
      const port = (n: string) => st.ports.find((p) => p.name === n)!.counters!;
      // Everything a -> b went to b alone; c saw b's broadcasts, nothing else.
      expect(port('a').floods).toBe(0);
      expect(port('b').floods ?? NaN).toBeLessThanOrEqual(announces + 1);
      expect(port('c').txPackets + port('c').dropsNoBuffer).toBeLessThanOrEqual(announces + 1);
    } finally {
      idle.stop();
    }
  });
});
