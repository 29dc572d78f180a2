import fs from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { context } from '../../src/cli/context.js';
import { ZiuError } from '../../src/errors.js';
import { processAlive } from '../../src/process/index.js';
import { EXIT_FOR } from '../../src/upgrade/report.js';
import { upgradePaths } from '../../src/upgrade/journal.js';
import { upgrade } from '../../src/upgrade/upgrade.js';
import { Peer } from '../../src/upgrade/peer.js';
import { role, startRig, type Rig } from '../helpers/upgrade.js';

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

describe('an instance that cannot be stopped ends the upgrade in exit 3, journal kept, lock released', () => {
  let rig: Rig | null = null;
  afterEach(async () => {
    stuck.clear();
    delete process.env['ZIU_FAULT'];
    delete process.env['ZIU_STATE_DIR'];
    delete process.env['ZIU_TMPFS_DIR'];
    await rig?.cleanup();
    rig = null;
  });

  /** Watch the journal while the upgrade runs: `on` hears the new instance's pid and each phase. */
  async function run(rig: Rig, on?: (doc: { newPid?: number; phase?: string }) => void, deadManMs?: number) {
    const j = upgradePaths(rig.dp.control, rig.stateDir).journal;
    const timer = on
      ? setInterval(() => {
          try {
            on(JSON.parse(fs.readFileSync(j, 'utf8')) as { newPid?: number; phase?: string });
          } catch {
            // not written yet, or being replaced
          }
        }, 2)
      : null;
    // The rig's state dir for the store as well as the journal: the ledger must be where the cleanup looks.
    process.env['ZIU_STATE_DIR'] = rig.stateDir;
    process.env['ZIU_TMPFS_DIR'] = `${rig.stateDir}/tmpfs`;
    try {
      return await upgrade({
        control: rig.dp.control,
        newCommand: rig.newCommand().split(' '),
        mem: 16 << 20,
        stateDir: rig.stateDir,
        store: context().store,
        ...(deadManMs ? { deadManMs } : {}),
      });
    } finally {
      if (timer) clearInterval(timer);
    }
  }

  it('a new instance that hangs with the rings and cannot be stopped: the old one is not thawed, and the operator is told', { timeout: 30_000 }, async () => {
    rig = await startRig({ rate: 2000 });
    let hung: number | null = null;
    // A long dead-man bound: the old instance's own watch must not take the rings back during this test.
    const rep = await run(rig, (doc) => {
      if (typeof doc.newPid === 'number') {
        stuck.add(doc.newPid);
        rig!.pids.add(doc.newPid);
        if (doc.phase === 'verify' && hung === null) {
          hung = doc.newPid;
          process.kill(hung, 'SIGSTOP');
        }
      }
    }, 60_000);
    try {
      expect(hung).not.toBeNull();
      expect(rep.result).toBe('failed');
      expect(EXIT_FOR[rep.result]).toBe(3);
      expect(rep.rollback?.phase).toBe('verify');
      expect(rep.message).toMatch(/^rollback did not finish: the new instance \(pid \d+\) could not be stopped .*so the old one was not thawed.*Run: ziu recover --control /);
      const paths = upgradePaths(rig.dp.control, rig.stateDir);
      expect(fs.existsSync(paths.journal)).toBe(true);
      expect(fs.existsSync(paths.lock)).toBe(false);
      expect(await role(rig.dp.control)).not.toBe('active');
      expect(processAlive(hung!)).toBe(true);
    } finally {
      if (hung !== null) process.kill(hung, 'SIGCONT');
    }
  });

  it('a new instance that handed the rings back but cannot be stopped: the old one serves, exit 3 says what is left', async () => {
    rig = await startRig({ rate: 2000 });
    process.env['ZIU_FAULT'] = 'commit-fail';
    const rep = await run(rig, (doc) => {
      if (typeof doc.newPid === 'number') {
        stuck.add(doc.newPid);
        rig!.pids.add(doc.newPid);
      }
    });
    expect(rep.result).toBe('failed');
    expect(EXIT_FOR[rep.result]).toBe(3);
    expect(rep.rollback).toMatchObject({ phase: 'commit', devices: { handedBack: true, reset: [] } });
    expect(rep.message).toMatch(/^rolled back: the old instance serves again, but the new instance \(pid \d+\) could not be stopped .*ziu recover --control /);
    const paths = upgradePaths(rig.dp.control, rig.stateDir);
    expect(fs.existsSync(paths.journal)).toBe(true);
    expect(fs.existsSync(paths.lock)).toBe(false);
    // The new instance had taken the control listener before its commit failed; handed back, it no
    // longer accepts there: every connection reaches the old instance.
    for (let i = 0; i < 10; i++) {
      const peer = await Peer.connect('test', rig.dp.control);
      try {
        expect(await peer.hello()).toMatchObject({ pid: rig.dp.pid, role: 'active' });
      } finally {
        peer.close();
      }
    }
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
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
