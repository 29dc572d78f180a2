import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { logger } from '../../src/log.js';
import { isSameProcess, processAlive, processRef, stopProcess, waitGone } from '../../src/process/index.js';
import { acquireLock, Journal, readLock, upgradePaths } from '../../src/upgrade/journal.js';
import { startRig, type Rig } from '../helpers/upgrade.js';

/**
 * A pid from a journal or a lock file may belong to another process by the
 * time it is read (the kernel reuses pids). ziu names a process by pid and
 * start time and signals it through a pidfd, so a reused pid is never
 * signalled. Forcing the kernel to reuse a pid is not practical in a test, so
 * each case uses a live process and a start time that is not its own: that is
 * exactly what a reused pid looks like.
 */
describe('a process is its pid and its start time: a reused pid is never signalled', () => {
  const children: ChildProcess[] = [];
  let rig: Rig | null = null;
  afterEach(async () => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
    await rig?.cleanup();
    rig = null;
  });

  function bystander(): ChildProcess {
    const c = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(c);
    return c;
  }

  it('reads the start time from /proc and knows a process from a later one with its pid', () => {
    const me = processRef(process.pid)!;
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    expect(me.startTime).toBe(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]));
    expect(isSameProcess(me)).toBe(true);
    expect(isSameProcess({ ...me, startTime: me.startTime - 1 })).toBe(false);
    expect(processAlive({ ...me, startTime: me.startTime + 1 })).toBe(false);
  });

  it('stopProcess of a reused pid leaves its new owner alone; of the right process, stops it', async () => {
    const c = bystander();
    await new Promise((r) => c.once('spawn', r));
    const ref = processRef(c.pid!)!;
    expect(await stopProcess({ pid: ref.pid, startTime: ref.startTime - 7 }, 200)).toBe('not-running');
    await new Promise((r) => setTimeout(r, 100));
    expect(processAlive(ref)).toBe(true);
    expect(await stopProcess(ref, 1000)).toBe('exited');
    expect(await waitGone(ref, 100)).toBe(true);
  });

  it('a lock whose pid now belongs to another process is stale and replaced', async () => {
    const c = bystander();
    await new Promise((r) => c.once('spawn', r));
    const dir = fs.mkdtempSync('/tmp/ziu-lock-');
    try {
      const lock = path.join(dir, 'dp.lock');
      const wrong = processRef(c.pid!)!.startTime + 3;
      fs.writeFileSync(lock, JSON.stringify({ pid: c.pid, startTime: wrong, upgradeId: 'gone', since: new Date().toISOString(), control: '/x.sock' }));
      const release = acquireLock(lock, { pid: process.pid, upgradeId: 'me', since: new Date().toISOString(), control: '/x.sock' }, logger('test'));
      expect(readLock(lock)).toMatchObject({ pid: process.pid, upgradeId: 'me', startTime: processRef(process.pid)!.startTime });
      release();
      expect(processAlive(c.pid!)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ziu recover does not kill a process that took the new instance\'s pid after the crash', { timeout: 60_000 }, async () => {
    rig = await startRig();
    const c = bystander();
    await new Promise((r) => c.once('spawn', r));
    const paths = upgradePaths(rig.dp.control, rig.stateDir);
    fs.mkdirSync(paths.dir, { recursive: true });
    // What an orchestrator SIGKILLed in transfer leaves: the new instance it started is long gone, its pid reused.
    const old = processRef(rig.dp.pid)!;
    Journal.create(paths.journal, {
      version: 1,
      upgradeId: 'reused',
      control: rig.dp.control,
      phase: 'transfer',
      phases: [],
      old: { pid: old.pid, startTime: old.startTime },
      newPid: c.pid,
      newStartTime: processRef(c.pid!)!.startTime - 11,
      newControl: path.join(paths.dir, 'reused.control.sock'),
    });
    const r = await rig.cli(['recover', '--control', rig.dp.control, '--json']);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ result: 'rolled_back', serving: { pid: rig.dp.pid } });
    expect(processAlive(c.pid!)).toBe(true);
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
  });
});
