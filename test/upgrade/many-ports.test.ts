import { afterEach, describe, expect, it } from 'vitest';
import { check, native } from '../../src/native/index.js';
import { closeFds } from '../../src/native/fds.js';
import type { MappedRegion } from '../../src/vhost/index.js';
import { HostileFrontend, UA } from '../hostile/mem-frontend.js';
import { fdCount, startRig, type Rig } from '../helpers/upgrade.js';

/** Ports beside the probe's pair a -> b: 256 vhost-user ports in all, a compute node's worth. */
const OTHERS = 254;
const MiB = 1n << 20n;

interface Guest {
  fe: HostileFrontend;
  fds: number[];
}

/**
 * A guest per port, in this process: a frontend with a 1 MiB memfd region and
 * both rings started on eventfds, so each port carries what a VM's does
 * (listener, socket, region, two kick and two call fds: 7 fds, 1.8k in all).
 */
async function guest(path: string): Promise<Guest> {
  const fds: number[] = [];
  try {
    const mem = check(native.memfdCreate('ziu-many-ports', 0), 'memfd_create');
    fds.push(mem);
    check(native.ftruncate(mem, Number(MiB)), 'ftruncate', { fd: mem });
    const ev = (): number => {
      const fd = check(native.eventfd(0, false), 'eventfd');
      fds.push(fd);
      return fd;
    };
    const kick: [number, number] = [ev(), ev()];
    const call: [number, number] = [ev(), ev()];
    const fe = await HostileFrontend.connect(path);
    await fe.negotiate();
    const region: MappedRegion = { guestPhysAddr: 0n, memorySize: MiB, userspaceAddr: UA, mmapOffset: 0n, fd: mem };
    const ack = await fe.setMemTable([region]);
    if (ack !== 0n) throw new Error(`SET_MEM_TABLE on ${path}: ${ack}`);
    await fe.startRings(kick, call);
    return { fe, fds };
  } catch (err) {
    closeFds(fds);
    throw err;
  }
}

describe('upgrades at the size of a compute node', () => {
  let rig: Rig | null = null;
  const guests: Guest[] = [];
  afterEach(async () => {
    for (const g of guests.splice(0)) {
      g.fe.close();
      closeFds(g.fds);
    }
    await rig?.cleanup();
    rig = null;
  });

  it('hands over every port (fds in batches, far more than one message carries): committed, no port reconnects, nothing lost', { timeout: 120_000 }, async () => {
    const ports: Record<string, 'server'> = { a: 'server', b: 'server' };
    for (let i = 0; i < OTHERS; i++) ports[`p${i}`] = 'server';
    rig = await startRig({ rate: 1000, dp: { ports } });
    for (let i = 0; i < OTHERS; i++) guests.push(await guest(rig.dp.sock[`p${i}`]!));
    const before = await rig.dp.status();
    expect(before.ports.filter((p) => p.connected)).toHaveLength(256);

    const r = await rig.upgrade(['--dead-man-ms', '2000']);
    expect(r.exitCode, r.stderr).toBe(0);
    const rep = r.report as { result: string; switchover_us: number; phases: Record<string, number>; new: { pid: number }; total_ms: number };
    expect(rep.result).toBe('committed');
    // Figures only (targets are checked by scripts/bench-scaling, not here).
    console.log(`256 ports: switchover ${rep.switchover_us} us ${JSON.stringify((r.report as Record<string, unknown>)['switchover_parts'])}, transfer ${rep.phases['transfer']} ms, whole upgrade ${rep.total_ms} ms (2 cores, in CI's suite)`);

    const after = await rig.dp.status();
    expect(after.ports).toHaveLength(256);
    expect(after.ports.every((p) => p.connected && p.disconnects === 0)).toBe(true);
    expect(guests.every((g) => !g.fe.closed)).toBe(true);
    // Every guest still talks to whoever serves it now.
    for (const g of guests.slice(0, 8)) expect(await g.fe.call({ type: 'GET_FEATURES', needReply: false })).toBeGreaterThan(0n);
    // The old instance is gone; the new one holds what the old one held, no more (nothing leaked in the batches).
    expect(fdCount(rep.new.pid)).toBeLessThan(256 * 7 + 64);
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
  });

  it('hands over a 4 GiB guest in 8 sparse memory regions: committed, nothing of its holes allocated, nothing lost', { timeout: 60_000 }, async () => {
    rig = await startRig({ rate: 1000, dp: { ports: { a: 'server', b: 'server', big: 'server' } } });
    const fds: number[] = [];
    const HALF_GIB = 512n * MiB;
    try {
      const regions: MappedRegion[] = [];
      for (let i = 0n; i < 8n; i++) {
        const fd = check(native.memfdCreate('ziu-big-guest', 0), 'memfd_create');
        fds.push(fd);
        check(native.ftruncate(fd, Number(HALF_GIB)), 'ftruncate', { fd });
        regions.push({ guestPhysAddr: i * HALF_GIB, memorySize: HALF_GIB, userspaceAddr: UA + i * HALF_GIB, mmapOffset: 0n, fd });
      }
      const ev = (): number => {
        const fd = check(native.eventfd(0, false), 'eventfd');
        fds.push(fd);
        return fd;
      };
      const fe = await HostileFrontend.connect(rig.dp.sock['big']!);
      guests.push({ fe, fds: [] });
      await fe.negotiate();
      expect(await fe.setMemTable(regions)).toBe(0n);
      await fe.startRings([ev(), ev()], [ev(), ev()]);
      const r = await rig.upgrade();
      expect(r.exitCode, r.stderr).toBe(0);
      expect((r.report as { result: string }).result).toBe('committed');
      const port = (await rig.dp.status()).ports.find((p) => p.name === 'big')!;
      expect(port).toMatchObject({ connected: true, disconnects: 0, regions: 8 });
      // 4 GiB mapped by two instances in turn, and only the ring pages the datapaths touched exist.
      const allocated = fds.slice(0, 8).reduce((n, fd) => n + check(native.fstat(fd), 'fstat', { fd }).allocated, 0);
      expect(allocated).toBeLessThan(4 * 2 ** 20);
      expect(await fe.call({ type: 'GET_FEATURES', needReply: false })).toBeGreaterThan(0n);
      const probe = await rig.probe!.stop();
      expect(probe).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
    } finally {
      closeFds(fds);
    }
  });
});
