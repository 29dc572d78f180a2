// What a new instance faults in of a guest's memory when it takes a port
// over (native/dp_mem.c, dp_prefault_port): the pages its worker touches
// first, the rings and the buffers their descriptors name, and nothing else.
// A guest whose file holds every page of 256 MiB shows the difference: the
// datapath used to fault all of it in at import (0.4 s a GiB here, and up to
// 1 GiB a port), and a takeover with nothing faulted in pays for every page
// on the packet path.
import { afterEach, describe, expect, it } from 'vitest';
import { check, native } from '../../src/native/index.js';
import { GuestPort, udpFrame } from '../helpers/guest-port.js';
import { startRig, type Rig } from '../helpers/upgrade.js';
import { guestMappings, mappedPages } from '../helpers/proc-maps.js';
import { until } from '../helpers/until.js';

const MiB = 1 << 20;
const MAC = { a: '52:54:00:00:0a:01', b: '52:54:00:00:0b:01' };

const frame = (dst: string, src: string, seq: number): Uint8Array => udpFrame({ dst, src, srcIp: '10.0.0.1', dstIp: '10.0.0.2', sport: 1000, dport: 2000, size: 128, seq });

describe('what a new instance faults in of a guest it takes over', () => {
  let rig: Rig | null = null;
  const guests: GuestPort[] = [];
  afterEach(async () => {
    for (const g of guests.splice(0)) g.close();
    await rig?.cleanup();
    rig = null;
  });

  /** A datapath with a 256 MiB guest on a and a small one on b, no probe. */
  async function twoGuests(): Promise<{ a: GuestPort; b: GuestPort }> {
    rig = await startRig({ probe: false, dp: { ports: { a: 'server', b: 'server' } } });
    const a = await GuestPort.connect(rig.dp.sock['a']!, MAC.a, { regionSize: 256 * MiB });
    guests.push(a);
    const b = await GuestPort.connect(rig.dp.sock['b']!, MAC.b);
    guests.push(b);
    return { a, b };
  }

  it('the rings and the buffers their descriptors name, all of them, and not the rest of a 256 MiB guest whose file holds every page', { timeout: 60_000 }, async () => {
    const { a, b } = await twoGuests();
    // a's file holds every page, as a guest's does once it has written all its memory.
    a.guest.writeEveryPage();
    expect(check(native.fstat(a.guest.memFd), 'fstat').allocated).toBeGreaterThanOrEqual(256 * MiB);
    // b speaks once (a gets it: an RX buffer used), then a sends 64 frames to b: both of a's rings name buffers.
    b.send([frame(MAC.a, MAC.b, 0)]);
    await until(() => a.received().length === 1, 'a to receive from b');
    for (let i = 0; i < 64; i++) a.send([frame(MAC.b, MAC.a, i)]);
    await until(() => b.received().length === 64, 'b to receive 64 frames');
    a.guest.reclaimTx();
    // What the new worker will touch first, as region offsets: a's rings, its 128 posted RX buffers, the TX buffers its descriptors last named.
    const workingSet = ([0, 1] as const).flatMap((q) => [...a.guest.ringOffsets(q), ...a.guest.descriptors(q)]);
    expect(workingSet.length).toBeGreaterThan(6 + 128);

    const r = await rig!.upgrade();
    expect(r.exitCode, r.stderr).toBe(0);
    const rep = r.report as { result: string; new: { pid: number }; phases: Record<string, number> };
    expect(rep.result).toBe('committed');
    const pid = rep.new.pid;
    const big = guestMappings(pid).find((m) => m.end - m.start >= BigInt(256 * MiB));
    expect(big, `the new instance (pid ${pid}) maps a's memory`).toBeDefined();
    console.log(`256 MiB guest, every page in its file: the new instance has ${(big!.rss / MiB).toFixed(2)} MiB of it mapped in; transfer ${rep.phases['transfer']} ms (2 cores)`);
    // Not the guest: its working set (about 1 MiB here), where faulting in what the file holds mapped all 256 MiB.
    expect(big!.rss).toBeLessThan(8 * MiB);
    // All of the working set: every page of it is mapped in the new instance before a frame has gone through it.
    const host = (regionOff: number): bigint => big!.start + BigInt(a.guest.guard + regionOff) - big!.offset;
    const missing = workingSet.filter(({ off, len }) => !mappedPages(pid, host(off), len).every(Boolean));
    expect(missing, 'working-set ranges (region offset, length) the new instance did not fault in').toEqual([]);

    // And the new instance serves a and b.
    for (let i = 64; i < 96; i++) a.send([frame(MAC.b, MAC.a, i)]);
    await until(() => b.received().length === 96, 'b to receive 32 more frames from the new instance');
  });

  it('a guest whose descriptors name holes, huge lengths and memory outside its regions: no hole allocated, nothing else touched, the port still served', { timeout: 60_000 }, async () => {
    // a's 256 MiB file is sparse: it holds the pages of its rings and nothing else; its 128 posted RX buffers are holes.
    const { a, b } = await twoGuests();
    const g = a.guest;
    const W = 1 << 16; // a write flag's worth of RX buffers, each at most this long
    g.pushChain(0, [{ addr: g.gpaAt(128 * MiB), len: 0xffff_ffff, write: true }]); // 4 GiB into a hole
    g.pushChain(0, [{ addr: g.gpaAt(64 * MiB), len: W, write: true }]); // 64 KiB of hole
    g.pushChain(0, [{ addr: g.regionEnd() - 100n, len: 4096, write: true }]); // across the region's end
    g.pushChain(0, [{ addr: 0n, len: 4096, write: true }]); // below the region
    g.pushChain(0, [{ addr: g.gpaAt(32 * MiB), len: 16 * 256, flags: 4 /* INDIRECT */ }]); // a table in a hole
    const allocated = (): number => check(native.fstat(g.memFd), 'fstat', { fd: g.memFd }).allocated;
    const before = allocated();
    expect(before).toBeLessThan(2 * MiB);

    const r = await rig!.upgrade();
    expect(r.exitCode, r.stderr).toBe(0);
    const rep = r.report as { result: string; new: { pid: number } };
    expect(rep.result).toBe('committed');
    // No hole of a's file allocated: at most its rings' pages (the datapath writes the used rings), where faulting
    // in what the descriptors name would have taken 64 pages of RX buffers, 16 of the 64 KiB and 16 of the 4 GiB.
    const ringPages = new Set(([0, 1] as const).flatMap((q) => g.ringOffsets(q).flatMap(({ off, len }) => [Math.floor(off / 4096), Math.floor((off + len - 1) / 4096)])));
    expect(allocated() - before).toBeLessThanOrEqual(ringPages.size * 4096);
    const big = guestMappings(rep.new.pid).find((m) => m.end - m.start >= BigInt(256 * MiB))!;
    expect(big.rss).toBeLessThanOrEqual(allocated());
    // The port is served: a sends to b through the new instance.
    for (let i = 0; i < 16; i++) a.send([frame(MAC.b, MAC.a, i)]);
    await until(() => b.received().length === 16, 'b to receive 16 frames from the new instance');
  });
});
