import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/index.js';
import { dpCall, sleep, Sink, Source, startNic, type RunningNic, type Stream } from '../helpers/fakenic.js';
import { startRig, type Rig } from '../helpers/upgrade.js';


interface FlowRow {
  dport: number;
  state: string;
  offloaded: { packets: number } | null;
}

async function settledFlows(control: string): Promise<FlowRow[]> {
  const end = Date.now() + 5000;
  for (;;) {
    const f = (await dpCall(control, { op: 'flow', action: 'list' }))['flows'] as FlowRow[];
    if (f.every((x) => x.state !== 'pending') || Date.now() > end) return f;
    await sleep(20);
  }
}

const VM0 = 0x020000000001;
const VM1 = 0x020000000002;
// 1 and 2: offloaded both ways; 3: no flow, so through the host (the NIC passes it up rep0).
const S1: Stream = { id: 1, src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 2000, srcMac: VM0, dstMac: VM1 };
const S2: Stream = { id: 2, src: '10.0.0.2', dst: '10.0.0.1', sport: 2000, dport: 1000, srcMac: VM1, dstMac: VM0 };
const S3: Stream = { id: 3, src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 3000, srcMac: VM0, dstMac: VM1 };
const F1 = { in: 'rep0', proto: 'udp', src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 2000, forward: 'rep1' };
const F2 = { in: 'rep1', proto: 'udp', src: '10.0.0.2', dst: '10.0.0.1', sport: 2000, dport: 1000, forward: 'rep0' };

describe('offload across an upgrade: the NIC keeps forwarding through the freeze', () => {
  let rig: Rig | null = null;
  let nic: RunningNic | null = null;
  let dir = '';
  const fds: number[] = [];
  const sinks: Sink[] = [];
  const sources: Source[] = [];
  afterEach(async () => {
    for (const s of sources.splice(0)) s.stop();
    for (const s of sinks.splice(0)) s.close();
    for (const fd of fds.splice(0)) native.close(fd);
    await rig?.cleanup();
    await nic?.stop().catch(() => undefined);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    rig = nic = null;
  });

  /** A datapath with the fake module, two offloaded flows (one each way) and a host-path stream, at 1000 frames/s per VM. */
  async function start(): Promise<{ rig: Rig; nic: RunningNic; sink0: Sink; sink1: Sink; src0: Source; src1: Source }> {
    dir = fs.mkdtempSync('/tmp/ziu-offload-up-');
    nic = await startNic(dir, { vfs: 2 });
    rig = await startRig({ probe: false, dp: { ports: {}, extraArgs: ['--offload', `fake=${nic.control}`] } });
    for (const f of [F1, F2]) await dpCall(rig.dp.control, { op: 'flow', action: 'set', flow: f });
    expect((await settledFlows(rig.dp.control)).map((f) => f.state)).toEqual(['offloaded', 'offloaded']);
    const vm0 = await nic.vm(0);
    const vm1 = await nic.vm(1);
    fds.push(vm0, vm1);
    const sink0 = new Sink(vm0);
    const sink1 = new Sink(vm1);
    sinks.push(sink0, sink1);
    const src0 = new Source(vm0, [S1, S3], 1000);
    const src1 = new Source(vm1, [S2], 1000);
    sources.push(src0, src1);
    await sleep(300);
    return { rig, nic, sink0, sink1, src0, src1 };
  }

  async function stopTraffic(t: { sink0: Sink; sink1: Sink; src0: Source; src1: Source }): Promise<void> {
    t.src0.stop();
    t.src1.stop();
    const end = Date.now() + 3000;
    while ((t.sink1.received(1) < t.src0.sent.get(1)! || t.sink1.received(3) < t.src0.sent.get(3)! || t.sink0.received(2) < t.src1.sent.get(2)!) && Date.now() < end) await sleep(10);
    await sleep(300);
  }

  it('the new instance adopts the NIC without a soft reset: no duplicate, no re-set, 0 lost on the offloaded flows, counters go on', async () => {
    const t = await start();
    const oldPid = t.rig.dp.pid;
    const r = await t.rig.upgrade(['--new', t.rig.newCommand(`--offload fake=${t.nic.control}`)]);
    expect(r.exitCode, r.stderr).toBe(0);
    await sleep(300);
    await stopTraffic(t);
    const rep = r.report as { result: string; new: { pid: number }; offload: Record<string, unknown>; ports: Array<{ name: string; moving: boolean }> };
    expect(rep.result).toBe('committed');
    expect(rep.ports.map((p) => [p.name, p.moving])).toEqual([['rep0', true], ['rep1', true]]);
    expect(rep.offload).toEqual({ module: 'fake', registration: 'registered', adopted: true, soft_resets: 0, error: null, reconcile: { rc: 0, kept: 2, added: 0, updated: 0, removed: 0, failed: 0, unmapped: 0 } });

    // Zero loss, no duplicate, on every stream: the offloaded ones never left the NIC; the host one waited in rep0's socket.
    for (const [sink, src, id] of [[t.sink1, t.src0, 1], [t.sink0, t.src1, 2], [t.sink1, t.src0, 3]] as const) {
      expect(src.notSent).toBe(0);
      expect(sink.received(id), `stream ${id}`).toBe(src.sent.get(id));
    }
    expect(t.sink0.duplicates + t.sink1.duplicates).toBe(0);

    const n = await t.nic.status();
    // One claim and one soft reset: the old instance's, at its start. The new one adopted: nothing wiped, nothing set again.
    expect(n).toMatchObject({ claims: 1, adopts: 1, softResets: 1, flowSets: 2, flowDels: 0, ownerPid: rep.new.pid });
    expect(n.ownerPid).not.toBe(oldPid);
    expect(n.flows.map((f) => [f.vf, f.dport, f.packets])).toEqual([[0, 2000, t.src0.sent.get(1)], [1, 1000, t.src1.sent.get(2)]]);
    expect(n.vfStats.map((v) => v.lost)).toEqual([0, 0]);

    // The new instance's own view: both flows offloaded, their counters the NIC's (from the old instance's time on).
    const flows = await settledFlows(t.rig.dp.control);
    expect(flows.map((f) => [f.dport, f.state, f.offloaded?.packets])).toEqual([[2000, 'offloaded', t.src0.sent.get(1)], [1000, 'offloaded', t.src1.sent.get(2)]]);
    const st = await dpCall(t.rig.dp.control, { op: 'status' });
    const s = st['status'] as { pid: number; offload: Record<string, unknown>; ports: Array<{ name: string; counters: { rxPackets: number; txPackets: number } }> };
    expect(s.pid).toBe(rep.new.pid);
    expect(s.offload).toMatchObject({ registration: 'registered', adopted: true, softResets: 0 });
    // rep0's rx: everything VM0 sent (the NIC's share since the start, plus the host's share since this instance started).
    expect(s.ports.find((p) => p.name === 'rep0')!.counters.rxPackets).toBeGreaterThanOrEqual(t.src0.sent.get(1)!);
    // And it programs the NIC now: a new flow goes to the hardware.
    await dpCall(t.rig.dp.control, { op: 'flow', action: 'set', flow: { ...F1, dport: 3000 } });
    expect((await settledFlows(t.rig.dp.control)).map((f) => f.state)).toEqual(['offloaded', 'offloaded', 'offloaded']);
    expect((await t.nic.status()).flows.length).toBe(3);
  });

  it('a rollback (the commit fails) leaves the old instance owning the NIC: nothing adopted, wiped or duplicated, 0 lost', async () => {
    const t = await start();
    const oldPid = t.rig.dp.pid;
    const r = await t.rig.upgrade(['--new', t.rig.newCommand(`--offload fake=${t.nic.control}`)], { ZIU_FAULT: 'commit-fail' });
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.report).toMatchObject({ result: 'rolled_back', rollback: { phase: 'commit' } });
    await sleep(300);
    await stopTraffic(t);
    for (const [sink, src, id] of [[t.sink1, t.src0, 1], [t.sink0, t.src1, 2], [t.sink1, t.src0, 3]] as const) expect(sink.received(id), `stream ${id}`).toBe(src.sent.get(id));
    const n = await t.nic.status();
    expect(n).toMatchObject({ claims: 1, adopts: 0, softResets: 1, flowSets: 2, ownerPid: oldPid });
    expect(n.flows.length).toBe(2);
    const st = (await dpCall(t.rig.dp.control, { op: 'status' }))['status'] as { pid: number; offload: Record<string, unknown> };
    expect(st.pid).toBe(oldPid);
    expect(st.offload).toMatchObject({ registration: 'registered', adopted: false, softResets: 1 });
    // Still the one that programs it.
    await dpCall(t.rig.dp.control, { op: 'flow', action: 'set', flow: { ...F1, dport: 3000 } });
    expect((await settledFlows(t.rig.dp.control)).map((f) => f.state)).toEqual(['offloaded', 'offloaded', 'offloaded']);
  });
});
