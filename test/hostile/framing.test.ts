/**
 * A peer that dribbles fds (issue 10): it starts a message and never
 * finishes it, sending one byte with one fd at a time. The framer holds the
 * fds of an unfinished message, so without a cap one peer could make the
 * datapath hold fds without end. A real process does it to the control
 * socket and to a vhost-user port of a live datapath while the probe runs
 * through two other ports: the peer is dropped after at most SCM_MAX_FD
 * fds, the datapath's fd count comes back to its baseline, the log names
 * the port (or control socket) and the reason, and nothing else notices.
 */
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_FDS_PER_MESSAGE } from '../../src/net/socket.js';
import { startVictim, type Victim } from './victim.js';

const DRIBBLER = path.resolve(import.meta.dirname, '..', 'fixtures', 'fd-dribbler.mjs');
const COUNT = 400;

describe('a peer that dribbles fds with a message it never finishes', () => {
  let victim: Victim;
  beforeAll(async () => {
    victim = await startVictim({ ports: { a: 'server', b: 'server', bad: 'server' } });
  });
  afterAll(async () => {
    const report = await victim.stop();
    expect(report).toMatchObject({ lost: 0, duplicated: 0, reordered: 0 });
    expect(report.received).toBe(report.sent);
  });

  const reason = `the peer sent ${MAX_FDS_PER_MESSAGE + 1} fds with a message it has not finished`;

  it('on the control socket: dropped, every fd closed, and the log says why', { timeout: 30_000 }, async () => {
    // A length prefix announcing 1000 body bytes, never sent.
    const r = await execa(process.execPath, [DRIBBLER, victim.dp.control, 'e8030000', String(COUNT)]);
    expect(JSON.parse(r.stdout)).toEqual({ sent: expect.any(Number), dropped: true });
    // Dropped once past the cap (a few more may be in flight while the close reaches us), not after all of them.
    expect((JSON.parse(r.stdout) as { sent: number }).sent).toBeLessThan(COUNT);
    await victim.checkHealthy();
    expect(victim.log()).toMatch(new RegExp(`"control":"${victim.dp.control}".*"reason":"ziu message: ${reason}.*"msg":"control connection dropped`));
  });

  it('on a vhost-user port: that port is dropped, the others forward on', { timeout: 30_000 }, async () => {
    // vhost-user header: request 5 (SET_MEM_TABLE), flags 0x1, size 4000; the body never comes.
    const r = await execa(process.execPath, [DRIBBLER, victim.dp.sock['bad']!, '0500000001000000a00f0000', String(COUNT)]);
    expect(JSON.parse(r.stdout)).toEqual({ sent: expect.any(Number), dropped: true });
    await victim.checkHealthy();
    const bad = (await victim.dp.status()).ports.find((p) => p.name === 'bad')!;
    expect(bad).toMatchObject({ connected: false, disconnects: 1 });
    expect(bad.lastError).toContain(`vhost-user: ${reason}`);
    expect(victim.log()).toMatch(new RegExp(`"port":"bad".*${reason}`));
  });
});
