import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeState, encodeState } from '../../src/handover/state.js';
import { closeFds } from '../../src/native/fds.js';
import { startProbe, type ProbeReport } from '../../src/probe/index.js';
import { processAlive, stopProcess } from '../../src/process/index.js';
import { Peer } from '../../src/upgrade/peer.js';
import { encodeRequest } from '../../src/vhost/index.js';
import { startDatapath, startStandby, type RunningDatapath } from '../helpers/datapath.js';
import { HostileFrontend } from './mem-frontend.js';

/**
 * A rollback after the new instance took the rings: what it consumed of a
 * device's socket must not be lost on the way back (docs/handover-protocol.md,
 * handback and section 8), and a new instance that hangs with the rings is
 * found and undone by the old one without any orchestrator. Real processes,
 * the protocol driven op by op; the probe runs a -> b throughout, c is the
 * frontend that does the awkward thing (half a message).
 */
describe('rollback after resume: the state the new instance consumed', () => {
  let dp: RunningDatapath | null = null;
  let newPid: number | null = null;
  let frontend: HostileFrontend | null = null;
  const peers: Peer[] = [];
  afterEach(async () => {
    frontend?.close();
    frontend = null;
    for (const p of peers.splice(0)) p.close();
    if (newPid) {
      try {
        process.kill(newPid, 'SIGCONT');
      } catch {
        // gone
      }
      await stopProcess(newPid, 1000);
    }
    newPid = null;
    await dp?.stop();
    dp = null;
  });

  async function setup(env: Record<string, string> = {}): Promise<{ old: Peer; next: Peer; probe: { stop(): Promise<ProbeReport> }; half: Buffer; rest: Buffer; log: string }> {
    const log = path.join(fs.mkdtempSync('/tmp/ziu-test-log-'), 'old.log');
    dp = await startDatapath({ ports: { a: 'server', b: 'server', c: 'server' }, logFile: log });
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 1000, size: 128, ringSize: 1024 });
    frontend = await HostileFrontend.connect(dp.sock['c']!);
    expect(await frontend.call({ type: 'SET_OWNER', needReply: false })).toBe(0n);
    const old = await Peer.connect('old', dp.control);
    peers.push(old);
    const next = await standby(env);
    const x = await old.call('export', { format: 2, upgradeId: 'rollback-state' });
    await next.call('import', { format: 2, state: x.body.state, fds: x.body.fds }, x.fds);
    closeFds(x.fds);
    const f = await old.call('freeze', { deadManMs: 200 });
    closeFds(f.fds);
    await next.call('resume', { changed: f.body.changed, fds: f.body.changed?.fds ?? [] });
    expect((await next.hello()).role).toBe('resumed');
    if (env['ZIU_FAULT'] === 'hang-after-resume') return { old, next, probe, half: Buffer.alloc(0), rest: Buffer.alloc(0), log };
    // Half a GET_FEATURES header, read by the new instance: it is in its buffer and nowhere else.
    const { bytes } = encodeRequest({ type: 'GET_FEATURES', needReply: false });
    const half = bytes.subarray(0, 6);
    const rest = bytes.subarray(6);
    await frontend.sock.send(half);
    await waitFor(async () => ((await next.status()).ports.find((p) => p.name === 'c') as { generation?: number } | undefined) !== undefined, 500);
    await new Promise((r) => setTimeout(r, 100));
    return { old, next, probe, half, rest, log };
  }

  async function standby(env: Record<string, string>): Promise<Peer> {
    const p = await startStandby(dp!, (pid) => (newPid = pid), env);
    peers.push(p);
    return p;
  }

  it('handback: the half message the new instance read goes back with the device, and the old instance answers it whole', async () => {
    const { old, next, probe, rest } = await setup();
    const hb = await next.call('handback');
    expect((await next.hello()).role).toBe('handed-back');
    const changed = hb.body.changed!;
    expect(changed).not.toBeNull();
    const devices = decodeState(changed.format, changed.state).devices;
    expect(devices.map((d) => d.name)).toEqual(['c']);
    expect(devices[0]!.kind === 'vhost-user' && devices[0]!.pending?.data).toBe(Buffer.from(encodeRequest({ type: 'GET_FEATURES', needReply: false }).bytes.subarray(0, 6)).toString('base64'));
    // Without force: the new instance gave the word back (1 -> 0), the old one takes it by its own CAS.
    const t = await old.call('thaw', { changed, fds: changed.fds }, hb.fds);
    closeFds(hb.fds);
    expect(t.body).toMatchObject({ thawed: true, role: 'active', readopted: ['c'], reset: [] });
    await stopProcess(newPid!, 2000);
    newPid = null;
    // The second half: the old instance completes the message and answers it.
    await frontend!.sock.send(rest);
    const reply = await frontend!.reply('GET_FEATURES', 2000);
    expect(reply).not.toBeNull();
    expect(reply!.body.readBigUInt64LE(0)).toBeGreaterThan(0n);
    expect(frontend!.closed).toBe(false);
    const st = await old.status();
    expect(st.ports.find((p) => p.name === 'c')).toMatchObject({ connected: true, disconnects: 0 });
    const rep = await probe.stop();
    expect(rep).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
  });

  it('a handback the old instance cannot adopt (a device it does not have): it serves anyway, with the consumed device reset', async () => {
    const { old, next, probe } = await setup();
    const hb = await next.call('handback');
    const changed = hb.body.changed!;
    const state = decodeState(changed.format, changed.state);
    const bogus = encodeState(changed.format, { ...state, devices: state.devices.map((d) => ({ ...d, name: 'zz' })) });
    const t = await old.call('thaw', { force: true, changed: { ...changed, state: bogus }, fds: changed.fds }, hb.fds);
    closeFds(hb.fds);
    expect(t.body).toMatchObject({ thawed: true, role: 'active', readopted: [], reset: ['c'] });
    // The frontend sees the close once the new instance, which holds the same connection, is gone too.
    await stopProcess(newPid!, 2000);
    newPid = null;
    expect(await frontend!.closedWithin(1000)).toBe(true);
    const rep = await probe.stop();
    expect(rep).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
  });

  it('a new instance that dies having read half a message: the old one resets that device only, never serves it stale', async () => {
    const { old, probe, log } = await setup();
    process.kill(newPid!, 'SIGKILL');
    await stopProcess(newPid!, 1000);
    newPid = null;
    const t = await old.call('thaw', { force: true });
    expect(t.body).toMatchObject({ thawed: true, role: 'active', readopted: [], reset: ['c'] });
    expect(await frontend!.closedWithin(1000)).toBe(true);
    const st = await old.status();
    expect(st.ports.find((p) => p.name === 'c')).toMatchObject({ connected: false });
    expect(st.ports.filter((p) => p.name !== 'c').every((p) => p.connected && p.disconnects === 0)).toBe(true);
    const rep = await probe.stop();
    expect(rep).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
    await waitFor(async () => fs.readFileSync(log, 'utf8').includes('"port":"c"') && fs.readFileSync(log, 'utf8').includes('the device starts over'), 1000);
  });

  it('a new instance that hangs with the rings (SIGSTOP) is stopped by the old one, which takes the rings back within the dead-man bound, with no orchestrator', async () => {
    const { old, probe, log } = await setup();
    // Past the dead-man bound the old instance is handed-over and watching.
    await waitFor(async () => (await old.hello()).role === 'handed-over', 1000);
    const hung = newPid!;
    const t0 = performance.now();
    process.kill(hung, 'SIGSTOP');
    await waitFor(async () => (await old.hello()).role === 'active', 3000);
    const backMs = performance.now() - t0;
    console.log(`heartbeat: the old instance served again ${backMs.toFixed(0)} ms after the new one hung (dead-man bound 200 ms, 2 cores)`);
    expect(processAlive(hung)).toBe(false);
    newPid = null;
    // The new instance had read half a message of c: c starts over, a and b go on.
    expect(await frontend!.closedWithin(1000)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    const rep = await probe.stop();
    expect(rep).toMatchObject({ duplicated: 0, reconnects: 0 });
    expect(rep.lost).toBe(0);
    const text = fs.readFileSync(log, 'utf8');
    expect(text).toContain('the new instance stopped beating while it held the rings');
    expect(backMs).toBeLessThan(2000);
  });

  it('a new instance whose control thread hangs (its worker still serving) is stopped too, past the control bound of 1 s', async () => {
    const { old, probe, log } = await setup({ ZIU_FAULT: 'hang-after-resume' });
    const hung = newPid!;
    const t0 = performance.now();
    await waitFor(async () => (await old.hello()).role === 'active', 4000);
    const backMs = performance.now() - t0;
    console.log(`heartbeat: control thread hung, the old instance served again ${backMs.toFixed(0)} ms later (control bound 1000 ms, 2 cores)`);
    expect(processAlive(hung)).toBe(false);
    newPid = null;
    const rep = await probe.stop();
    expect(rep).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
    expect(fs.readFileSync(log, 'utf8')).toMatch(/"controlBeatMs":\d{4}/);
  });
});

async function waitFor(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
