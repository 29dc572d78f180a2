/**
 * Files and paths another local user can touch (issue 10). As root, a real
 * unprivileged user (uid 65534) plants symlinks and directories where ziu
 * looks; ziu must refuse, say which path and why, and write or delete
 * nothing outside its own files. Meanwhile a real datapath forwards the
 * probe's frames and must not notice.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DATAPATH_BIN } from '../../src/datapath/bin.js';
import { acquireLock, upgradePaths } from '../../src/upgrade/journal.js';
import { logger } from '../../src/log.js';
import { ziu } from '../cli/helpers.js';
import { asNobody, isRoot, NOBODY, NOT_ROOT, startVictim, type Victim } from './victim.js';

if (!isRoot) console.log(`test/hostile/files.test.ts skipped: ${NOT_ROOT}`);

const MiB = 1024 * 1024;
const sha = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

describe.skipIf(!isRoot)('files and paths another local user can touch', () => {
  let victim: Victim;
  let shmPlant: string | null = null;

  beforeAll(async () => {
    victim = await startVictim();
  });
  afterAll(async () => {
    const report = await victim.stop();
    expect(report).toMatchObject({ lost: 0, duplicated: 0, reordered: 0 });
    expect(report.received).toBe(report.sent);
  });

  let made: string[] = [];
  const fresh = (): string => {
    const d = fs.mkdtempSync('/tmp/ziu-files-');
    fs.chmodSync(d, 0o711);
    made.push(d);
    return d;
  };
  /** a directory the other user owns, as if they had made it */
  const theirs = (parent: string, name: string, mode = 0o755): string => {
    const d = path.join(parent, name);
    fs.mkdirSync(d);
    fs.chownSync(d, NOBODY, NOBODY);
    fs.chmodSync(d, mode);
    return d;
  };
  /** a root-owned file full of 0xab: what must stay as it is */
  const precious = (file: string, bytes = 32 * MiB, mode = 0o644): string => {
    fs.writeFileSync(file, Buffer.alloc(bytes, 0xab), { mode });
    return sha(file);
  };

  afterEach(async () => {
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
    made = [];
    if (shmPlant) fs.rmSync(shmPlant, { recursive: true, force: true });
    shmPlant = null;
    await victim.checkHealthy();
  });

  const shm = (what: string): string => (shmPlant = `/dev/shm/ziu-files-${what}-${process.pid}`);
  it.each([
    {
      what: 'the --mem-file is a symlink (in /dev/shm)',
      plant: (_dir: string, target: string) => [`ln -s ${target} ${shm('mem')}`, shm('mem'), shm('mem'), 'a symlink; ziu never opens a file through one'],
    },
    {
      what: 'a directory on the way is a symlink (in /dev/shm)',
      plant: (_dir: string, target: string) => [`ln -s ${path.dirname(target)} ${shm('d')}`, `${shm('d')}/precious`, shm('d'), `a symlink owned by uid ${NOBODY}: another local user made it`],
    },
    {
      what: 'the --mem-file is a symlink in a directory the other user owns',
      plant: (dir: string, target: string) => [`ln -s ${target} ${dir}/mem`, `${dir}/mem`, dir, `owned by uid ${NOBODY}, not root: another local user made it`],
    },
  ])('ziu-datapath refuses a --mem-file when $what, planted by another user, and writes nothing', async ({ plant }) => {
    const home = fresh();
    const secret = path.join(home, 'secret');
    fs.mkdirSync(secret, { mode: 0o711 });
    const target = path.join(secret, 'precious');
    const before = precious(target, 32 * MiB, 0o600);
    const [cmd, memFile, logged, reason] = plant(theirs(home, 'plant'), target) as [string, string, string, string];
    await asNobody(cmd);

    const r = await execa(process.execPath, [DATAPATH_BIN, '--mem-file', memFile, '--control', path.join(home, 'ctl.sock'), '--vhost-user', `p=${home}/p.sock,server`, '--instance', 'hostile'], {
      reject: false,
      timeout: 5000,
      env: { ZIU_LOG_LEVEL: 'info' },
      stdin: 'ignore',
    });
    expect(r.timedOut, 'the datapath started on a planted --mem-file').toBe(false);
    expect(sha(target), 'the datapath wrote into a file it reached through a symlink').toBe(before);
    expect(r.exitCode).toBe(2);
    // The log line names the path and the reason.
    expect(r.stderr).toMatch(new RegExp(`"path":"${logged}".*"reason":"${reason.replace(/[.()]/g, '\\$&')}"`));
    expect(r.stderr).toContain(`refusing --mem-file ${memFile}: ${reason}`);
  });

  it('memfile create refuses a tmpfs directory another user made, and creates nothing where they point', async () => {
    const home = fresh();
    const etc = path.join(home, 'etc');
    fs.mkdirSync(etc, { mode: 0o755 });
    shmPlant = `/dev/shm/ziu-files-${process.pid}`;
    await asNobody(`mkdir -m 0777 ${shmPlant} && ln -s ${etc} ${shmPlant}/vr1`);

    const r = await ziu(['memfile', 'create', 'vr1/flow', '--size', '2M', '--backing', 'tmpfs'], {
      env: { ZIU_TMPFS_DIR: shmPlant, ZIU_STATE_DIR: path.join(home, 'state'), ZIU_LOG_LEVEL: 'info' },
    });
    expect(fs.readdirSync(etc), 'a root-owned file was made where the other user pointed').toEqual([]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`"path":"${shmPlant}".*"reason":"owned by uid ${NOBODY}, not root: another local user made it"`));
    expect(r.stderr).toContain(`ziu: refusing ${shmPlant}: owned by uid ${NOBODY}, not root: another local user made it`);
  });

  it('memfile create narrows the mode of its own tmpfs directory, and says so', async () => {
    const home = fresh();
    const dir = path.join(home, 'shm');
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o777);
    // Not tmpfs: refused after the directory check, which is what this test is about.
    const r = await ziu(['memfile', 'create', 'vr1/flow', '--size', '2M', '--backing', 'tmpfs'], { env: { ZIU_TMPFS_DIR: dir, ZIU_LOG_LEVEL: 'info' } });
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(r.stderr).toMatch(new RegExp(`"path":"${dir}","was":"777","now":"700".*"msg":"narrowed the mode of a ziu directory"`));
  });

  it('memfile remove never deletes a file another user owns', async () => {
    shmPlant = `/dev/shm/ziu-files-${process.pid}`;
    await asNobody(`mkdir -m 0755 ${shmPlant} ${shmPlant}/vr1 && head -c 4096 /dev/zero > ${shmPlant}/vr1/flow`);
    const home = fresh();
    const r = await ziu(['memfile', 'remove', 'vr1'], { env: { ZIU_TMPFS_DIR: shmPlant, ZIU_STATE_DIR: path.join(home, 'state'), ZIU_LOG_LEVEL: 'info' } });
    expect(fs.existsSync(`${shmPlant}/vr1/flow`), "memfile remove deleted another user's file").toBe(true);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`ziu: refusing ${shmPlant}: owned by uid ${NOBODY}, not root: another local user made it`);
  });

  it('the upgrade lock and journal are never written into a state directory another user made', async () => {
    const home = fresh();
    const state = theirs(home, 'state', 0o777);
    const target = path.join(home, 'target');
    fs.mkdirSync(target, { mode: 0o755 });
    await asNobody(`ln -s ${target} ${state}/upgrade`);
    const paths = upgradePaths(victim.dp.control, state);
    expect(() => acquireLock(paths.lock, { pid: process.pid, upgradeId: 'hostile', since: new Date().toISOString(), control: victim.dp.control }, logger('test'))).toThrow(
      `refusing ${state}: owned by uid ${NOBODY}, not root: another local user made it`,
    );
    expect(fs.readdirSync(target), 'a lock was made where the other user pointed').toEqual([]);
  });

  it('ziu recover and ziu status never act on a journal or lock from a state directory another user made', async () => {
    const home = fresh();
    const state = theirs(home, 'state', 0o777);
    const paths = upgradePaths(victim.dp.control, state);
    // What another user would plant: a journal that names the datapath as a dead upgrade's new instance.
    await asNobody(`mkdir -p ${paths.dir} && printf '%s' '${JSON.stringify({ version: 1, upgradeId: 'forged', control: victim.dp.control, phase: 'transfer', phases: [], newPid: victim.dp.pid, newControl: victim.dp.control })}' > ${paths.journal}`);
    const env = { ZIU_STATE_DIR: state, ZIU_LOG_LEVEL: 'warn' };
    const rec = await ziu(['recover', '--control', victim.dp.control, '--json'], { env });
    expect(rec.exitCode, rec.stderr).toBe(2);
    expect(rec.stderr).toContain(`refusing ${state}: owned by uid ${NOBODY}`);
    const st = await ziu(['status', '--control', victim.dp.control], { env });
    expect(st.exitCode).toBe(2);
    expect(st.stderr).toContain(`refusing ${state}`);
    // Nothing was done on its word: the datapath still serves.
    expect(() => process.kill(victim.dp.pid, 0)).not.toThrow();
    expect((await victim.dp.status()).role).toBe('active');
    await victim.checkHealthy();
  });
});
