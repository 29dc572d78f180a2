import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { realHost } from '../../src/hugepages/index.js';
import { Ledger } from '../../src/memfile/ledger.js';
import { PoolLock } from '../../src/memfile/pool-lock.js';
import { MemFileStore } from '../../src/memfile/index.js';
import { processRef, processState, waitGone, type ProcessRef } from '../../src/process/index.js';
import { hostSnapshot, noFreePages, pool, realHugepagesUnavailable } from '../helpers/hugepages.js';
import { tempDir } from '../helpers/tmp.js';
import { ZIU, ziu } from '../cli/helpers.js';

/**
 * ziu's share of the hugepage pool across real processes: the pool lock,
 * intents written before the pool is raised and settled after a crash, and
 * debt for pages a removed file's mapper still holds. Each test starts from
 * a pool with no free pages (noFreePages) so that every page it sees is one
 * ziu added, and puts the pool back whatever happens.
 */

const MiB = 1024 * 1024;
const MAP_FILE = path.resolve(import.meta.dirname, '..', 'fixtures', 'map-file.mjs');
const NR = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';

describe('the pool lock', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.remove());

  it('one holder at a time, also within one process; a waiter gives up naming the lock and its holder', async () => {
    const first = await PoolLock.acquire(tmp.dir, 'test one');
    const busy = PoolLock.tryAcquire(tmp.dir, 'test two');
    expect(busy).toMatchObject({ lock: null, holder: { pid: process.pid, what: 'test one' } });
    const err = await PoolLock.acquire(tmp.dir, 'test two', { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_ZIU_POOL_LOCKED' });
    expect((err as Error).message).toMatch(
      new RegExp(`^the hugepage pool lock ${tmp.dir}/hugepages/lock is held by pid ${process.pid} \\(test one, since .+\\): gave up after 0.1 s; `),
    );
    first.release();
    const second = PoolLock.tryAcquire(tmp.dir, 'test two');
    expect(second.lock).not.toBeNull();
    second.lock!.release();
    expect(fs.statSync(path.join(tmp.dir, 'hugepages')).mode & 0o777).toBe(0o700);
  });
});

describe('the ledger', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.remove());

  it('an entry that is not a ledger entry is an error naming its file, and left out of the listing', () => {
    const ledger = new Ledger(tmp.dir);
    ledger.put('vr1', 'flow', { pageSize: 2 * MiB, addedPages: 2, created: 'now', state: 'ready' });
    ledger.put('vr1', 'bad', { pageSize: 2 * MiB, addedPages: 2, created: 'now' });
    const bad = path.join(tmp.dir, 'memfiles', 'vr1', 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ pageSize: 3, addedPages: -1, created: 'now' }));
    expect(() => ledger.get('vr1', 'bad')).toThrow(`${bad}: pageSize 3 is not a hugepage size ziu knows`);
    expect(ledger.entries().map((e) => e.role)).toEqual(['flow']);
    fs.writeFileSync(bad, '{');
    expect(() => ledger.get('vr1', 'bad')).toThrow(new RegExp(`^${bad} is not JSON`));
  });
});

const noHugepages = realHugepagesUnavailable();
if (noHugepages) console.warn(`skipping real hugepage pool tests: ${noHugepages}`);

describe.skipIf(noHugepages !== null)('the hugepage pool across real ziu processes', () => {
  let snap: ReturnType<typeof hostSnapshot>;
  let tmp: ReturnType<typeof tempDir>;
  let env: Record<string, string>;
  let start: ReturnType<typeof pool>;
  let children: Array<{ pid?: number | undefined; kill(signal?: NodeJS.Signals): boolean }>;

  beforeEach(() => {
    snap = hostSnapshot();
    tmp = tempDir();
    env = { ZIU_LOG_LEVEL: 'warn', ZIU_STATE_DIR: path.join(tmp.dir, 'state'), ZIU_HUGEPAGE_DIR_2M: path.join(tmp.dir, 'hp2M') };
    children = [];
    start = noFreePages();
  });
  afterEach(async () => {
    try {
      for (const c of children) {
        c.kill('SIGCONT');
        c.kill('SIGKILL');
        if (c.pid !== undefined) await waitGone(c.pid, 5000);
      }
    } finally {
      snap.restore();
      tmp.remove();
    }
  });

  const entryFile = (memfile: string): string => path.join(tmp.dir, 'state', 'memfiles', `${memfile}.json`);
  const memPath = (memfile: string): string => path.join(tmp.dir, 'hp2M', memfile);

  /** A ziu process left running (the caller awaits it). */
  function startZiu(args: string[], more: Record<string, string> = {}) {
    const p = execa('node', [ZIU, ...args], { reject: false, env: { ...env, ...more }, timeout: 120_000 });
    children.push(p);
    return p;
  }

  async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
    for (const deadline = Date.now() + ms; !cond(); ) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  const stopped = (pid: number) => () => processState(pid) === 'T';

  async function statusJson(more: Record<string, string> = {}): Promise<Record<string, unknown> & { debt: unknown[]; intents: unknown[]; settled: unknown[] }> {
    const r = await ziu(['hugepages', 'status', '--json'], { env: { ...env, ...more } });
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  }

  /** A process that maps the file, as a datapath maps its --mem-file. */
  async function mapper(file: string): Promise<ChildProcess> {
    const c = spawn('node', [MAP_FILE, file], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(c);
    await once(c.stdout!, 'data');
    return c;
  }

  it.each([
    ['ziu recover', (control: string) => ['recover', '--control', control, '--json']],
    ['ziu hugepages release', () => ['hugepages', 'release', String(pool().total), '--json']],
  ])('a create SIGKILLed right after raising the pool: %s gives the pages back and drops the entry', async (_name, args) => {
    const killed = await ziu(['memfile', 'create', 'k/pool', '--size', '6M'], { env: { ...env, ZIU_TEST_KILL_AT: 'after-reserve' } });
    expect(killed.exitCode).toBe(-1); // by a signal
    expect(pool().total).toBe(start.total + 3);
    expect(JSON.parse(fs.readFileSync(entryFile('k/pool'), 'utf8'))).toMatchObject({ state: 'reserving', addedPages: 3 });

    // status shows it and leaves it alone: giving back an orphan's pages is for release and recover
    const status = await statusJson();
    expect(status.intents).toEqual([
      expect.objectContaining({ instance: 'k', role: 'pool', state: 'reserving', added_pages: 3, status: 'orphaned', why: expect.stringMatching(/^an unfinished create \(pid \d+ is gone\)$/) }),
    ]);
    expect(pool().total).toBe(start.total + 3);

    // release's own target is the pool as it is: only the settlement gives anything back
    const r = await ziu(args(path.join(tmp.dir, 'no-datapath.sock')), { env });
    expect(r.exitCode, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    const said = doc.actions ?? doc.settled.map((s: { text: string }) => s.text);
    expect(said).toEqual([expect.stringMatching(/^gave back 3 x 2M pages \(6M\) of k\/pool, an unfinished create \(pid \d+ is gone\)$/)]);
    expect(pool()).toEqual(start);
    expect(fs.existsSync(entryFile('k/pool'))).toBe(false);
  });

  it('two creates of different instances at once: the second waits for the pool lock, both increments are held, the removes return exactly the baseline', async () => {
    // a is caught between reading the pool and raising it: the moment a lost update needs
    const a = startZiu(['memfile', 'create', 'a/pool', '--size', '6M', '--json'], { ZIU_TEST_STOP_AT: 'after-read' });
    await until('a to stop after reading the pool', stopped(a.pid!));
    const b = startZiu(['memfile', 'create', 'b/pool', '--size', '4M', '--json'], { ZIU_LOG_LEVEL: 'info' });
    let bLog = '';
    b.stderr!.on('data', (d: Buffer) => (bLog += d.toString()));
    await until('b to wait for the pool lock', () => bLog.includes(`waiting for the hugepage pool lock held by pid ${a.pid} (memfile create a/pool`));
    expect(pool()).toEqual(start);

    a.kill('SIGCONT');
    const [ra, rb] = await Promise.all([a, b]);
    expect([ra.exitCode, rb.exitCode], `${ra.stderr}\n${rb.stderr}`).toEqual([0, 0]);
    expect([JSON.parse(String(ra.stdout)).added_pages, JSON.parse(String(rb.stdout)).added_pages]).toEqual([3, 2]);
    expect(pool()).toEqual({ total: start.total + 5, free: start.free });

    const removes = await Promise.all([startZiu(['memfile', 'remove', 'a', '--json']), startZiu(['memfile', 'remove', 'b', '--json'])]);
    expect(removes.map((r) => r.exitCode)).toEqual([0, 0]);
    expect(removes.map((r) => JSON.parse(String(r.stdout))[0].released_pages)).toEqual([3, 2]);
    expect(pool()).toEqual(start);
  });

  it('three creates and their removes, all at once, leave the pool exactly as it was', async () => {
    const sizes = { c: 3, d: 2, e: 1 };
    const creates = await Promise.all(Object.entries(sizes).map(([i, n]) => startZiu(['memfile', 'create', `${i}/pool`, '--size', `${2 * n}M`])));
    expect(creates.map((r) => r.exitCode), creates.map((r) => r.stderr).join('\n')).toEqual([0, 0, 0]);
    expect(pool()).toEqual({ total: start.total + 6, free: start.free });
    const removes = await Promise.all(Object.keys(sizes).map((i) => startZiu(['memfile', 'remove', i])));
    expect(removes.map((r) => r.exitCode)).toEqual([0, 0, 0]);
    expect(pool()).toEqual(start);
  });

  it('a failed create gives back exactly the pages it added, not the pool as it found it', async () => {
    const a = startZiu(['memfile', 'create', 'u/pool', '--size', '6M'], { ZIU_TEST_STOP_AT: 'after-reserve' });
    await until('the create to stop after raising the pool', stopped(a.pid!));
    expect(pool().total).toBe(start.total + 3);
    // meanwhile someone else adds 5 pages, and a file is in the way of the create
    fs.writeFileSync(NR, String(pool().total + 5));
    fs.mkdirSync(path.join(tmp.dir, 'hp2M', 'u'), { mode: 0o700 });
    fs.writeFileSync(memPath('u/pool'), '', { mode: 0o600 });
    a.kill('SIGCONT');
    const r = await a;
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`mem file u/pool already exists at ${memPath('u/pool')}`);
    expect(pool().total).toBe(start.total + 5); // the other 5 stay
    expect(fs.existsSync(entryFile('u/pool'))).toBe(false);
  });

  it.each(['status', 'release'])(
    'remove while a process maps the file: what cannot go back is debt, and hugepages %s settles it once that process exits',
    async (command) => {
      expect((await ziu(['memfile', 'create', 'm/pool', '--size', '6M'], { env })).exitCode).toBe(0);
      expect(pool()).toEqual({ total: start.total + 3, free: start.free });
      const child = await mapper(memPath('m/pool'));

      const rm = await ziu(['memfile', 'remove', 'm/pool', '--json'], { env });
      expect(rm.exitCode, rm.stderr).toBe(0);
      expect(JSON.parse(rm.stdout)).toEqual([expect.objectContaining({ released_pages: 0, debt_pages: 3, held_by: [child.pid] })]);
      expect(pool().total).toBe(start.total + 3);

      // while it maps them, nothing is given back, and status says who holds them
      const owed = await statusJson();
      expect(owed.settled).toEqual([]);
      expect(owed.debt).toEqual([{ page_size: 2 * MiB, pages: 3, records: [expect.objectContaining({ pages: 3, memfile: 'm/pool', waiting_for: [child.pid] })] }]);
      const text = await ziu(['hugepages', 'status'], { env });
      expect(text.stdout).toContain(`  2M: 3 pages of m/pool (removed while in use, until pid ${child.pid} exits)`);
      expect(pool().total).toBe(start.total + 3);

      child.stdin!.end();
      expect(await waitGone(child.pid!, 5000)).toBe(true);
      const settled =
        command === 'status'
          ? (await statusJson()).settled
          : JSON.parse((await ziu(['hugepages', 'release', String(pool().total), '--json'], { env })).stdout).settled;
      expect(settled).toEqual([expect.objectContaining({ kind: 'debt', memfile: 'm/pool', released_pages: 3, debt_pages: 0 })]);
      expect(pool()).toEqual(start);
      expect((await statusJson()).debt).toEqual([]);
      expect(fs.existsSync(path.join(tmp.dir, 'state', 'hugepages', 'debt-2M.json'))).toBe(false);
    },
  );

  it('a create in progress is never settled: its lock defers status, makes recover give up, and it finishes', async () => {
    const p = startZiu(['memfile', 'create', 'p/pool', '--size', '6M', '--json'], { ZIU_TEST_STOP_AT: 'after-reserve' });
    await until('the create to stop after raising the pool', stopped(p.pid!));

    const status = await statusJson();
    expect(status.intents).toEqual([expect.objectContaining({ instance: 'p', role: 'pool', status: 'in-progress', why: `pid ${p.pid} is creating it` })]);
    expect(status['settle_deferred']).toBe(`the hugepage pool lock is held by pid ${p.pid} (memfile create p/pool)`);

    const rec = await ziu(['recover', '--control', path.join(tmp.dir, 'no-datapath.sock'), '--json'], { env: { ...env, ZIU_POOL_LOCK_TIMEOUT_MS: '300' } });
    expect(rec.exitCode).toBe(0);
    expect(JSON.parse(rec.stdout).actions).toEqual([expect.stringMatching(new RegExp(`^warning: could not settle the hugepage pool: the hugepage pool lock .* is held by pid ${p.pid} \\(memfile create p/pool`))]);
    expect(pool().total).toBe(start.total + 3);

    p.kill('SIGCONT');
    const done = await p;
    expect(done.exitCode, done.stderr).toBe(0);
    expect(JSON.parse(fs.readFileSync(entryFile('p/pool'), 'utf8'))).toMatchObject({ state: 'ready', addedPages: 3 });
    expect(pool()).toEqual({ total: start.total + 3, free: start.free });
    expect((await ziu(['memfile', 'remove', 'p'], { env })).exitCode).toBe(0);
    expect(pool()).toEqual(start);
  });

  it('an intent whose owner is alive is left alone even with the lock free, and settled once the owner is gone', async () => {
    const owner = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(owner);
    const ref = processRef(owner.pid!) as ProcessRef;
    // what a create that has raised the pool looks like from outside
    fs.writeFileSync(NR, String(pool().total + 2));
    new Ledger(path.join(tmp.dir, 'state')).put('q', 'pool', { pageSize: 2 * MiB, addedPages: 2, created: new Date().toISOString(), state: 'allocating', owner: ref });

    const release = async () => JSON.parse((await ziu(['hugepages', 'release', String(pool().total), '--json'], { env })).stdout).settled;
    expect(await release()).toEqual([]);
    expect(pool().total).toBe(start.total + 2);
    expect((await statusJson()).intents).toEqual([expect.objectContaining({ instance: 'q', status: 'in-progress', why: `pid ${ref.pid} is creating it` })]);

    owner.kill('SIGKILL');
    expect(await waitGone(ref, 5000)).toBe(true);
    expect(await release()).toEqual([expect.objectContaining({ kind: 'unfinished-create', memfile: 'q/pool', released_pages: 2 })]);
    expect(pool()).toEqual(start);
    expect(fs.existsSync(entryFile('q/pool'))).toBe(false);
  });

  it('a remove killed after the file went is finished by the next settlement', async () => {
    const store = new MemFileStore({ host: realHost(), stateDir: env['ZIU_STATE_DIR']!, hugetlbfsDir: (p) => `${env['ZIU_HUGEPAGE_DIR_2M']}${p === 2 * MiB ? '' : '-1G'}`, privileged: true });
    await store.create({ instance: 'r', role: 'pool', size: 4 * MiB, pageSize: 2 * MiB });
    expect(pool().total).toBe(start.total + 2);
    // a remover that died: marked 'removing' by a process that is gone now, its file still there
    const dead = spawn('sleep', ['60'], { stdio: 'ignore' });
    const ref = processRef(dead.pid!) as ProcessRef;
    dead.kill('SIGKILL');
    expect(await waitGone(ref, 5000)).toBe(true);
    store.ledger.put('r', 'pool', { ...store.ledger.get('r', 'pool')!, state: 'removing', owner: ref });

    const r = await store.settle({ what: 'test', orphans: true, wait: true });
    expect(r.settlements).toEqual([expect.objectContaining({ kind: 'unfinished-remove', memfile: 'r/pool', releasedPages: 2, bytes: 4 * MiB })]);
    expect(r.settlements[0]!.text).toMatch(/^gave back 2 x 2M pages \(4M\) of r\/pool, an unfinished remove \(pid \d+ is gone\); removed its file$/);
    expect(fs.existsSync(memPath('r/pool'))).toBe(false);
    expect(pool()).toEqual(start);
  });
});
