import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ZiuError } from '../../src/errors.js';
import { logger } from '../../src/log.js';
import { launchDetached, processAlive, stopProcess, type LaunchOptions } from '../../src/process/index.js';
import { tempDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const datapathBin = path.join(root, 'bin', 'ziu-datapath.js');
const parentFixture = path.join(root, 'test', 'fixtures', 'launch-parent.mjs');
const log = logger('upgrade-test');

let tmp: { dir: string; remove: () => void };
// every pid a test started: killed with its process group after the test, whatever happened
let started: number[] = [];

beforeEach(() => {
  tmp = tempDir('ziu-launch-');
  started = [];
});

afterEach(() => {
  for (const pid of started) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone: the test cleaned up itself
    }
  }
  tmp.remove();
});

function opts(argv: string[], extra: Partial<LaunchOptions> = {}): LaunchOptions & { logFile: string } {
  return { argv, readyTimeoutMs: 5000, logFile: path.join(tmp.dir, 'new.log'), notifyPath: path.join(tmp.dir, 'notify.sock'), log, ...extra };
}

async function rejection(p: Promise<unknown>): Promise<ZiuError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ZiuError);
    return err as ZiuError;
  }
  throw new Error('expected a rejection');
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function pidIn(message: string): number {
  const m = /\(pid (\d+)\)/.exec(message);
  if (!m?.[1]) throw new Error(`no pid in: ${message}`);
  const pid = Number(m[1]);
  started.push(pid);
  return pid;
}

/** A detached process of ours (its own process group), for stopProcess. */
function spawnGroup(script: string): { pid: number; exited: Promise<unknown>; said: (word: string) => Promise<void> } {
  const child = spawn('sh', ['-c', script], { detached: true, stdio: ['ignore', 'pipe', 'ignore'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error('sh did not start');
  started.push(pid);
  let out = '';
  const said = (word: string): Promise<void> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (!out.includes(word)) return;
        child.stdout?.off('data', onData);
        resolve();
      };
      const onData = (d: Buffer): void => {
        out += d.toString();
        check();
      };
      child.stdout?.on('data', onData);
      check();
    });
  return { pid, exited: once(child, 'exit'), said };
}

/** A ziu-datapath with a 32M mem file and one port in shm, to launch with these options. */
async function datapathOpts(shm: string, extra: Partial<LaunchOptions>): Promise<LaunchOptions & { logFile: string }> {
  const mem = path.join(shm, 'mem');
  fs.closeSync(fs.openSync(mem, 'w'));
  await execa('fallocate', ['-l', '32M', mem]);
  const argv = [process.execPath, datapathBin, '--control', path.join(shm, 'ctl.sock'), '--mem-file', mem, '--vhost-user', `a=${shm}/a.sock`, '--instance', 'x'];
  return opts(argv, { readyTimeoutMs: 10_000, ...extra });
}

describe('launchDetached', () => {
  it('starts ziu-datapath, resolves on READY=1 and leaves it running after the launching process exits', async () => {
    const shm = fs.mkdtempSync('/dev/shm/ziu-launch-');
    let pid: number | undefined;
    try {
      const o = await datapathOpts(shm, { env: { ZIU_LOG_LEVEL: 'info' } });
      const { log: _log, ...json } = o;
      const parent = await execa(process.execPath, [parentFixture, JSON.stringify(json)], { timeout: 20_000 });
      const launched = JSON.parse(parent.stdout) as { pid: number; status: string | null; notices: string[]; error?: string; message?: string };
      expect(launched.error, launched.message).toBeUndefined();
      pid = launched.pid;
      started.push(pid);

      expect(launched.notices.some((n) => n.split('\n').includes('READY=1'))).toBe(true);
      expect(launched.status).toEqual(expect.any(String));
      expect(processAlive(pid)).toBe(true);
      expect(fs.existsSync(o.notifyPath)).toBe(false);
      expect(fs.readFileSync(o.logFile, 'utf8')).toContain('datapath ready');
      expect(fs.statSync(o.logFile).mode & 0o777).toBe(0o600);

      expect(await stopProcess(pid, 5000)).toBe('exited');
      expect(processAlive(pid)).toBe(false);
    } finally {
      if (pid !== undefined && processAlive(pid)) process.kill(-pid, 'SIGKILL');
      fs.rmSync(shm, { recursive: true, force: true });
    }
  });

  it('a SIGTERM while start-up is still ending (READY=1 about to go out) stops it cleanly, exit 0, not killed by the signal', async () => {
    const shm = fs.mkdtempSync('/dev/shm/ziu-launch-');
    try {
      const o = await datapathOpts(shm, {});
      // slow-ready: start-up ends a second after 'datapath ready' is logged, READY=1 last.
      const child = execa(o.argv[0]!, o.argv.slice(1), { env: { ZIU_FAULT: 'slow-ready', ZIU_LOG_LEVEL: 'info' }, reject: false, all: true });
      started.push(child.pid!);
      let out = '';
      child.all!.on('data', (d: Buffer) => (out += d.toString()));
      for (const deadline = Date.now() + 10_000; !out.includes('datapath ready') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
      expect(out).toContain('datapath ready');
      child.kill('SIGTERM');
      const r = await child;
      expect({ exitCode: r.exitCode, signal: r.signal ?? null }, r.all).toEqual({ exitCode: 0, signal: null });
      expect(fs.existsSync(path.join(shm, 'ctl.sock'))).toBe(false);
    } finally {
      fs.rmSync(shm, { recursive: true, force: true });
    }
  });

  it('with keepNotify hears the notices after READY=1 until the child exits, and gives its exit status', async () => {
    const shm = fs.mkdtempSync('/dev/shm/ziu-launch-');
    try {
      const o = await datapathOpts(shm, { env: { ZIU_LOG_LEVEL: 'warn' }, keepNotify: true });
      const launched = await launchDetached(o);
      started.push(launched.pid);
      expect(fs.existsSync(o.notifyPath)).toBe(true);
      expect(await stopProcess(launched.pid, 5000)).toBe('exited');
      expect(await launched.exited).toEqual({ code: 0, signal: null });
      expect(launched.notices.at(-1)).toBe('STOPPING=1');
      // The socket goes with the child.
      for (const deadline = Date.now() + 1000; fs.existsSync(o.notifyPath) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
      expect(fs.existsSync(o.notifyPath)).toBe(false);
    } finally {
      fs.rmSync(shm, { recursive: true, force: true });
    }
  });

  it('names the child as told, and without a log file says where its output went', async () => {
    const { logFile: _logFile, ...o } = opts(['sh', '-c', 'exit 3'], { what: 'test child' });
    const err = await rejection(launchDetached(o));
    expect(err.code).toBe('ERR_ZIU_NEW_EXITED');
    expect(err.message).toMatch(/^test child 'sh -c "exit 3"' \(pid \d+\) exited with code 3 before it was ready \(no READY=1 after \d+ ms\); fix what its log says and retry\. Its output went to our stderr\.$/);
  });

  it('names a command that does not exist and leaves nothing behind', async () => {
    const o = opts(['ziu-no-such-datapath']);
    const err = await rejection(launchDetached(o));
    expect(err.code).toBe('ERR_ZIU_NEW_COMMAND');
    expect(err.message).toBe("new datapath command 'ziu-no-such-datapath' not found (spawn ENOENT); install it or give its full path");
    expect(fs.existsSync(o.notifyPath)).toBe(false);
  });

  it('names a file that is not executable', async () => {
    const file = path.join(tmp.dir, 'not-exec');
    fs.writeFileSync(file, '#!/bin/sh\n', { mode: 0o644 });
    const err = await rejection(launchDetached(opts([file])));
    expect(err.code).toBe('ERR_ZIU_NEW_COMMAND');
    expect(err.message).toBe(`new datapath command '${file}' is not executable (spawn EACCES); check its permissions and the mount's noexec`);
  });

  it('reports a child that exits before READY=1 with its exit code and the end of its log', async () => {
    const o = opts(['sh', '-c', 'echo starting; echo boom >&2; exit 7']);
    const err = await rejection(launchDetached(o));
    expect(err.code).toBe('ERR_ZIU_NEW_EXITED');
    expect(err.message).toMatch(
      new RegExp(
        `^new datapath 'sh -c "echo starting; echo boom >&2; exit 7"' \\(pid \\d+\\) exited with code 7 before it was ready \\(no READY=1 after \\d+ ms\\); ` +
          `fix what its log says and retry\\. Last lines of ${escape(o.logFile)}:\n  starting\n  boom$`,
      ),
    );
    expect(fs.existsSync(o.notifyPath)).toBe(false);
  });

  it('kills a child that never sends READY=1 after the deadline', async () => {
    const o = opts(['sleep', '30'], { readyTimeoutMs: 300 });
    const t0 = Date.now();
    const err = await rejection(launchDetached(o));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(err.code).toBe('ERR_ZIU_READY_TIMEOUT');
    expect(err.message).toMatch(
      new RegExp(
        `^new datapath 'sleep 30' \\(pid \\d+\\) sent no READY=1 within 300 ms and was stopped \\(SIGTERM\\); ` +
          `check that it supports NOTIFY_SOCKET readiness, or raise the ready timeout if it starts slowly\\. Its log ${escape(o.logFile)} is empty\\.$`,
      ),
    );
    expect(processAlive(pidIn(err.message))).toBe(false);
    expect(fs.existsSync(o.notifyPath)).toBe(false);
  });

  it('stops the child when the caller aborts', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('rolling back')), 200);
    const err = await rejection(launchDetached(opts(['sh', '-c', 'trap "" TERM; sleep 30'], { readyTimeoutMs: 10_000, signal: ac.signal })));
    expect(err.code).toBe('ERR_ZIU_ABORTED');
    expect(err.message).toMatch(/^starting the new datapath 'sh -c "trap \\"\\" TERM; sleep 30"' \(pid \d+\) was aborted after \d+ ms; it was stopped \(SIGKILL after SIGTERM was ignored\)$/);
    expect(processAlive(pidIn(err.message))).toBe(false);
  });
});

describe('stopProcess', () => {
  it('SIGKILLs a process that ignores SIGTERM', async () => {
    const p = spawnGroup('trap "" TERM; echo armed; sleep 30');
    // the trap must be in place before SIGTERM is sent
    await p.said('armed');
    expect(await stopProcess(p.pid, 200)).toBe('killed');
    expect(processAlive(p.pid)).toBe(false);
  });

  it('says not-running for a pid that is gone', async () => {
    const p = spawnGroup('exit 0');
    await p.exited;
    expect(processAlive(p.pid)).toBe(false);
    expect(await stopProcess(p.pid, 200)).toBe('not-running');
  });
});
