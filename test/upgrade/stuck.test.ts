import fs from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { context } from '../../src/cli/context.js';
import { ZiuError } from '../../src/errors.js';
import { processAlive } from '../../src/process/index.js';
import { EXIT_FOR } from '../../src/upgrade/report.js';
import { upgradePaths } from '../../src/upgrade/journal.js';
import { upgrade } from '../../src/upgrade/upgrade.js';
import { Peer } from '../../src/upgrade/peer.js';
import { startRig, type Rig } from '../helpers/upgrade.js';

/**
 * A process that survives SIGKILL (stuck in the kernel) cannot be made on
 * purpose here, so stopProcess is told to fail for the pids a test names:
 * the only mock in this file. Everything else is real: two datapaths, the
 * probe, the orchestrator in this process.
 */
const stuck = new Set<number>();
vi.mock('../../src/process/stop.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/process/stop.js')>();
  const pidOf = (t: number | { pid: number }) => (typeof t === 'number' ? t : t.pid);
  return {
    ...real,
    stopProcess: async (t: number | { pid: number }, graceMs: number) => {
      if (stuck.has(pidOf(t))) throw new ZiuError('ERR_ZIU_STOP', `process ${pidOf(t)} is still there after SIGKILL (test)`);
      return real.stopProcess(t as never, graceMs);
    },
    waitGone: async (t: number | { pid: number }, ms: number) => (stuck.has(pidOf(t)) ? false : real.waitGone(t as never, ms)),
  };
});

async function role(control: string): Promise<string> {
  const peer = await Peer.connect('test', control);
  try {
    return (await peer.hello()).role;
  } finally {
    peer.close();
  }
}

describe('an instance that cannot be stopped ends the upgrade in exit 3, journal kept, lock released', () => {
  let rig: Rig | null = null;
  afterEach(async () => {
    stuck.clear();
    delete process.env['ZIU_FAULT'];
    await rig?.cleanup();
    rig = null;
  });

  async function run(rig: Rig, onNewPid?: (pid: number) => void) {
    const timer = onNewPid ? setInterval(() => {
      // The new instance's pid, as soon as it is in the journal: the mock must know it before the rollback.
      const j = upgradePaths(rig.dp.control, rig.stateDir).journal;
      try {
        const doc = JSON.parse(fs.readFileSync(j, 'utf8')) as { newPid?: number };
        if (typeof doc.newPid === 'number') onNewPid(doc.newPid);
      } catch {
        // not written yet
      }
    }, 5) : null;
    try {
      return await upgrade({ control: rig.dp.control, newCommand: rig.newCommand().split(' '), mem: 16 << 20, stateDir: rig.stateDir, store: context().store });
    } finally {
      if (timer) clearInterval(timer);
    }
  }

  it('a rollback whose new instance cannot be stopped does not thaw the old one and says so', async () => {
    rig = await startRig({ rate: 2000 });
    process.env['ZIU_FAULT'] = 'commit-fail';
    const rep = await run(rig, (pid) => {
      stuck.add(pid);
      rig!.pids.add(pid);
    });
    expect(rep.result).toBe('failed');
    expect(EXIT_FOR[rep.result]).toBe(3);
    expect(rep.rollback?.phase).toBe('commit');
    expect(rep.message).toMatch(/^rollback did not finish: the new instance \(pid \d+\) could not be stopped .*so the old one was not thawed.*Run: ziu recover --control /);
    const paths = upgradePaths(rig.dp.control, rig.stateDir);
    expect(fs.existsSync(paths.journal)).toBe(true);
    expect(fs.existsSync(paths.lock)).toBe(false);
    // Not thawed: the new instance, which could not be stopped, still serves the rings.
    expect(await role(rig.dp.control)).not.toBe('active');
    expect(processAlive(rep.new!.pid)).toBe(true);
  });

  it('an old instance that cannot be retired after commit: the new one serves, the operator is told', async () => {
    rig = await startRig({ rate: 2000 });
    stuck.add(rig.dp.pid);
    const rep = await run(rig);
    if (rep.new) rig.pids.add(rep.new.pid);
    expect(rep.result).toBe('failed');
    expect(EXIT_FOR[rep.result]).toBe(3);
    expect(rep.rollback).toBeUndefined();
    expect(rep.message).toMatch(/^committed: the new instance \(pid \d+\) serves every device, but the old instance \(pid \d+\) was not retired .*ziu recover/);
    const paths = upgradePaths(rig.dp.control, rig.stateDir);
    expect(fs.existsSync(paths.journal)).toBe(true);
    expect(fs.existsSync(paths.lock)).toBe(false);
    expect(await role(rig.dp.control)).toBe('active');
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
  });
});
