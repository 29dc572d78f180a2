/**
 * ziu-datapath's bridge and flow tables in files of their own (docs/tables.md):
 * `ziu tables show|age` read them as an agent would, the datapath ages flows
 * by its own rule and by the agent's marks, a restart keeps what was
 * learned, and a table file another user could write, or one full of
 * garbage, never takes the datapath down.
 */
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { check, native } from '../../src/native/index.js';
import { ziu } from '../cli/helpers.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { GuestPort, udpFrame } from '../helpers/guest-port.js';

const MAC = { a: '02:00:00:00:01:0a', b: '02:00:00:00:01:0b', c: '02:00:00:00:01:0c' };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !(await cond()); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

interface ShownFlow {
  in_port: string;
  out_port: string | null;
  src: string;
  dst: string;
  action: string;
  packets: number;
  marked: boolean;
}

describe('tables in files of their own', () => {
  let dir: string | null = null;
  const dps: RunningDatapath[] = [];
  const guests: GuestPort[] = [];
  afterEach(async () => {
    for (const g of guests.splice(0)) g.close();
    for (const d of dps.splice(0)) await d.stop().catch(() => undefined);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = null;
  });

  /** Empty table files (as `ziu memfile create` leaves them) in a directory of our own. */
  async function tableFiles(): Promise<{ bridge: string; flow: string; args: string[] }> {
    dir = fs.mkdtempSync('/dev/shm/ziu-tables-');
    const bridge = path.join(dir, 'bridge');
    const flow = path.join(dir, 'flow');
    for (const [f, size] of [
      [bridge, '1M'],
      [flow, '2M'],
    ] as const) {
      fs.writeFileSync(f, '', { mode: 0o600 });
      await execa('fallocate', ['-l', size, f]);
    }
    return { bridge, flow, args: ['--bridge-table', bridge, '--flow-table', flow] };
  }

  async function guestsOn(dp: RunningDatapath): Promise<{ a: GuestPort; b: GuestPort; c: GuestPort }> {
    const [a, b, c] = [await GuestPort.connect(dp.sock['a']!, MAC.a), await GuestPort.connect(dp.sock['b']!, MAC.b), await GuestPort.connect(dp.sock['c']!, MAC.c)];
    guests.push(a, b, c);
    b.send([udpFrame({ dst: 'ff:ff:ff:ff:ff:ff', src: MAC.b, srcIp: '10.1.0.2', dstIp: '10.1.0.255', sport: 9, dport: 9, size: 64 })]);
    await until(() => c.received().length === 1, 'b announced');
    return { a, b, c };
  }

  const udp = (from: string, to: string, sport: number, n: number): Uint8Array[] =>
    Array.from({ length: n }, () => udpFrame({ dst: to === 'a' ? MAC.a : MAC.b, src: from === 'a' ? MAC.a : MAC.b, srcIp: from === 'a' ? '10.1.0.1' : '10.1.0.2', dstIp: to === 'a' ? '10.1.0.1' : '10.1.0.2', sport, dport: 53, size: 100 }));

  async function show(dp: RunningDatapath): Promise<{ bridge: { macs: Array<{ mac: string; port: string }> }; flows: { list: ShownFlow[]; format: number; idle_s: number } }> {
    const r = await ziu(['tables', 'show', '--datapath', dp.control, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  }

  it('show lists MACs and flows with port names and counters; age marks idle flows and the datapath removes those that stay idle; the idle rule ages the rest', { timeout: 60_000 }, async () => {
    const t = await tableFiles();
    const dp = await startDatapath({ ports: { a: 'server', b: 'server', c: 'server' }, extraArgs: [...t.args, '--flow-idle', '6'] });
    dps.push(dp);
    const { a, b, c } = await guestsOn(dp);
    a.send(udp('a', 'b', 1000, 5));
    a.send(udp('a', 'b', 1001, 3));
    await until(() => b.received().length === 8, 'b to get 8');
    b.send(udp('b', 'a', 53, 2));
    await until(() => a.received().length === 3, "a to get b's announcement and 2");
    expect(c.received().length).toBe(1);

    const s = await show(dp);
    expect(s.bridge.macs.map((m) => `${m.mac} ${m.port}`).sort()).toEqual([`${MAC.a} a`, `${MAC.b} b`]);
    const byKey = (l: ShownFlow[]): Record<string, ShownFlow> => Object.fromEntries(l.map((f) => [`${f.in_port} ${f.src}`, f]));
    expect(byKey(s.flows.list)).toMatchObject({
      'a 10.1.0.1:1000': { out_port: 'b', action: 'forward', dst: '10.1.0.2:53', packets: 5 },
      'a 10.1.0.1:1001': { out_port: 'b', packets: 3 },
      'b 10.1.0.2:53': { out_port: 'a', dst: '10.1.0.1:53', packets: 2 },
    });
    expect(s.flows).toMatchObject({ format: 2, idle_s: 6 });
    const human = await ziu(['tables', 'show', '--datapath', dp.control]);
    expect(human.stdout).toMatch(/bridge table format 1, 2 of \d+ MACs; flow table format 2, 3 of \d+ flows \(idle timeout 6 s\)/);

    // Every flow is marked (--idle 0). Flow 1000 keeps carrying frames, started before the mark, so it is
    // never idle for the grace second: its mark is cleared and it stays. The others stay idle and go.
    // (Traffic started only after the mark could come too late: a flow marked while already idle more
    // than the grace second goes at the next sweep, which is the documented rule.)
    await sleep(1100);
    const keep = setInterval(() => {
      b.received();
      a.send(udp('a', 'b', 1000, 1));
    }, 100);
    try {
      await until(async () => (await show(dp)).flows.list.find((f) => f.src === '10.1.0.1:1000')!.packets > 5, 'flow 1000 to carry frames again');
      const aged = await ziu(['tables', 'age', '--datapath', dp.control, '--idle', '0', '--json']);
      expect(aged.exitCode, aged.stderr).toBe(0);
      expect(JSON.parse(aged.stdout)).toEqual({ marked: 3, live: 3, idle_s: 0 });
      await until(async () => (await show(dp)).flows.list.length === 1, 'the idle marked flows to go', 4000);
      const left = (await show(dp)).flows.list;
      expect(left).toEqual([expect.objectContaining({ src: '10.1.0.1:1000', marked: false })]);
    } finally {
      clearInterval(keep);
    }
    // The datapath's own rule: idle longer than --flow-idle (6 s), gone without any agent.
    const lastSeen = Date.now();
    await until(async () => (await show(dp)).flows.list.length === 0, 'the idle flow to age out', 10_000);
    expect(Date.now() - lastSeen).toBeGreaterThan(5000);
    const st = await dp.status();
    expect(st['tables']).toMatchObject({ flow: { aged: 3, live: 0 } });
  });

  it('a restart keeps what was learned: the same files, no flooding to c', { timeout: 60_000 }, async () => {
    const t = await tableFiles();
    const first = await startDatapath({ ports: { a: 'server', b: 'server', c: 'server' }, extraArgs: t.args });
    dps.push(first);
    const g = await guestsOn(first);
    g.a.send(udp('a', 'b', 7, 4));
    await until(() => g.b.received().length === 4, 'b to get 4');
    for (const x of Object.values(g)) x.close();
    guests.splice(0);
    await first.stop();
    dps.splice(0);
    const second = await startDatapath({ ports: { a: 'server', b: 'server', c: 'server' }, extraArgs: t.args });
    dps.push(second);
    const [a, b, c] = [await GuestPort.connect(second.sock['a']!, MAC.a), await GuestPort.connect(second.sock['b']!, MAC.b), await GuestPort.connect(second.sock['c']!, MAC.c)];
    guests.push(a, b, c);
    a.send(udp('a', 'b', 7, 3));
    await until(() => b.received().length === 3, 'b to get 3');
    await sleep(100);
    expect(c.received().length).toBe(0); // b's MAC was known from the file: nothing flooded
    expect((await show(second)).flows.list).toEqual([expect.objectContaining({ src: '10.1.0.1:7', packets: 7 })]);
  });

  it('refuses a table file another user could write, or one that is not a table, with the reason', { timeout: 60_000 }, async () => {
    const t = await tableFiles();
    const start = (args: string[]) => startDatapath({ ports: { a: 'server' }, extraArgs: args, logFile: path.join(dir!, 'dp.log') }).then((d) => (dps.push(d), d));
    const log = (): string => fs.readFileSync(path.join(dir!, 'dp.log'), 'utf8');
    fs.chmodSync(t.flow, 0o666);
    await expect(start(t.args)).rejects.toThrow(/exited with code 1/);
    expect(log()).toContain(`refusing --flow-table ${t.flow}: writable by other users (mode 666)`);
    fs.chmodSync(t.flow, 0o600);
    fs.chownSync(t.flow, 65534, 65534);
    await expect(start(t.args)).rejects.toThrow(/exited with code 1/);
    expect(log()).toMatch(new RegExp(`refusing --flow-table ${t.flow}: owned by .*65534`));
    fs.chownSync(t.flow, 0, 0);
    // A header whose sizes are beyond the file: its checksum right, so only the bounds check can catch it.
    const dp = await start(t.args);
    await dp.stop();
    dps.splice(0);
    const fd = fs.openSync(t.bridge, 'r+');
    const ab = check(native.mmap(fd, 4096, 0, 0), 'mmap');
    fs.closeSync(fd);
    const v = new DataView(ab);
    v.setUint32(24, 1 << 24, true); // entries
    let h = 2166136261;
    for (let i = 0; i < 56; i++) h = Math.imul(h ^ v.getUint8(i), 16777619) >>> 0;
    v.setUint32(56, h, true);
    native.munmap(ab);
    await expect(start(t.args)).rejects.toThrow(/exited with code 1/);
    expect(log()).toMatch(new RegExp(`--bridge-table ${t.bridge}: the header says \\d+ bytes of entries, the file has only 1048576 bytes`));
  });

  it('garbage in the entries and the port directory (a writer with a bug, a hostile agent) never takes the datapath down', { timeout: 60_000 }, async () => {
    const t = await tableFiles();
    const dp = await startDatapath({ ports: { a: 'server', b: 'server', c: 'server' }, extraArgs: t.args });
    dps.push(dp);
    const { a, b } = await guestsOn(dp);
    a.send(udp('a', 'b', 1, 10));
    await until(() => b.received().length === 10, 'b to get 10');
    // Random bytes over everything past the headers, while frames flow, three times over.
    for (let round = 0; round < 3; round++) {
      for (const f of [t.bridge, t.flow]) {
        const size = fs.statSync(f).size;
        const fd = fs.openSync(f, 'r+');
        const ab = check(native.mmap(fd, size, 0, 0), 'mmap');
        fs.closeSync(fd);
        const bytes = new Uint8Array(ab, 4096);
        for (let i = 0; i < bytes.length; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(i + 65536, bytes.length)));
        native.munmap(ab);
      }
      const before = b.received().length;
      for (let i = 0; i < 20; i++) {
        a.send(udp('a', 'b', 100 + i, 5));
        b.send(udp('b', 'a', 200 + i, 1));
        await sleep(2);
        b.received();
        a.received();
      }
      // Forwarded or flooded: b still gets a's frames, and the datapath answers.
      await until(() => b.received().length >= before + 100, `round ${round}: b to get a's 100 frames`);
      const st = await dp.status();
      expect(st.pid).toBe(dp.pid);
      const shown = await ziu(['tables', 'show', '--datapath', dp.control, '--json']);
      expect(shown.exitCode, shown.stderr).toBe(0);
    }
    expect(fs.existsSync(`/proc/${dp.pid}`)).toBe(true);
  });
});
