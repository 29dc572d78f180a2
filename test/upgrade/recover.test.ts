import { afterEach, describe, expect, it } from 'vitest';
import { Peer, type Hello } from '../../src/upgrade/peer.js';
import { upgradePaths } from '../../src/upgrade/journal.js';
import { processAlive } from '../../src/process/index.js';
import { startRig, type Rig } from '../helpers/upgrade.js';
import fs from 'node:fs';

async function hello(control: string): Promise<Hello> {
  const peer = await Peer.connect('test', control);
  try {
    return await peer.hello();
  } finally {
    peer.close();
  }
}

/** Pids of datapaths started for this rig that are still alive. */
function alive(rig: Rig, newPid: number | null): number[] {
  return [rig.dp.pid, ...(newPid ? [newPid] : [])].filter(processAlive);
}

describe('the orchestrator killed with SIGKILL mid-upgrade; ziu recover', () => {
  let rig: Rig | null = null;
  afterEach(async () => {
    await rig?.cleanup();
    rig = null;
  });

  const cases = [
    { point: 'transfer', fault: '', oldRole: 'exporting', result: 'rolled_back', exit: 1, serving: 'old', why: 'the old instance never froze' },
    { point: 'freeze', fault: '', oldRole: 'handed-over', result: 'committed', exit: 0, serving: 'new', why: 'the new instance took over directly on the freeze' },
    // A new instance that cannot take over by itself: nobody resumes it, so the old one's dead-man switch thaws it.
    { point: 'freeze', fault: 'no-forward', oldRole: 'active', result: 'rolled_back', exit: 1, serving: 'old', why: 'the dead-man switch thawed the old instance' },
    { point: 'resume', fault: '', oldRole: 'handed-over', result: 'committed', exit: 0, serving: 'new', why: 'the new instance resumed' },
  ] as const;
  for (const c of cases) {
    it(`killed in ${c.point}${c.fault ? ` (new instance: ${c.fault})` : ''}: ${c.why}; recover leaves exactly one instance forwarding (${c.serving})`, async () => {
      rig = await startRig({ rate: 1000 });
      const r = await rig.upgrade([], { ZIU_TEST_KILL_ORCHESTRATOR: c.point, ...(c.fault ? { ZIU_FAULT: c.fault } : {}) });
      expect(r.exitCode).toBe(-1); // killed by a signal: no exit code, no report
      const journal = JSON.parse(fs.readFileSync(upgradePaths(rig.dp.control, rig.stateDir).journal, 'utf8')) as { newPid: number; phase: string };
      const newPid = journal.newPid;
      rig.pids.add(newPid);
      // Give the dead-man switch (200 ms) its time: a frozen old instance must thaw, or see that the new one took over.
      await new Promise((res) => setTimeout(res, 400));
      expect((await hello(rig.dp.control)).role).toBe(c.oldRole);

      const st = await rig.cli(['status', '--control', rig.dp.control]);
      expect(st.stdout).toContain(`unfinished upgrade: `);
      expect(st.stdout).toContain("(orchestrator gone: run 'ziu recover')");

      const rec = await rig.cli(['recover', '--control', rig.dp.control, '--json']);
      expect(rec.exitCode, rec.stderr).toBe(c.exit);
      const doc = JSON.parse(rec.stdout) as { result: string; serving: { pid: number }; actions: string[] };
      expect(doc.result).toBe(c.result);
      const servingPid = c.serving === 'old' ? rig.dp.pid : newPid;
      expect(doc.serving.pid).toBe(servingPid);
      await new Promise((res) => setTimeout(res, 200));
      expect(alive(rig, newPid)).toEqual([servingPid]);
      expect(await hello(rig.dp.control)).toMatchObject({ role: 'active', pid: servingPid });

      // A second recover has nothing to do.
      const again = await rig.cli(['recover', '--control', rig.dp.control, '--json']);
      expect(JSON.parse(again.stdout)).toMatchObject({ result: 'nothing_to_do' });

      await new Promise((res) => setTimeout(res, 300));
      const probe = await rig.probe!.stop();
      expect(probe).toMatchObject({ lost: 0, duplicated: 0, reordered: 0, reconnects: 0 });
    });
  }
});
