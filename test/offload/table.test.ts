import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/index.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { dpCall, sleep, Sink, Source, startNic, type RunningNic, type Stream } from '../helpers/fakenic.js';
import { ziu } from '../cli/helpers.js';
import { startRig, type Rig } from '../helpers/upgrade.js';

/**
 * The engine's flow table and the offload hooks (docs/offload.md, "The flow
 * table and the module"): a flow learnt from traffic between representors
 * goes to the NIC; ageing counts the frames the NIC forwarded; the flow op's
 * flows are pinned in the table, which enforces them (drop flows too) when
 * the NIC refuses them; and a new instance reconciles the NIC with the table
 * it adopted.
 */

interface FlowRow {
  dport: number;
  state: string;
  drop?: boolean;
  forward: string | null;
  reason: string | null;
}

async function settled(control: string, ms = 5000): Promise<FlowRow[]> {
  const end = Date.now() + ms;
  for (;;) {
    const f = (await dpCall(control, { op: 'flow', action: 'list' }))['flows'] as FlowRow[];
    if (f.every((x) => x.state !== 'pending' && x.state !== 'deleting') || Date.now() > end) return f;
    await sleep(20);
  }
}

interface ShownFlow {
  in_port: string;
  src: string;
  dst: string;
  action: string;
  pinned: boolean;
  packets: number;
}

async function tableFlows(control: string): Promise<ShownFlow[]> {
  const r = await ziu(['tables', 'show', '--datapath', control, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { flows: { list: ShownFlow[] } }).flows.list;
}

async function flowStats(dp: { status(): Promise<Record<string, unknown>> }): Promise<{ aged: number; pinDrops: number; keptByOffload: number }> {
  return ((await dp.status())['tables'] as { flow: { aged: number; pinDrops: number; keptByOffload: number } }).flow;
}

const VM0 = 0x020000000001;
const VM1 = 0x020000000002;
const to1 = (id: number, dport: number): Stream => ({ id, src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport, srcMac: VM0, dstMac: VM1 });
// VM1 says who it is (a frame to VM0, flooded: VM0 is not known yet), so frames to it are known unicast and make flows.
const HELLO: Stream = { id: 99, src: '10.0.0.2', dst: '10.0.0.1', sport: 7, dport: 7, srcMac: VM1, dstMac: VM0 };
const flow = (dport: number, action: { forward: string } | { drop: true }) => ({ in: 'rep0', proto: 'udp', src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport, ...action });

async function until(what: string, ok: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('offload and the flow table', () => {
  let dir = '';
  let nic: RunningNic | null = null;
  let dp: RunningDatapath | null = null;
  let rig: Rig | null = null;
  const fds: number[] = [];
  const sinks: Sink[] = [];
  const sources: Source[] = [];
  afterEach(async () => {
    for (const s of sources.splice(0)) s.stop();
    for (const s of sinks.splice(0)) s.close();
    for (const fd of fds.splice(0)) native.close(fd);
    await dp?.stop().catch(() => undefined);
    await rig?.cleanup();
    await nic?.stop().catch(() => undefined);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dp = nic = rig = null;
  });

  async function vms(n: RunningNic): Promise<{ vm0: number; vm1: number; sink0: Sink; sink1: Sink }> {
    const vm0 = await n.vm(0);
    const vm1 = await n.vm(1);
    fds.push(vm0, vm1);
    const sink0 = new Sink(vm0);
    const sink1 = new Sink(vm1);
    sinks.push(sink0, sink1);
    const hello = new Source(vm1, [HELLO], 200);
    await until('VM1 to be heard', async () => sink0.received(HELLO.id) > 0, 3000);
    hello.stop();
    return { vm0, vm1, sink0, sink1 };
  }

  async function drain(sink: Sink, src: Source, ids: number[]): Promise<void> {
    src.stop();
    const end = Date.now() + 3000;
    while (ids.some((id) => sink.received(id) < src.sent.get(id)!) && Date.now() < end) await sleep(10);
    await sleep(300);
  }

  it('a flow learnt from traffic goes to the NIC; ageing counts what the NIC forwards; once idle it leaves the table and the NIC', { timeout: 60_000 }, async () => {
    dir = fs.mkdtempSync('/tmp/ziu-offload-table-');
    nic = await startNic(dir, { vfs: 2 });
    dp = await startDatapath({ ports: {}, extraArgs: ['--offload', `fake=${nic.control}`, '--flow-idle', '2'] });
    const v = await vms(nic);

    // No flow op: the first frame makes the flow (through the host), the NIC takes the rest.
    const src = new Source(v.vm0, [to1(1, 4000)], 500);
    sources.push(src);
    await until('the learnt flow in the NIC', async () => (await nic!.status()).flows.some((f) => f.dport === 4000 && f.packets > 0));
    // Longer than --flow-idle while the host sees none of its frames: the NIC's counters keep it.
    await sleep(4000);
    const rows = await tableFlows(dp.control);
    const learnt = rows.find((f) => f.in_port === 'rep0' && f.src === '10.0.0.1:1000' && f.dst === '10.0.0.2:4000');
    expect(learnt, JSON.stringify(rows)).toMatchObject({ action: 'forward', pinned: false });
    expect((await flowStats(dp)).keptByOffload).toBeGreaterThan(0);
    await drain(v.sink1, src, [1]);
    expect(src.notSent).toBe(0);
    expect(v.sink1.received(1)).toBe(src.sent.get(1));
    expect(v.sink1.duplicates).toBe(0);
    const n = await nic.status();
    const hw = n.flows.find((f) => f.dport === 4000)!;
    expect(hw).toMatchObject({ vf: 0, outVf: 1 });
    // Every frame once: the host's few (before the NIC had the flow) and the NIC's.
    expect(hw.packets + learnt!.packets).toBe(src.sent.get(1));
    expect(learnt!.packets).toBeLessThan(src.sent.get(1)! / 2);
    // The flow op lists the op's flows only; nothing was set by hand.
    expect(await settled(dp.control)).toEqual([]);

    // Idle now on both paths: gone from the table, and the module was told (flow_del).
    await until('the idle flow to age out of the table and the NIC', async () => (await nic!.status()).flows.length === 0, 15_000);
    expect((await tableFlows(dp.control)).some((f) => f.dst === '10.0.0.2:4000')).toBe(false);
    expect((await nic.status()).flowDels).toBeGreaterThanOrEqual(1);
    expect((await flowStats(dp)).aged).toBeGreaterThanOrEqual(1);
  });

  it('a drop flow: the NIC drops it, and when the NIC refuses it the host flow table drops it; deleted, its frames go through again', { timeout: 60_000 }, async () => {
    dir = fs.mkdtempSync('/tmp/ziu-offload-table-');
    nic = await startNic(dir, { vfs: 2 });
    dp = await startDatapath({ ports: {}, extraArgs: ['--offload', `fake=${nic.control}`] });
    const v = await vms(nic);
    await dpCall(dp.control, { op: 'flow', action: 'set', flow: flow(5000, { drop: true }) });
    await nic.inject({ failNext: 1, ops: 4 });
    await dpCall(dp.control, { op: 'flow', action: 'set', flow: flow(5001, { drop: true }) });
    await dpCall(dp.control, { op: 'flow', action: 'set', flow: flow(5002, { forward: 'rep1' }) });
    const f = await settled(dp.control);
    expect(f.map((x) => [x.dport, x.state, x.drop ?? false, x.forward])).toEqual([
      [5000, 'offloaded', true, null],
      [5001, 'host', true, null],
      [5002, 'offloaded', false, 'rep1'],
    ]);
    expect(f[1]!.reason).toMatch(/EIO/);
    expect((await tableFlows(dp.control)).filter((x) => x.pinned).map((x) => `${x.dst} ${x.action}`).sort()).toEqual(['10.0.0.2:5000 drop', '10.0.0.2:5001 drop', '10.0.0.2:5002 forward']);

    const src = new Source(v.vm0, [to1(1, 5000), to1(2, 5001), to1(3, 5002)], 900);
    sources.push(src);
    await until('100 frames of each', async () => [1, 2, 3].every((id) => src.sent.get(id)! >= 100));
    await drain(v.sink1, src, [3]);
    expect([v.sink1.received(1), v.sink1.received(2), v.sink1.received(3)]).toEqual([0, 0, src.sent.get(3)]);
    await sleep(200);
    const n = await nic.status();
    expect(n.flows.find((x) => x.dport === 5000)!.packets).toBe(src.sent.get(1)); // dropped by the NIC
    expect(n.vfStats[0]!.missed).toBe(src.sent.get(2)); // up the representor: the host dropped them
    expect((await flowStats(dp)).pinDrops).toBe(src.sent.get(2));

    // Deleted: no longer enforced on the host, its frames reach VM1.
    await dpCall(dp.control, { op: 'flow', action: 'del', flow: flow(5001, { drop: true }) });
    expect((await settled(dp.control)).map((x) => x.dport)).toEqual([5000, 5002]);
    const again = new Source(v.vm0, [to1(4, 5001)], 500);
    sources.push(again);
    await until('50 frames', async () => again.sent.get(4)! >= 50);
    await drain(v.sink1, again, [4]);
    expect(v.sink1.received(4)).toBe(again.sent.get(4));
    // A drop flow without a port to name is refused with the reason.
    const bad = await dpCall(dp.control, { op: 'flow', action: 'set', flow: { ...flow(5003, { drop: true }), forward: 'rep1' } }).catch((e: Error) => e);
    expect(String(bad)).toMatch(/give forward or drop, not both/);
  });

  it('an upgrade: the new instance reconciles the NIC with the flow table it adopted (learnt and pinned flows kept, nothing set again), 0 lost', { timeout: 90_000 }, async () => {
    dir = fs.mkdtempSync('/tmp/ziu-offload-table-up-');
    nic = await startNic(dir, { vfs: 2 });
    rig = await startRig({ probe: false, dp: { ports: {}, extraArgs: ['--offload', `fake=${nic.control}`] } });
    const v = await vms(nic);
    await dpCall(rig.dp.control, { op: 'flow', action: 'set', flow: flow(5000, { drop: true }) });
    expect((await settled(rig.dp.control)).map((x) => x.state)).toEqual(['offloaded']);
    const src = new Source(v.vm0, [to1(1, 4000), to1(2, 5000)], 1000);
    sources.push(src);
    await until('the learnt flow in the NIC', async () => (await nic!.status()).flows.some((f) => f.dport === 4000 && f.packets > 0));
    const before = await nic.status();
    expect(before.flowSets).toBe(2);

    const r = await rig.upgrade(['--new', rig.newCommand(`--offload fake=${nic.control}`)]);
    expect(r.exitCode, r.stderr).toBe(0);
    await sleep(300);
    await drain(v.sink1, src, [1]);
    const rep = r.report as { result: string; new: { pid: number }; offload: Record<string, unknown> };
    expect(rep.result).toBe('committed');
    expect(rep.offload).toMatchObject({ adopted: true, soft_resets: 0, reconcile: { rc: 0, kept: 2, added: 0, updated: 0, removed: 0, failed: 0 } });
    const n = await nic.status();
    expect(n).toMatchObject({ flowSets: 2, flowDels: 0, adopts: 1, ownerPid: rep.new.pid });
    expect(v.sink1.received(1)).toBe(src.sent.get(1));
    expect(v.sink1.received(2)).toBe(0);
    expect(v.sink1.duplicates).toBe(0);
    // The pinned flow is the new instance's now, from the table: listed, and deleted through it.
    const f = await settled(rig.dp.control);
    expect(f.map((x) => [x.dport, x.state, x.drop ?? false])).toEqual([[5000, 'offloaded', true]]);
    await dpCall(rig.dp.control, { op: 'flow', action: 'del', flow: flow(5000, { drop: true }) });
    await until('the drop flow to leave the NIC', async () => !(await nic!.status()).flows.some((x) => x.dport === 5000));
    expect((await tableFlows(rig.dp.control)).some((x) => x.pinned)).toBe(false);
  });
});
