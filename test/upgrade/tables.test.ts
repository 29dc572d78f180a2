/**
 * Flow and bridge tables across `ziu upgrade` (docs/tables.md): the new
 * instance takes the old one's table files, so a learned unicast flow goes
 * on to its port alone (no flooding while anything is relearned) and its
 * counters go on; across a flow format change it converts them; a table
 * file it cannot read rolls the upgrade back or is refused in preflight.
 */
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { check, native } from '../../src/native/index.js';
import { GuestPort, udpFrame } from '../helpers/guest-port.js';
import { hugetlbfsMounts, realHugepagesUnavailable } from '../helpers/hugepages.js';
import { startRig, type Rig } from '../helpers/upgrade.js';
import { until } from '../helpers/until.js';

const MAC = { a: '02:00:00:00:00:0a', b: '02:00:00:00:00:0b', c: '02:00:00:00:00:0c' };
const SIZE = 128;
const TABLES = { bridge: '2M', flow: '4M' };

interface Flow {
  in_port: string;
  out_port: string | null;
  action: string;
  src: string;
  dst: string;
  packets: number;
  bytes: number;
}

/** The first page of a table file, mapped shared. */
function mapHeader(p: string): { bytes: Uint8Array; close(): void } {
  const fd = fs.openSync(p, 'r+');
  try {
    const ab = check(native.mmap(fd, 4096, 0, 0), 'mmap', { path: p });
    return { bytes: new Uint8Array(ab, 0, 64), close: () => void native.munmap(ab) };
  } finally {
    fs.closeSync(fd);
  }
}


describe('tables across an upgrade', () => {
  let rig: Rig | null = null;
  const guests: GuestPort[] = [];
  // Without the rig's pool snapshot nobody unmounts the hugetlbfs mount the orchestrators made:
  // one that appeared during this file and holds no file any more goes again.
  let mountsBefore: string[] = [];
  beforeAll(() => {
    mountsBefore = hugetlbfsMounts();
  });
  afterAll(() => {
    for (const m of hugetlbfsMounts()) {
      if (mountsBefore.includes(m) || !m.startsWith('/dev/hugepages-ziu-') || fs.readdirSync(m).length > 0) continue;
      try {
        execFileSync('umount', [m]);
        fs.rmdirSync(m);
      } catch {
        // busy: another run's now
      }
    }
  });
  afterEach(async () => {
    for (const g of guests.splice(0)) g.close();
    await rig?.cleanup();
    rig = null;
  });

  /** Guests on a, b, c; b speaks once (its MAC is learned); a's flow to b carries `n` frames. */
  async function setup(datapathArgs: string[] = [], backing: 'auto' | 'tmpfs' = 'tmpfs'): Promise<{ a: GuestPort; b: GuestPort; c: GuestPort; sent: { n: number }; send(k: number): Promise<void> }> {
    // No pool snapshot: this host's pool and hugetlbfs mounts are shared with other runs (memfile remove gives our pages back).
    rig = await startRig({ probe: false, dp: { ports: { a: 'server', b: 'server', c: 'server' } }, datapathArgs, tables: { ...TABLES, backing }, hugepageSnapshot: false });
    const [a, b, c] = [await GuestPort.connect(rig.dp.sock['a']!, MAC.a), await GuestPort.connect(rig.dp.sock['b']!, MAC.b), await GuestPort.connect(rig.dp.sock['c']!, MAC.c)];
    guests.push(a, b, c);
    b.send([udpFrame({ dst: 'ff:ff:ff:ff:ff:ff', src: MAC.b, srcIp: '10.0.0.2', dstIp: '10.0.0.255', sport: 9, dport: 9, size: 64 })]);
    await until(() => c.received().length === 1 && a.received().length === 1, 'b announced to a and c');
    const sent = { n: 0 };
    const send = async (k: number): Promise<void> => {
      for (let i = 0; i < k; i++) a.send([udpFrame({ dst: MAC.b, src: MAC.a, srcIp: '10.0.0.1', dstIp: '10.0.0.2', sport: 1000, dport: 2000, size: SIZE, seq: sent.n++ })]);
      await until(() => b.received().length === sent.n, `b to receive ${sent.n} frames`);
    };
    return { a, b, c, sent, send };
  }

  async function flows(): Promise<Flow[]> {
    const r = await rig!.cli(['tables', 'show', '--datapath', rig!.dp.control, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { flows: { list: Flow[] } }).flows.list;
  }

  /** a sends all along (every 4 ms) while the upgrade runs: its flow changes while the tables are handed over. */
  function sendDuring(a: GuestPort, b: GuestPort, sent: { n: number }): { stop(): void } {
    const t = setInterval(() => {
      b.received(); // b's RX buffers go back as a guest's driver would put them back
      a.send([udpFrame({ dst: MAC.b, src: MAC.a, srcIp: '10.0.0.1', dstIp: '10.0.0.2', sport: 1000, dport: 2000, size: SIZE, seq: sent.n++ })]);
    }, 4);
    return { stop: () => clearInterval(t) };
  }

  it('same format: the new instance maps the very same table files; the flow goes on to b alone, its counters go on', { timeout: 60_000 }, async () => {
    const { a, b, c, sent, send } = await setup([], 'auto');
    await send(50);
    const before = await flows();
    expect(before).toEqual([expect.objectContaining({ in_port: 'a', out_port: 'b', action: 'forward', src: '10.0.0.1:1000', dst: '10.0.0.2:2000', packets: 50, bytes: 50 * SIZE })]);
    const old = await rig!.dp.status();
    const oldTables = old['tables'] as { bridge: { file: string }; flow: { file: string } };
    const filesBefore = (await rig!.cli(['memfile', 'list', '--json'])).stdout;
    const meminfo = (): number => Number(/HugePages_Free:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))![1]);
    const freeBefore = meminfo();

    const during = sendDuring(a, b, sent);
    const r = await rig!.upgrade();
    during.stop();
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.report).toMatchObject({ result: 'committed', tables: { bridge: 'adopted', flow: 'adopted', flow_format: { old: 2, new: 2 } } });
    const freeAfter = meminfo();
    console.log(`same-format upgrade with tables: switchover ${r.report['switchover_us']} us ${JSON.stringify(r.report['switchover_parts'])}`);

    // No new table: the new instance maps the same files (device and inode), and the store holds no other table file.
    const now = await rig!.dp.status();
    const newTables = now['tables'] as { bridge: { file: string; writable: boolean }; flow: { file: string; writable: boolean; caught_up?: number } };
    expect(now.pid).not.toBe(old.pid);
    expect(newTables.bridge.file).toBe(oldTables.bridge.file);
    expect(newTables.flow.file).toBe(oldTables.flow.file);
    expect(newTables.flow.writable).toBe(true);
    // ... and maps no other table: every file it maps named like a table is one of those two (by inode).
    const inode = (file: string): string => file.split(':')[1]!;
    const mapped = new Set(
      fs.readFileSync(`/proc/${now.pid}/maps`, 'utf8').split('\n').filter((l) => /(\/(bridge|flow)|ziu-(bridge|flow)-table)( \(deleted\))?$/.test(l)).map((l) => l.split(/\s+/)[4]!),
    );
    expect([...mapped].sort()).toEqual([inode(oldTables.bridge.file), inode(oldTables.flow.file)].sort());
    const tableFiles = (doc: string): string[] => (JSON.parse(doc) as Array<{ role: string; instance: string }>).filter((f) => f.role === 'bridge' || f.role === 'flow').map((f) => `${f.instance}/${f.role}`);
    expect(tableFiles((await rig!.cli(['memfile', 'list', '--json'])).stdout).filter((f) => f.startsWith('upgrade-'))).toEqual([]);
    void filesBefore;
    const mem = r.report['memory'] as { page_size: number; bytes: number; backing: string } | null;
    console.log(
      `same-format upgrade: HugePages_Free ${freeBefore} -> ${freeAfter} (the new instance's packet memory: ${mem ? `${mem.bytes / mem.page_size} ${mem.backing} pages` : 'none'}; ` +
        `tables: none; other engineers' runs share this pool, so the figure is printed, not asserted)`,
    );

    await until(() => b.received().length === sent.n, 'b to receive every frame sent during the upgrade');
    const cBefore = c.received().length;
    await send(30);
    expect(c.received().length).toBe(cBefore); // nothing flooded: c got nothing of a's flow
    expect(c.received().length).toBe(1); // only b's broadcast, before the upgrade
    const after = await flows();
    expect(after).toEqual([expect.objectContaining({ in_port: 'a', out_port: 'b', packets: sent.n, bytes: sent.n * SIZE })]);
    expect(sent.n).toBeGreaterThan(80);
  });

  it('format 1 -> 2: the new instance converts the flow table into a file of its own, catches up what changed during the transfer, and the counters go on', { timeout: 60_000 }, async () => {
    const { a, b, c, sent, send } = await setup(['--flow-formats', '1']);
    await send(40);
    const before = await rig!.cli(['tables', 'show', '--datapath', rig!.dp.control, '--json']);
    expect(JSON.parse(before.stdout)).toMatchObject({ flows: { format: 1, list: [{ packets: 40, age_s: null }] } });
    const during = sendDuring(a, b, sent);
    const r = await rig!.upgrade();
    during.stop();
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.report).toMatchObject({ result: 'committed', tables: { bridge: 'adopted', flow: 'converted', flow_format: { old: 1, new: 2 } } });
    const path = (r.report['tables'] as { path: string }).path;
    const caught = ((await rig!.dp.status())['tables'] as { flow: { caughtUp: number } }).flow.caughtUp;
    console.log(`format 1 -> 2 upgrade: switchover ${r.report['switchover_us']} us ${JSON.stringify(r.report['switchover_parts'])}, transfer ${(r.report['phases'] as Record<string, number>)['transfer']} ms, ${caught} flow entries caught up at the takeover`);
    expect(path).toMatch(/upgrade-.*\/flow$/);
    const now = await rig!.dp.status();
    expect(now['tables']).toMatchObject({ flow: { path, format: 2, writable: true, convertedFrom: { format: 1 } } });
    // The old format-1 file was ziu's: it is gone; the bridge file is the same.
    const files = JSON.parse((await rig!.cli(['memfile', 'list', '--json'])).stdout) as Array<{ instance: string; role: string }>;
    expect(files.filter((f) => f.instance.startsWith('rig-')).map((f) => f.role)).toEqual(['bridge']);

    await until(() => b.received().length === sent.n, 'b to receive every frame sent during the upgrade');
    await send(30);
    expect(c.received().length).toBe(1);
    const shown = JSON.parse((await rig!.cli(['tables', 'show', '--datapath', rig!.dp.control, '--json'])).stdout) as { flows: { format: number; list: Array<Flow & { age_s: number | null }> } };
    expect(shown.flows.format).toBe(2);
    expect(shown.flows.list).toEqual([expect.objectContaining({ in_port: 'a', out_port: 'b', packets: sent.n, bytes: sent.n * SIZE })]);
    expect(shown.flows.list[0]!.age_s).not.toBeNull(); // format 2 keeps when the flow was created
  });

  it('format 1 -> 2, rolled back after the new instance served (verify fails): what it counted goes back into the old format-1 table', { timeout: 60_000 }, async () => {
    const { a, b, c, sent, send } = await setup(['--flow-formats', '1']);
    await send(30);
    const during = sendDuring(a, b, sent);
    // Nothing answers on port 1: the health check fails in verify, after the new instance took the rings.
    const r = await rig!.upgrade(['--health-url', 'http://127.0.0.1:1/ready']);
    during.stop();
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.report).toMatchObject({ result: 'rolled_back', rollback: { phase: 'verify', code: 'ERR_ZIU_HEALTH', devices: { handed_back: true } } });
    await until(() => b.received().length === sent.n, 'b to receive every frame sent during the upgrade');
    await send(10);
    expect(c.received().length).toBe(1);
    const shown = JSON.parse((await rig!.cli(['tables', 'show', '--datapath', rig!.dp.control, '--json'])).stdout) as { flows: { format: number; list: Flow[] } };
    expect(shown.flows.format).toBe(1);
    // Every frame counted: those the old instance forwarded, those the new one did while it served, and after.
    expect(shown.flows.list).toEqual([expect.objectContaining({ in_port: 'a', out_port: 'b', packets: sent.n, bytes: sent.n * SIZE })]);
  });

  for (const [what, corrupt, reason] of [
    ['a corrupted flow table header', (h: Uint8Array) => h.fill(0xff, 24, 28), /the header is corrupted \(its checksum does not match\)/],
    ['a foreign file', (h: Uint8Array) => h.set(Buffer.from('NOT-ZIU!'), 0), /not a ziu table file \(wrong magic number\)/],
  ] as const) {
    it(`${what}: the new instance refuses it at import, with the reason; the upgrade rolls back and the old instance's tables go on`, { timeout: 60_000 }, async () => {
      const { b, c, sent, send } = await setup();
      await send(20);
      const st = await rig!.dp.status();
      const flowPath = (st['tables'] as { flow: { path: string } }).flow.path;
      // What a bug elsewhere, or a hand with an editor, could leave: the old instance checked its header when it
      // started and never reads the geometry again, so it goes on; the new instance reads it and must refuse.
      // (hugetlbfs has no write(2): through a shared mapping, as any writer of a table does)
      const header = mapHeader(flowPath);
      const saved = Uint8Array.from(header.bytes);
      try {
        corrupt(header.bytes);
      } finally {
        header.close();
      }
      const r = await rig!.upgrade();
      expect(r.exitCode, r.stderr).toBe(1);
      expect(r.report).toMatchObject({ result: 'rolled_back', rollback: { phase: 'transfer', code: 'ERR_ZIU_TABLE' } });
      expect((r.report['rollback'] as { reason: string }).reason).toMatch(reason);
      expect((r.report['rollback'] as { reason: string }).reason).toContain(flowPath);
      expect((await rig!.dp.status()).pid).toBe(st.pid);
      await send(20);
      expect(c.received().length).toBe(1);
      expect(b.received().length).toBe(sent.n);
      // The old instance's flow entries are intact (the header is what was damaged): restore it, and they read back.
      const again = mapHeader(flowPath);
      again.bytes.set(saved);
      again.close();
      expect(await flows()).toEqual([expect.objectContaining({ packets: 40, out_port: 'b' })]);
    });
  }

  it('refuses in preflight a new datapath that cannot read the old flow format: nothing changes', { timeout: 60_000 }, async () => {
    const { sent, send, c } = await setup(['--flow-formats', '1']);
    await send(10);
    const st = await rig!.dp.status();
    const r = await rig!.cli(['upgrade', '--control', rig!.dp.control, '--new', rig!.newCommand('--flow-formats 2'), '--json']);
    expect(r.exitCode, r.stderr).toBe(2);
    const rep = JSON.parse(r.stdout) as { result: string; code: string; message: string };
    expect(rep).toMatchObject({ result: 'refused', code: 'ERR_ZIU_TABLE_FORMAT' });
    expect(rep.message).toMatch(/the old instance's flow table \(.*\/flow\) is in format 1; the new datapath \(.*\) reads flow formats 2/);
    expect((await rig!.dp.status()).pid).toBe(st.pid);
    await send(10);
    expect(c.received().length).toBe(1);
    expect(sent.n).toBe(20);
  });
});

if (realHugepagesUnavailable() !== null) console.log(`tables upgrade tests: table files on tmpfs (${realHugepagesUnavailable()})`);
