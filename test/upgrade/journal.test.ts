import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ZiuError } from '../../src/errors.js';
import { logger } from '../../src/log.js';
import { processRef } from '../../src/process/index.js';
import { acquireLock, Journal, readLastUpgrade, readLock, upgradePaths, type JournalDoc, type LockInfo } from '../../src/upgrade/journal.js';
import { tempDir } from '../helpers/tmp.js';

const log = logger('upgrade-test');
let tmp: { dir: string; remove: () => void };

beforeEach(() => {
  tmp = tempDir('ziu-journal-');
});

afterEach(() => {
  tmp.remove();
});

function thrown(fn: () => unknown): ZiuError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ZiuError);
    return err as ZiuError;
  }
  throw new Error('expected a throw');
}

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true', { stdio: 'ignore' });
  await once(child, 'exit');
  if (child.pid === undefined) throw new Error('true did not start');
  return child.pid;
}

const info = (over: Partial<LockInfo> = {}): LockInfo => ({ pid: process.pid, upgradeId: 'u-1', since: '2025-01-02T03:04:05.000Z', control: '/run/ziu/dp.sock', ...over });

function doc(over: Partial<JournalDoc> = {}): JournalDoc {
  return { version: 1, upgradeId: 'u-1', control: '/run/ziu/dp.sock', phase: 'preflight', phases: [{ name: 'preflight', startedAt: '2025-01-02T03:04:05.000Z' }], ...over };
}

describe('upgradePaths', () => {
  it('names the files after the absolute control path', () => {
    expect(upgradePaths('/run/ziu/dp.sock', '/state')).toEqual({
      dir: '/state/upgrade',
      lock: '/state/upgrade/run_ziu_dp.sock.lock',
      journal: '/state/upgrade/run_ziu_dp.sock.journal.json',
      last: '/state/upgrade/run_ziu_dp.sock.last.json',
    });
  });

  it('keeps control paths that differ only in / and _ apart', () => {
    expect(upgradePaths('/a_b/c', '/s').lock).toBe('/s/upgrade/a%5Fb_c.lock');
    expect(upgradePaths('/a/b_c', '/s').lock).toBe('/s/upgrade/a_b%5Fc.lock');
  });

  it('resolves a relative control path', () => {
    expect(upgradePaths('dp.sock', '/s').lock).toBe(`/s/upgrade/${path.resolve('dp.sock').slice(1).replace(/[%_]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`).replaceAll('/', '_')}.lock`);
  });

  it('shortens a very long name with a hash that keeps it unique', () => {
    const a = upgradePaths(`/${'x'.repeat(300)}/a.sock`, '/s');
    const b = upgradePaths(`/${'x'.repeat(300)}/b.sock`, '/s');
    expect(path.basename(a.journal).length).toBeLessThanOrEqual(255);
    expect(a.journal).not.toBe(b.journal);
  });

  it('defaults to $ZIU_STATE_DIR, then /run/ziu', () => {
    const saved = process.env['ZIU_STATE_DIR'];
    try {
      process.env['ZIU_STATE_DIR'] = '/var/lib/ziu';
      expect(upgradePaths('/dp.sock').dir).toBe('/var/lib/ziu/upgrade');
      delete process.env['ZIU_STATE_DIR'];
      expect(upgradePaths('/dp.sock').dir).toBe('/run/ziu/upgrade');
    } finally {
      if (saved === undefined) delete process.env['ZIU_STATE_DIR'];
      else process.env['ZIU_STATE_DIR'] = saved;
    }
  });
});

describe('acquireLock', () => {
  it('holds the lock until released, and refuses a second upgrade meanwhile', () => {
    const lock = path.join(tmp.dir, 'upgrade', 'dp.lock');
    const release = acquireLock(lock, info(), log);
    expect(readLock(lock)).toEqual({ ...info(), startTime: processRef(process.pid)!.startTime });
    expect(fs.statSync(lock).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(lock)).mode & 0o777).toBe(0o700);

    const err = thrown(() => acquireLock(lock, info({ upgradeId: 'u-2' }), log));
    expect(err.code).toBe('ERR_ZIU_LOCKED');
    expect(err.message).toBe(
      `another upgrade of /run/ziu/dp.sock is running: pid ${process.pid}, upgrade u-1, since 2025-01-02T03:04:05.000Z (lock ${lock}); ` +
        `wait for it to finish, or if pid ${process.pid} is not a ziu upgrade, remove the lock`,
    );
    expect(readLock(lock)).toEqual({ ...info(), startTime: processRef(process.pid)!.startTime });

    release();
    expect(readLock(lock)).toBeNull();
    release();
    const again = acquireLock(lock, info({ upgradeId: 'u-3' }), log);
    expect(readLock(lock)?.upgradeId).toBe('u-3');
    again();
    expect(fs.readdirSync(path.dirname(lock))).toEqual([]);
  });

  it('replaces a stale lock whose process is gone', async () => {
    const lock = path.join(tmp.dir, 'dp.lock');
    const dead = await deadPid();
    fs.writeFileSync(lock, JSON.stringify(info({ pid: dead, upgradeId: 'crashed' })));
    const release = acquireLock(lock, info(), log);
    expect(readLock(lock)).toEqual({ ...info(), startTime: processRef(process.pid)!.startTime });
    release();
    expect(fs.existsSync(lock)).toBe(false);
  });

  it('leaves a lock alone on release once another upgrade has taken it over', () => {
    const lock = path.join(tmp.dir, 'dp.lock');
    const release = acquireLock(lock, info(), log);
    // as if a second orchestrator judged us dead and took the lock
    fs.writeFileSync(lock, JSON.stringify(info({ upgradeId: 'theirs' })));
    release();
    expect(readLock(lock)?.upgradeId).toBe('theirs');
  });

  it('refuses a lock file that is not a ziu lock', () => {
    const lock = path.join(tmp.dir, 'dp.lock');
    fs.writeFileSync(lock, 'garbage');
    const err = thrown(() => acquireLock(lock, info(), log));
    expect(err.code).toBe('ERR_ZIU_LOCK');
    expect(err.message).toBe(`upgrade lock ${lock} is not a ziu lock (it is not JSON); if no upgrade is running, remove it`);
    expect(fs.readFileSync(lock, 'utf8')).toBe('garbage');
    expect(fs.readdirSync(tmp.dir)).toEqual(['dp.lock']);
  });
});

describe('Journal', () => {
  it('round-trips create, update and read, bigints as hex', () => {
    const file = path.join(tmp.dir, 'upgrade', 'dp.journal.json');
    const j = Journal.create(file, doc());
    expect(Journal.read(file)).toEqual(doc());
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);

    j.update({ phase: 'start', newPid: 4242, ringBase: 0x7f00_dead_beefn, phases: [...j.doc.phases, { name: 'start', startedAt: '2025-01-02T03:04:06.000Z' }] });
    expect(j.doc.phase).toBe('start');
    expect(Journal.read(file)).toEqual({
      ...doc(),
      phase: 'start',
      newPid: 4242,
      ringBase: '0x7f00deadbeef',
      phases: [
        { name: 'preflight', startedAt: '2025-01-02T03:04:05.000Z' },
        { name: 'start', startedAt: '2025-01-02T03:04:06.000Z' },
      ],
    });
    expect(fs.readdirSync(path.dirname(file))).toEqual(['dp.journal.json']);
  });

  it('refuses to start over the journal of an unfinished upgrade', () => {
    const file = path.join(tmp.dir, 'dp.journal.json');
    Journal.create(file, doc({ phase: 'freeze' }));
    const err = thrown(() => Journal.create(file, doc({ upgradeId: 'u-2' })));
    expect(err.code).toBe('ERR_ZIU_JOURNAL_EXISTS');
    expect(err.message).toBe(`journal ${file} of an unfinished upgrade (u-1, phase freeze) is in the way; run 'ziu recover' first`);
    expect(Journal.read(file)?.upgradeId).toBe('u-1');
  });

  it('reads an absent journal as null', () => {
    expect(Journal.read(path.join(tmp.dir, 'none.journal.json'))).toBeNull();
  });

  it('reports a corrupt journal with its path', () => {
    const file = path.join(tmp.dir, 'dp.journal.json');
    fs.writeFileSync(file, '{"version": 1, "upgradeId": "u-1", "contr');
    const err = thrown(() => Journal.read(file));
    expect(err.code).toBe('ERR_ZIU_JOURNAL');
    expect(err.message).toMatch(new RegExp(`^upgrade journal ${file.replace(/[.]/g, '\\.')} is not valid JSON \\(.+\\); inspect it, and remove it if no upgrade needs recovering$`));
  });

  it('reports a journal of another version', () => {
    const file = path.join(tmp.dir, 'dp.journal.json');
    fs.writeFileSync(file, JSON.stringify({ ...doc(), version: 2 }));
    const err = thrown(() => Journal.read(file));
    expect(err.code).toBe('ERR_ZIU_JOURNAL');
    expect(err.message).toBe(`upgrade journal ${file} is invalid: version 2, this ziu reads version 1; inspect it, and remove it if no upgrade needs recovering`);
  });

  it('finish() keeps the document as the last upgrade for ziu status', () => {
    const control = '/run/ziu/dp.sock';
    const paths = upgradePaths(control, tmp.dir);
    expect(readLastUpgrade(control, tmp.dir)).toBeNull();
    const j = Journal.create(paths.journal, doc());
    j.update({ phase: 'commit' });
    j.finish({ outcome: 'committed', switchoverUs: 412n });
    expect(fs.existsSync(paths.journal)).toBe(false);
    expect(fs.readdirSync(paths.dir)).toEqual([path.basename(paths.last)]);
    const last = readLastUpgrade(control, tmp.dir);
    expect(last).toMatchObject({ version: 1, upgradeId: 'u-1', phase: 'commit', result: { outcome: 'committed', switchoverUs: '0x19c' }, finishedAt: expect.any(String) });
    expect(() => j.update({ phase: 'again' })).toThrow(`upgrade journal ${paths.journal} is finished; it cannot be updated`);

    // the next upgrade starts a fresh journal; the last one stays until it finishes
    Journal.create(paths.journal, doc({ upgradeId: 'u-2' })).finish({ outcome: 'rolled-back' });
    expect(readLastUpgrade(control, tmp.dir)).toMatchObject({ upgradeId: 'u-2', result: { outcome: 'rolled-back' } });
  });
});
