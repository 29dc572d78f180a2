import { afterEach, describe, expect, it } from 'vitest';
import { decodeState } from '../../src/handover/state.js';
import { closeFds } from '../../src/native/fds.js';
import { native } from '../../src/native/index.js';
import { UnixSocket } from '../../src/net/socket.js';
import { startProbe } from '../../src/probe/index.js';
import { stopProcess } from '../../src/process/index.js';
import { Peer } from '../../src/upgrade/peer.js';
import { startDatapath, startStandby, type RunningDatapath } from '../helpers/datapath.js';
import { GuestPort } from '../helpers/guest-port.js';
import { guestMappings } from '../helpers/proc-maps.js';

/** The handover protocol driven op by op, without the orchestrator. */
describe('handover protocol on ziu-datapath', () => {
  let dp: RunningDatapath | null = null;
  let newPid: number | null = null;
  const peers: Peer[] = [];
  const guests: GuestPort[] = [];
  afterEach(async () => {
    for (const p of peers.splice(0)) p.close();
    for (const g of guests.splice(0)) g.close();
    if (newPid) await stopProcess(newPid, 1000);
    newPid = null;
    await dp?.stop();
    dp = null;
  });

  async function standby(): Promise<Peer> {
    const p = await startStandby(dp!, (pid) => (newPid = pid));
    peers.push(p);
    return p;
  }

  it('a device that changes between export and freeze is re-sent with the freeze and re-imported at resume (no direct takeover)', async () => {
    dp = await startDatapath({ ports: { a: 'server', b: 'server', c: 'server' } });
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 2000, size: 128 });
    const oldPeer = await Peer.connect('old', dp.control);
    peers.push(oldPeer);
    const newPeer = await standby();
    expect(await newPeer.hello()).toMatchObject({ protocol: 1, role: 'standby', stateFormats: { import: [1, 2] } });

    const x = await oldPeer.call('export', { format: 1, upgradeId: 'test' });
    // Named fds: listener, socket, regions and ring eventfds of a and b, c's listener, the control listener, baton, go.
    expect(x.body.fds).toEqual(expect.arrayContaining(['a/listener', 'a/socket', 'a/region/0', 'a/ring/0/kick', 'a/ring/1/call', 'c/listener', 'control/listener', 'handover/baton', 'handover/go']));
    expect(x.body.fds).not.toContain('c/socket');
    await newPeer.call('import', { format: 1, state: x.body.state, fds: x.body.fds }, x.fds);
    closeFds(x.fds);
    expect((await newPeer.hello()).role).toBe('imported');

    // A frontend connects to c after the export: c's state changed.
    const vm = await UnixSocket.connect(dp.sock['c']!);
    await new Promise((r) => setTimeout(r, 100));
    const f = await oldPeer.call('freeze', { deadManMs: 2000 });
    expect(f.body.signalled).toBe(false);
    expect(decodeState(1, f.body.changed!.state).devices.map((d) => [d.name, d.kind === 'vhost-user' && d.connected])).toEqual([['c', true]]);
    expect(f.body.changed!.fds).toEqual(['c/listener', 'c/socket']);
    const r = await newPeer.call('resume', { changed: f.body.changed, fds: f.body.changed!.fds }, f.fds);
    closeFds(f.fds);
    expect(r.body.takenOver).toBe(false);
    expect(r.body.firstPassNs).toBeGreaterThan(f.body.frozenNs);

    // A thaw now is refused: the new instance holds the rings.
    await expect(oldPeer.call('thaw')).rejects.toMatchObject({ code: 'ERR_ZIU_BATON' });
    await newPeer.call('commit');
    await oldPeer.call('commit');
    // Both hold the control listener until the old one exits: only the new one accepts on it.
    for (let i = 0; i < 20; i++) {
      const p = await Peer.connect('after commit', dp.control);
      try {
        expect((await p.hello()).pid).toBe(newPid);
      } finally {
        p.close();
      }
    }
    // The orchestrator's connection to the old instance, opened before, still works.
    expect((await oldPeer.hello()).role).toBe('handed-over');
    await oldPeer.call('shutdown');
    await new Promise((r2) => setTimeout(r2, 300));
    const after = await Peer.connect('committed', dp.control);
    peers.push(after);
    const st = await after.status();
    expect(st).toMatchObject({ pid: newPid, role: 'active' });
    expect(st.ports.map((p) => [p.name, p.connected, p.disconnects])).toEqual([['a', true, 0], ['b', true, 0], ['c', true, 0]]);
    vm.close();
    const rep = await probe.stop();
    expect(rep).toMatchObject({ lost: 0, duplicated: 0, reordered: 0, reconnects: 0 });
  });

  it('a device re-imported at resume (inside the traffic gap) is not faulted in ahead; one imported before the freeze is', { timeout: 30_000 }, async () => {
    dp = await startDatapath({ ports: { a: 'server', c: 'server' } });
    const oldPeer = await Peer.connect('old', dp.control);
    peers.push(oldPeer);
    const newPeer = await standby();
    // a's guest is there before the export (imported, its working set faulted in); c's comes after it (re-imported at resume).
    // Each guest has written all of its memory: its file holds every page.
    const a = await GuestPort.connect(dp.sock['a']!, '52:54:00:00:0a:01', { regionSize: 64 << 20, memfdName: 'guest-a' });
    guests.push(a);
    a.guest.writeEveryPage();
    const x = await oldPeer.call('export', { format: 1, upgradeId: 'test' });
    await newPeer.call('import', { format: 1, state: x.body.state, fds: x.body.fds }, x.fds);
    closeFds(x.fds);
    const c = await GuestPort.connect(dp.sock['c']!, '52:54:00:00:0c:01', { regionSize: 64 << 20, memfdName: 'guest-c' });
    guests.push(c);
    c.guest.writeEveryPage();
    const f = await oldPeer.call('freeze', { deadManMs: 2000 });
    expect(decodeState(1, f.body.changed!.state).devices.map((d) => d.name)).toEqual(['c']);
    await newPeer.call('resume', { changed: f.body.changed, fds: f.body.changed!.fds }, f.fds);
    closeFds(f.fds);
    // Both guests posted 128 RX buffers of 2 KiB (64 pages) and no frame has used one. The new instance faulted a's
    // in at import; of c it has only what its worker touched since: its rings, 16 pages with the kernel's fault-around
    // (70 pages when the re-import faulted the buffers in too, holding up every port's first pass).
    const rss = (name: string): number => guestMappings(newPid!, name).reduce((n, m) => n + m.rss, 0);
    expect(rss('guest-a')).toBeGreaterThanOrEqual(128 * 2048);
    expect(rss('guest-c')).toBeLessThan(128 * 1024);
    await newPeer.call('commit');
    await oldPeer.call('commit');
  });

  it('an import whose ring eventfd is something else (a memfd for a call fd) is refused, naming the fd, and keeps nothing', async () => {
    dp = await startDatapath({ ports: { a: 'server', b: 'server' } });
    const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 1000, size: 128 });
    const oldPeer = await Peer.connect('old', dp.control);
    peers.push(oldPeer);
    const newPeer = await standby();
    const x = await oldPeer.call('export', { format: 1, upgradeId: 'test' });
    const i = x.body.fds.indexOf('a/ring/1/call');
    expect(i).toBeGreaterThanOrEqual(0);
    const fds = [...x.fds];
    fds[i] = native.memfdCreate('not-an-eventfd', 0) as number;
    try {
      await expect(newPeer.call('import', { format: 1, state: x.body.state, fds: x.body.fds }, fds)).rejects.toMatchObject({
        code: 'ERR_ZIU_IMPORT',
        message: expect.stringContaining("a/ring/1/call is not an eventfd"),
      });
    } finally {
      closeFds([...x.fds, fds[i]!]);
    }
    const st = await newPeer.status();
    expect(st.role).toBe('standby');
    expect(st.ports).toEqual([]);
    await oldPeer.call('abort');
    const rep = await probe.stop();
    expect(rep).toMatchObject({ lost: 0, reconnects: 0 });
  });

  it('refuses ops out of order and formats it does not speak, without changing anything', async () => {
    dp = await startDatapath({ extraArgs: ['--state-formats', '1'] });
    const oldPeer = await Peer.connect('old', dp.control);
    peers.push(oldPeer);
    await expect(oldPeer.call('freeze')).rejects.toThrow('freeze: this instance is active; freeze needs exporting');
    await expect(oldPeer.call('export', { format: 2 })).rejects.toThrow('this instance exports state formats 1, not 2');
    await expect(oldPeer.call('import', { format: 1, state: {}, fds: [] })).rejects.toThrow('import: this instance is active; import needs standby');
    const fds = [native.eventfd(0, false) as number];
    await expect(oldPeer.call('import', { format: 1, state: {}, fds: [] }, fds)).rejects.toMatchObject({ code: 'ERR_ZIU_FD_NAMES' });
    native.close(fds[0]!);
    const x = await oldPeer.call('export', { format: 1 });
    closeFds(x.fds);
    expect((await oldPeer.hello()).role).toBe('exporting');
    await oldPeer.call('abort');
    expect((await oldPeer.hello()).role).toBe('active');
    expect((await oldPeer.status()).ports.every((p) => p.kind === 'vhost-user')).toBe(true);
  });
});
