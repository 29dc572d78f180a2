import { afterEach, describe, expect, it } from 'vitest';
import { startProbe, type RunningProbe } from '../../src/probe/index.js';
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
  const probes: RunningProbe[] = [];
  afterEach(async () => {
    await Promise.all(probes.splice(0).map((p) => p.stop().catch(() => undefined)));
    await rig?.cleanup();
    rig = null;
  });

  // 32 measured pairs, traffic on every one: each receiver announces its MAC (RARP), so nothing floods.
  it('32 measured pairs, 4 queue pairs each: committed, 0 lost, no reconnect, all 512 rings running and every ring with traffic moving on the new instance', { timeout: 120_000 }, async () => {
    const PAIRS = 32;
    const ports: Record<string, 'server'> = {};
    for (let i = 0; i < PAIRS; i++) Object.assign(ports, { [`s${i}`]: 'server', [`r${i}`]: 'server' });
    rig = await startRig({ probe: false, dp: { ports } });
    for (let i = 0; i < PAIRS; i++) {
      probes.push(await startProbe({ tx: rig.dp.sock[`s${i}`]!, rx: rig.dp.sock[`r${i}`]!, rate: 250, size: 128, ringSize: 1024, queues: 4 }));
    }
    // Every receiver is learnt from its announcement: once it is, nothing a sender sends is flooded
    // (the first frames may be, as a VM's are before its peer has spoken).
    const floods = async (): Promise<number[]> => {
      const st = await rig!.dp.status();
      return Array.from({ length: PAIRS }, (_, i) => st.ports.find((p) => p.name === `s${i}`)!.counters!.floods ?? NaN);
    };
    await new Promise((res) => setTimeout(res, 300));
    const early = await floods();
    await new Promise((res) => setTimeout(res, 300));
    expect(await floods()).toEqual(early);
    const r = await rig.upgrade();
    expect(r.exitCode, r.stderr).toBe(0);
    const rep = r.report as { result: string; new: { pid: number }; switchover_us: number; total_ms: number };
    expect(rep.result).toBe('committed');
    console.log(`64 ports x 4 queue pairs, 32 measured pairs: switchover ${rep.switchover_us} us, whole upgrade ${rep.total_ms} ms (2 cores, in the suite)`);

    const first = await portRings(rig);
    expect(first.pid).toBe(rep.new.pid);
    await new Promise((res) => setTimeout(res, 1000));
    const second = await portRings(rig);
    expect(second.ports).toHaveLength(2 * PAIRS);
    for (const p of second.ports) {
      expect(p.disconnects, p.name).toBe(0);
      expect(p.rings.filter((x) => x.started && x.enabled).map((x) => x.q), p.name).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    }
    // Every ring that carries the stream moves on the new instance: each sender's 4 TX rings, each
    // receiver's 4 RX rings. (The senders' RX and the receivers' TX rings carry only the announcements.)
    const at = (s: typeof first, port: string, q: number): number => s.ports.find((p) => p.name === port)!.rings[q]!.packets;
    for (let i = 0; i < PAIRS; i++) {
      for (const q of [1, 3, 5, 7]) expect(at(second, `s${i}`, q) - at(first, `s${i}`, q), `s${i} ring ${q}`).toBeGreaterThan(0);
      for (const q of [0, 2, 4, 6]) expect(at(second, `r${i}`, q) - at(first, `r${i}`, q), `r${i} ring ${q}`).toBeGreaterThan(0);
    }
    const reports = await Promise.all(probes.splice(0).map((p) => p.stop()));
    for (const [i, p] of reports.entries()) {
      expect(p, `pair ${i}`).toMatchObject({ lost: 0, duplicated: 0, notSent: 0, reconnects: 0 });
      expect(p.received, `pair ${i}`).toBe(p.sent);
    }
    console.log(`32 pairs: ${reports.reduce((n, p) => n + p.received, 0)} frames received, 0 lost`);
  });
});
