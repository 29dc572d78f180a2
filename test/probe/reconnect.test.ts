import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startProbe } from '../../src/probe/index.js';
import { openFds } from '../helpers/fds.js';
import { tempDir } from '../helpers/tmp.js';
import { sleep } from './helpers.js';
import { LoopbackBackend } from './loopback-backend.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe('server mode: the probe listens and survives a back-end restart', () => {
  it('keeps rings and memory, takes the next back-end, resyncs bases to used->idx, and loses nothing', async () => {
    const tmp = tempDir('ziu-probe-');
    cleanups.push(tmp.remove);
    const tx = path.join(tmp.dir, 'tx.sock');
    const rx = path.join(tmp.dir, 'rx.sock');
    await sleep(20);
    const fds = openFds();

    const first = new LoopbackBackend().route(tx, rx);
    cleanups.push(() => first.close());
    const starting = startProbe({ tx, rx, rate: 2000, size: 64, server: true });
    await Promise.all([first.connect(tx), first.connect(rx)]);
    const probe = await starting;
    await sleep(300);
    const before = probe.stats();
    expect(before.received).toBeGreaterThan(400);

    // the back-end dies: both connections drop at once
    const outageStart = process.hrtime.bigint();
    first.disconnect(tx);
    first.disconnect(rx);
    await sleep(300);
    const down = probe.stats();
    expect(down.connected).toBe(false);
    // the TX ring filled up (256 frames) and then slots were skipped, never queued without bound
    expect(down.inFlight).toBe(256);
    expect(down.notSent).toBeGreaterThan(0);

    const second = new LoopbackBackend().route(tx, rx);
    cleanups.push(() => second.close());
    await Promise.all([second.connect(tx), second.connect(rx)]);
    const [dtx, drx] = await Promise.all([second.ready(tx), second.ready(rx)]);
    const outageMs = Number(process.hrtime.bigint() - outageStart) / 1e6;
    // the new back-end resumes at used->idx: TX ring 1 where the old one stopped, RX ring 0 likewise
    expect(dtx.requests[0]).toBe('SET_OWNER');
    expect(dtx.bases[1]).toBe(before.sent > 0 ? (down.sent - down.inFlight) & 0xffff : 0);
    expect(drx.bases[0]).toBe(down.received & 0xffff);
    await sleep(300);
    expect(probe.stats().connected).toBe(true);
    const r = await probe.stop();

    expect(r.reconnects).toBe(1);
    expect(r.received).toBeGreaterThan(down.received + 400);
    expect(r).toMatchObject({ lost: 0, duplicated: 0, reordered: 0, inFlight: 0, received: r.sent });
    // the largest gap is the outage, and it started about 300 ms in
    expect(r.maxGapUs / 1000).toBeGreaterThan(250);
    expect(r.maxGapUs / 1000).toBeLessThan(outageMs + 100);
    expect(r.maxGapAtMs).toBeGreaterThan(250);
    expect(r.maxGapAtMs).toBeLessThan(450);

    first.close();
    second.close();
    await sleep(20);
    expect(openFds()).toBe(fds);
  });

  it('client mode: the link stays down when the back-end goes, and stop() still reports', async () => {
    const tmp = tempDir('ziu-probe-');
    cleanups.push(tmp.remove);
    const p = path.join(tmp.dir, 'loop.sock');
    const backend = new LoopbackBackend().route(p, p);
    cleanups.push(() => backend.close());
    await backend.listen(p);
    const probe = await startProbe({ tx: p, rx: p, rate: 1000, size: 64 });
    await sleep(100);
    backend.disconnect(p);
    await sleep(100);
    expect(probe.stats().connected).toBe(false);
    const r = await probe.stop();
    expect(r.reconnects).toBe(0);
    expect(r.received).toBeGreaterThan(50);
    expect(r.inFlight).toBeGreaterThan(0);
    expect(r.lost).toBe(0);
  });

  it('a client-mode probe retries connecting until the deadline, then names the path', async () => {
    const tmp = tempDir('ziu-probe-');
    cleanups.push(tmp.remove);
    const p = path.join(tmp.dir, 'nobody.sock');
    const fds = openFds();
    const t0 = Date.now();
    await expect(startProbe({ tx: p, rx: p, rate: 10, size: 64, connectTimeoutMs: 300 })).rejects.toThrow(
      `probe txrx port: cannot connect to '${p}' within 300 ms: ENOENT`,
    );
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(openFds()).toBe(fds);
  });
});

describe('server mode without a back-end', () => {
  it('gives up after connectTimeoutMs naming the path, and removes its sockets', async () => {
    const tmp = tempDir('ziu-probe-');
    cleanups.push(tmp.remove);
    const tx = path.join(tmp.dir, 'tx.sock');
    const rx = path.join(tmp.dir, 'rx.sock');
    const fds = openFds();
    // both ports share the deadline: whichever expires first is reported, the other is stopped
    const err = await startProbe({ tx, rx, rate: 10, size: 64, server: true, connectTimeoutMs: 200 }).catch((e: Error) => e);
    expect([`probe tx port: no back-end connected to '${tx}' within 200 ms`, `probe rx port: no back-end connected to '${rx}' within 200 ms`]).toContain(
      (err as Error).message,
    );
    const { existsSync } = await import('node:fs');
    expect(existsSync(tx) || existsSync(rx)).toBe(false);
    expect(openFds()).toBe(fds);
  });
});
