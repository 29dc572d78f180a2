import { afterEach, describe, expect, it } from 'vitest';
import { startIdle, type RunningIdle } from '../../src/probe/index.js';
import { startRig, type Rig } from '../helpers/upgrade.js';

type Ring = { q: number; packets: number; started: boolean; enabled: boolean };
type PortStatus = { name: string; disconnects: number; rings: Ring[] };

async function portRings(rig: Rig): Promise<{ pid: number; ports: PortStatus[] }> {
  const st = await rig.cli(['status', '--control', rig.dp.control, '--json']);
  expect(st.exitCode, st.stderr).toBe(0);
  return (JSON.parse(st.stdout) as { status: { pid: number; ports: PortStatus[] } }).status;
}

describe('ziu upgrade of ports with 4 queue pairs', () => {
  let rig: Rig | null = null;
  afterEach(async () => {
    await rig?.cleanup();
    rig = null;
  });

  for (const formats of [null, '1'] as const) {
    it(`hands every ring over${formats ? ` in state format ${formats}` : ''}: committed, 0 lost, no reconnect, every ring served by the new instance`, async () => {
      rig = await startRig({ rate: 4000, queues: 4, ...(formats ? { datapathArgs: ['--state-formats', formats] } : {}) });
      await new Promise((res) => setTimeout(res, 300));
      const r = await rig.upgrade(formats ? ['--new', rig.newCommand(`--state-formats ${formats}`)] : []);
      expect(r.exitCode, r.stderr).toBe(0);
      const rep = r.report as { result: string; new: { pid: number } };
      expect(rep.result).toBe('committed');

      // Every ring of both ports moves on the new instance (its counters start at 0 there).
      const first = await portRings(rig);
      expect(first.pid).toBe(rep.new.pid);
      await new Promise((res) => setTimeout(res, 500));
      const second = await portRings(rig);
      const moved = (port: string, q: number): number => {
        const at = (s: typeof first): number => s.ports.find((p) => p.name === port)!.rings[q]!.packets;
        return at(second) - at(first);
      };
      for (const p of second.ports) {
        expect(p.disconnects).toBe(0);
        expect(p.rings.map((x) => x.q)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
        expect(p.rings.every((x) => x.started && x.enabled)).toBe(true);
      }
      for (const q of [1, 3, 5, 7]) expect(moved('a', q), `a ring ${q}`).toBeGreaterThan(300);
      for (const q of [0, 2, 4, 6]) expect(moved('b', q), `b ring ${q}`).toBeGreaterThan(300);

      const probe = await rig.probe!.stop();
      expect(probe).toMatchObject({ lost: 0, duplicated: 0, notSent: 0, reconnects: 0 });
      expect(probe.queues).toMatchObject({ count: 4, reorderedInQueue: 0 });
      expect(probe.received).toBe(probe.sent);
    });
  }
});

describe('a handover of 64 ports with 4 queue pairs each', () => {
  let rig: Rig | null = null;
  let idle: RunningIdle | null = null;
  afterEach(async () => {
    idle?.stop();
    idle = null;
    await rig?.cleanup();
    rig = null;
  });

  // The probe's receivers never send, so their MACs are never learnt and every frame floods to every
  // port: 31 more measured pairs would bury 2 cores in copies. So one measured pair, and 62 guests with
  // 4 queue pairs up and quiet, as most of a node's VMs are at any instant.
  it('1 measured pair and 62 idle guests, 4 queue pairs each: committed, 0 lost, no reconnect, all 512 rings running on the new instance', { timeout: 120_000 }, async () => {
    const ports: Record<string, 'server'> = {};
    for (let i = 0; i < 62; i++) ports[`g${i}`] = 'server';
    rig = await startRig({ rate: 4000, queues: 4, dp: { ports: { a: 'server', b: 'server', ...ports } } });
    idle = await startIdle({ sockets: Object.keys(ports).map((n) => rig!.dp.sock[n]!), server: false, queues: 4 });
    expect(idle.stats()).toMatchObject({ ports: 62, connected: 62 });
    await new Promise((res) => setTimeout(res, 300));
    const r = await rig.upgrade();
    expect(r.exitCode, r.stderr).toBe(0);
    const rep = r.report as { result: string; new: { pid: number }; switchover_us: number; total_ms: number };
    expect(rep.result).toBe('committed');
    console.log(`64 ports x 4 queue pairs: switchover ${rep.switchover_us} us, whole upgrade ${rep.total_ms} ms (2 cores, in the suite)`);

    const first = await portRings(rig);
    expect(first.pid).toBe(rep.new.pid);
    await new Promise((res) => setTimeout(res, 500));
    const second = await portRings(rig);
    expect(second.ports).toHaveLength(64);
    for (const p of second.ports) {
      expect(p.disconnects, p.name).toBe(0);
      expect(p.rings.filter((x) => x.started && x.enabled).map((x) => x.q), p.name).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    }
    const at = (s: typeof first, port: string, q: number): number => s.ports.find((p) => p.name === port)!.rings[q]!.packets;
    for (const q of [1, 3, 5, 7]) expect(at(second, 'a', q) - at(first, 'a', q), `a ring ${q}`).toBeGreaterThan(200);
    for (const q of [0, 2, 4, 6]) expect(at(second, 'b', q) - at(first, 'b', q), `b ring ${q}`).toBeGreaterThan(200);
    expect(idle.stats()).toMatchObject({ connected: 62, reconnects: 0, disconnects: 0 });
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, duplicated: 0, notSent: 0, reconnects: 0 });
  });
});
