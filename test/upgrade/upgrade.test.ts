import fs from 'node:fs';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { processAlive } from '../../src/process/index.js';
import { pool, realHugepagesUnavailable } from '../helpers/hugepages.js';
import { fdCount, startRig, type Rig } from '../helpers/upgrade.js';

const hugepages = realHugepagesUnavailable() === null;

describe('ziu upgrade: a handover under traffic', () => {
  let rig: Rig | null = null;
  afterEach(async () => {
    await rig?.cleanup();
    rig = null;
  });

  it('hands every connection to a new instance: committed, no VM reconnects, zero frames lost, old instance gone with its memory', async () => {
    const poolBefore = hugepages ? pool() : null;
    rig = await startRig({ rate: 5000 });
    const oldPid = rig.dp.pid;
    const r = await rig.upgrade();
    expect(r.exitCode, r.stderr).toBe(0);
    const rep = r.report as {
      result: string;
      switchover_us: number;
      phases: Record<string, number>;
      ports: Array<{ name: string; moving: boolean; connected: boolean }>;
      old: { pid: number };
      new: { pid: number; instance: string; control: string };
      upgrade_id: string;
      memory: { backing: string; bytes: number };
    };
    expect(rep.result).toBe('committed');
    expect(rep.switchover_us).toBeGreaterThan(0);
    expect(Object.keys(rep.phases)).toEqual(['preflight', 'reserve', 'start', 'ready', 'transfer', 'freeze', 'resume', 'verify', 'commit']);
    expect(rep.ports).toEqual([
      expect.objectContaining({ name: 'a', moving: true, connected: true }),
      expect.objectContaining({ name: 'b', moving: true, connected: true }),
    ]);
    expect(rep.old.pid).toBe(oldPid);
    expect(rep.new).toMatchObject({ instance: 'new1', control: rig.dp.control });
    expect(rep.memory.backing).toBe(hugepages ? 'hugetlbfs' : 'tmpfs');
    expect(processAlive(oldPid)).toBe(false);
    // Started in the background (nice 10), it serves at the old instance's priority: every thread of
    // it, the packet worker too (a nice value is a thread's; setpriority(pid) sets one thread's only).
    const nices = fs.readdirSync(`/proc/${rep.new.pid}/task`).map((tid) => [tid, os.getPriority(Number(tid))]);
    expect(nices.length).toBeGreaterThan(2);
    expect(nices.filter(([, n]) => n !== 0)).toEqual([]);

    // The control socket is the same path, now answered by the new instance.
    const st = await rig.cli(['status', '--control', rig.dp.control, '--json']);
    expect(st.exitCode, st.stderr).toBe(0);
    const doc = JSON.parse(st.stdout) as { status: { pid: number; role: string; ports: Array<{ name: string; disconnects: number }> }; last_upgrade: { upgrade_id: string } };
    expect(doc.status).toMatchObject({ pid: rep.new.pid, role: 'active' });
    expect(doc.status.ports.map((p) => [p.name, p.disconnects])).toEqual([['a', 0], ['b', 0]]);
    expect(doc.last_upgrade.upgrade_id).toBe(rep.upgrade_id);
    const human = await rig.cli(['status', '--control', rig.dp.control]);
    expect(human.stdout).toContain(`last upgrade: ${rep.upgrade_id} committed`);

    await new Promise((res) => setTimeout(res, 300));
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, duplicated: 0, reordered: 0, reconnects: 0 });
    expect(probe.received).toBeGreaterThan(0);

    // Shut the new instance down: its memory (ours) goes with ziu memfile remove in cleanup; the pool comes back.
    await rig.cleanup();
    rig = null;
    if (poolBefore) expect(pool()).toEqual(poolBefore);
  });

  it('takes its options from a YAML file and prints a short summary without --json', async () => {
    rig = await startRig({ rate: 1000 });
    const config = `${rig.stateDir}/upgrade.yaml`;
    fs.writeFileSync(config, `control: ${rig.dp.control}\nnew: ${rig.newCommand()}\nmem: 16M\nverifyMs: 200\n`);
    const r = await rig.cli(['upgrade', '--config', config, '--report', `${rig.stateDir}/report.json`]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^upgrade [0-9a-f]{8}: committed in \d+ ms\n  switchover: [\d.]+ us/);
    expect(r.stdout).toContain('  ports: a (traffic), b (traffic)');
    const saved = JSON.parse(fs.readFileSync(`${rig.stateDir}/report.json`, 'utf8')) as { result: string; new: { pid: number } };
    rig.pids.add(saved.new.pid);
    expect(saved.result).toBe('committed');
  });

  it('upgrades across state formats: format 1 when the old instance only speaks 1; refuses a pair with none in common, changing nothing', async () => {
    rig = await startRig({ rate: 1000, datapathArgs: ['--state-formats', '1'] });
    const ok = await rig.upgrade(['--new', rig.newCommand('--state-formats 1,2')]);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.report).toMatchObject({ result: 'committed', state_format: 1 });

    // Now the running instance speaks 1 and 2; a new one that only knows 3 does not exist, so restrict the old: upgrade to a 1-only one first.
    const to1 = await rig.upgrade(['--new', rig.newCommand('--state-formats 2')]);
    expect(to1.report).toMatchObject({ result: 'committed', state_format: 2 });
    const pid = (to1.report['new'] as { pid: number }).pid;
    const fds = fdCount(pid);
    const refused = await rig.upgrade(['--new', rig.newCommand('--state-formats 1')]);
    expect(refused.exitCode).toBe(2);
    expect(refused.report).toMatchObject({ result: 'refused', code: 'ERR_ZIU_STATE_FORMAT' });
    expect(refused.stderr).toContain('incompatible state formats: the old instance (0.1.0) exports 2, the new datapath (0.1.0) imports 1');
    expect(processAlive(pid)).toBe(true);
    expect(fdCount(pid)).toBe(fds);
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, reconnects: 0 });
  });
});
