import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/index.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { dpCall, sleep, Sink, Source, startNic, type RunningNic, type Stream } from '../helpers/fakenic.js';


interface FlowRow {
  in: string;
  dport: number;
  state: string;
  reason: string | null;
  offloaded: { packets: number } | null;
}

async function flows(control: string): Promise<FlowRow[]> {
  return (await dpCall(control, { op: 'flow', action: 'list' }))['flows'] as FlowRow[];
}

/** Wait until no flow is pending (or deleting) any more. */
async function settled(control: string, ms = 5000): Promise<FlowRow[]> {
  const end = Date.now() + ms;
  for (;;) {
    const f = await flows(control);
    if (f.every((x) => x.state !== 'pending' && x.state !== 'deleting') || Date.now() > end) return f;
    await sleep(20);
  }
}

const VM0 = 0x020000000001;
const VM1 = 0x020000000002;
const stream = (id: number, dport: number): Stream => ({ id, src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport, srcMac: VM0, dstMac: VM1 });
const flowSpec = (dport: number) => ({ in: 'rep0', proto: 'udp', src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport, forward: 'rep1' });

describe('offload: the hook API with the fake module and the fake NIC', () => {
  let dir = '';
  let nic: RunningNic | null = null;
  let dp: RunningDatapath | null = null;
  const fds: number[] = [];
  const sinks: Sink[] = [];
  afterEach(async () => {
    for (const s of sinks.splice(0)) s.close();
    for (const fd of fds.splice(0)) native.close(fd);
    await dp?.stop().catch(() => undefined);
    await nic?.stop().catch(() => undefined);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dp = nic = null;
  });

  async function rig(o: { flows?: number } = {}): Promise<{ nic: RunningNic; dp: RunningDatapath; vm0: number; sink: Sink }> {
    dir = fs.mkdtempSync('/tmp/ziu-offload-');
    nic = await startNic(dir, { vfs: 2, ...(o.flows ? { flows: o.flows } : {}) });
    dp = await startDatapath({ ports: {}, extraArgs: ['--offload', `fake=${nic.control}`] });
    const vm0 = await nic.vm(0);
    const vm1 = await nic.vm(1);
    fds.push(vm0, vm1);
    const sink = new Sink(vm1);
    sinks.push(sink);
    return { nic, dp, vm0, sink };
  }

  /** Send n frames of each stream from VM0 and wait until they arrived (or 3 s). */
  async function send(vm0: number, sink: Sink, streams: Stream[], perStream: number): Promise<Source> {
    const src = new Source(vm0, streams, 2000);
    const end = Date.now() + 10_000;
    while ([...src.sent.values()].some((n) => n < perStream) && Date.now() < end) await sleep(5);
    src.stop();
    const until = Date.now() + 3000;
    while (streams.some((s) => sink.received(s.id) < src.sent.get(s.id)!) && Date.now() < until) await sleep(10);
    await sleep(300); // the module's counters are read every 100 ms
    return src;
  }

  it('registers fresh (one soft reset), offloads a flow the NIC then forwards by itself, and a flow it has no entry for goes through the host; counters merged', async () => {
    const r = await rig();
    const st = await r.dp.status();
    expect(st['offload']).toMatchObject({ module: 'fake', registration: 'registered', adopted: false, softResets: 1, error: null });
    expect(st.ports.map((p) => [p.name, p.kind])).toEqual([['rep0', 'representor'], ['rep1', 'representor']]);
    const set = await dpCall(r.dp.control, { op: 'flow', action: 'set', flow: flowSpec(2000) });
    expect(set['flow']).toMatchObject({ in: 'rep0', forward: 'rep1', dport: 2000 });
    expect((await settled(r.dp.control)).map((f) => f.state)).toEqual(['offloaded']);

    const src = await send(r.vm0, r.sink, [stream(1, 2000), stream(2, 3000)], 300);
    expect(src.notSent).toBe(0);
    // Every frame of both streams arrived once: the offloaded one through the NIC alone, the other through the host bridge.
    expect([r.sink.received(1), r.sink.received(2)]).toEqual([src.sent.get(1), src.sent.get(2)]);
    expect(r.sink.duplicates).toBe(0);
    const n = await r.nic.status();
    expect(n).toMatchObject({ claims: 1, adopts: 0, softResets: 1, flowSets: 1, ownerPid: r.dp.pid });
    expect(n.flows).toEqual([expect.objectContaining({ vf: 0, outVf: 1, dport: 2000, packets: src.sent.get(1) })]);
    expect(n.vfStats[0]).toMatchObject({ rxPackets: src.sent.get(1), missed: src.sent.get(2), lost: 0 });
    expect(n.vfStats[1]).toMatchObject({ txPackets: src.sent.get(1), fromHost: src.sent.get(2), lost: 0 });
    // The MAC the host bridge learnt on rep0 reached the NIC as a bridge entry.
    expect(n.bridge).toEqual([{ mac: '02:00:00:00:00:01', vf: 0 }]);

    const after = await r.dp.status();
    const rep0 = after.ports.find((p) => p.name === 'rep0') as unknown as { counters: { rxPackets: number }; host: { rxPackets: number }; offloaded: { rxPackets: number } };
    const rep1 = after.ports.find((p) => p.name === 'rep1') as unknown as { counters: { txPackets: number }; host: { txPackets: number } };
    expect(rep0.host.rxPackets).toBe(src.sent.get(2));
    expect(rep0.offloaded.rxPackets).toBe(src.sent.get(1));
    expect(rep0.counters.rxPackets).toBe(src.sent.get(1)! + src.sent.get(2)!);
    expect(rep1.counters.txPackets).toBe(src.sent.get(1)! + src.sent.get(2)!);
    expect((await flows(r.dp.control))[0]!.offloaded).toEqual({ packets: src.sent.get(1), bytes: src.sent.get(1)! * 64 });

    // Deleted: the NIC forgets it, its frames go through the host again.
    await dpCall(r.dp.control, { op: 'flow', action: 'del', flow: flowSpec(2000) });
    await settled(r.dp.control);
    expect(await flows(r.dp.control)).toEqual([]);
    expect((await r.nic.status()).flows).toEqual([]);
  });

  it('fail the next N calls: those flows stay on the host (EIO), the rest are offloaded, nothing is lost', async () => {
    const r = await rig();
    await r.nic.inject({ failNext: 2, ops: 4 });
    for (const d of [2001, 2002, 2003]) await dpCall(r.dp.control, { op: 'flow', action: 'set', flow: flowSpec(d) });
    const f = await settled(r.dp.control);
    expect(f.map((x) => [x.dport, x.state])).toEqual([[2001, 'host'], [2002, 'host'], [2003, 'offloaded']]);
    expect(f[0]!.reason).toMatch(/EIO/);
    const src = await send(r.vm0, r.sink, [stream(1, 2001), stream(2, 2002), stream(3, 2003)], 100);
    for (const id of [1, 2, 3]) expect(r.sink.received(id)).toBe(src.sent.get(id));
    const n = await r.nic.status();
    expect(n.injectedFailures).toBe(2);
    expect(n.flows.map((x) => x.dport)).toEqual([2003]);
    expect(n.vfStats[0]!.missed).toBe(src.sent.get(1)! + src.sent.get(2)!);
    const ops = ((await r.dp.status())['offload'] as { ops: { flow_set: { failed: number; ok: number; lastErrno: number } } }).ops;
    expect(ops.flow_set).toMatchObject({ failed: 2, ok: 1, lastErrno: 5 });
  });

  it('fail a fraction of calls: about that fraction stays on the host, every frame arrives', async () => {
    const r = await rig();
    await r.nic.inject({ failPpm: 500_000, ops: 4 });
    const ports = Array.from({ length: 40 }, (_, i) => 4000 + i);
    for (const d of ports) await dpCall(r.dp.control, { op: 'flow', action: 'set', flow: flowSpec(d) });
    const f = await settled(r.dp.control);
    const host = f.filter((x) => x.state === 'host').length;
    expect(host).toBeGreaterThan(5);
    expect(host).toBeLessThan(35);
    expect(f.filter((x) => x.state === 'offloaded').length).toBe(40 - host);
    expect((await r.nic.status()).injectedFailures).toBe(host);
    const streams = ports.map((d, i) => stream(i + 1, d));
    const src = await send(r.vm0, r.sink, streams, 10);
    for (const s of streams) expect(r.sink.received(s.id)).toBe(src.sent.get(s.id));
  });

  it('overflow at capacity: flows beyond the table stay on the host (ENOSPC) and are forwarded all the same', async () => {
    const r = await rig();
    await r.nic.inject({ capacity: 2 });
    for (const d of [2001, 2002, 2003, 2004]) await dpCall(r.dp.control, { op: 'flow', action: 'set', flow: flowSpec(d) });
    const f = await settled(r.dp.control);
    expect(f.map((x) => x.state)).toEqual(['offloaded', 'offloaded', 'host', 'host']);
    expect(f[2]!.reason).toMatch(/full \(ENOSPC\)/);
    const streams = [2001, 2002, 2003, 2004].map((d, i) => stream(i + 1, d));
    const src = await send(r.vm0, r.sink, streams, 50);
    for (const s of streams) expect(r.sink.received(s.id)).toBe(src.sent.get(s.id));
    expect((await r.nic.status()).flows.length).toBe(2);
    const ops = ((await r.dp.status())['offload'] as { ops: { flow_set: { nospace: number } } }).ops;
    expect(ops.flow_set.nospace).toBe(2);
  });

  it('slow callbacks never block the packet path nor the control plane: frames flow through the host meanwhile', async () => {
    const r = await rig();
    await r.nic.inject({ slowUs: 200_000 }); // 200 ms in every module call
    const t0 = performance.now();
    for (const d of [2001, 2002, 2003, 2004, 2005]) await dpCall(r.dp.control, { op: 'flow', action: 'set', flow: flowSpec(d) });
    const setMs = performance.now() - t0;
    expect(setMs).toBeLessThan(500); // 5 sets queued, not waited for (they take 1 s in the module)
    // While the module thread sleeps through them, frames of those very flows go through the host.
    const streams = [2001, 2002, 2003, 2004, 2005].map((d, i) => stream(i + 1, d));
    const src = new Source(r.vm0, streams, 1000);
    let slowestStatus = 0;
    for (let i = 0; i < 10; i++) {
      const t = performance.now();
      await r.dp.status();
      slowestStatus = Math.max(slowestStatus, performance.now() - t);
      await sleep(50);
    }
    src.stop();
    await sleep(300);
    for (const s of streams) expect(r.sink.received(s.id)).toBe(src.sent.get(s.id));
    expect(r.sink.maxGapMs).toBeLessThan(100);
    expect(slowestStatus).toBeLessThan(150);
    const f = await settled(r.dp.control, 5000);
    expect(f.map((x) => x.state)).toEqual(['offloaded', 'offloaded', 'offloaded', 'offloaded', 'offloaded']);
  });

  it('a flow_del the module fails is retried: the NIC forgets the flow', async () => {
    const r = await rig();
    await dpCall(r.dp.control, { op: 'flow', action: 'set', flow: flowSpec(2001) });
    await settled(r.dp.control);
    await r.nic.inject({ failNext: 1, ops: 8 });
    await dpCall(r.dp.control, { op: 'flow', action: 'del', flow: flowSpec(2001) });
    await settled(r.dp.control);
    expect(await flows(r.dp.control)).toEqual([]);
    expect((await r.nic.status())).toMatchObject({ flows: [], injectedFailures: 1, flowDels: 1 });
  });

  it('registration errors are reported and the host forwards everything: a NIC another live datapath owns (EBUSY)', async () => {
    const r = await rig();
    const second = await startDatapath({ ports: {}, extraArgs: ['--offload', `fake=${r.nic.control}`] });
    try {
      const deadline = Date.now() + 3000;
      let off: Record<string, unknown> = {};
      while (Date.now() < deadline) {
        off = (await second.status())['offload'] as Record<string, unknown>;
        if (off['registration'] !== 'standby' && off['registration'] !== 'registering') break;
        await sleep(20);
      }
      expect(off).toMatchObject({ registration: 'failed', error: expect.stringMatching(/another live datapath owns the NIC \(EBUSY\)/) });
      const set = await dpCall(second.control, { op: 'flow', action: 'set', flow: flowSpec(2001) });
      expect(set['flow']).toMatchObject({ state: 'host' });
      expect((await r.nic.status())).toMatchObject({ ownerPid: r.dp.pid, claims: 1, softResets: 1 });
    } finally {
      await second.stop();
    }
  });

  it('a NIC that cannot be reached stops the start with a clear error; flows without --offload are refused', async () => {
    dir = fs.mkdtempSync('/tmp/ziu-offload-');
    const log = `${dir}/dp.log`;
    await expect(startDatapath({ ports: {}, extraArgs: ['--offload', `fake=${dir}/none.sock`], logFile: log })).rejects.toThrow(/exited with code 1 before it was ready/);
    expect(fs.readFileSync(log, 'utf8')).toMatch(/ziu-datapath: --offload fake: cannot reach the NIC at .*none\.sock: ENOENT/);
    dp = await startDatapath({});
    expect((await dp.status())['offload']).toBeUndefined();
    await expect(dpCall(dp.control, { op: 'flow', action: 'list' })).rejects.toThrow(/runs without --offload/);
  });
});
