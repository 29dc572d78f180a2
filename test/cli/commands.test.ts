import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { Ledger } from '../../src/memfile/ledger.js';
import { processRef, waitGone } from '../../src/process/index.js';
import { fakeHost, sizeRel, type FakeHost } from '../hugepages/fake-host.js';
import { BUDDYINFO } from '../hugepages/fixtures.js';
import { hostSnapshot, noFreePages, pool, realHugepagesUnavailable } from '../helpers/hugepages.js';
import { tempDir } from '../helpers/tmp.js';
import { ziu } from './helpers.js';

const MiB = 1024 * 1024;

describe('hugepages status and plan on a fake kernel tree', () => {
  let fake: FakeHost;
  let env: Record<string, string>;

  beforeEach(async () => {
    fake = await fakeHost({
      global: { '2M': { nr: 512, free: 100, resv: 4 }, '1G': { nr: 2, free: 1 } },
      nodes: [{ '2M': { nr: 512, free: 100 }, '1G': { nr: 2, free: 1 } }],
      buddyinfo: BUDDYINFO,
    });
    env = {
      ZIU_LOG_LEVEL: 'warn',
      ZIU_SYSFS_ROOT: path.join(fake.root, 'sys'),
      ZIU_PROCFS_ROOT: path.join(fake.root, 'proc'),
      ZIU_HUGEPAGE_DIR_2M: path.join(fake.root, 'nothing-2M'),
      ZIU_HUGEPAGE_DIR_1G: path.join(fake.root, 'nothing-1G'),
      ZIU_TMPFS_DIR: path.join(fake.root, 'no-tmpfs'),
      // never the host's /run/ziu: status settles ziu's debt there
      ZIU_STATE_DIR: path.join(fake.root, 'state'),
    };
  });
  afterEach(() => fake.cleanup());

  it('status --json reports each page size, its nodes and the buddyinfo estimate', async () => {
    const r = await ziu(['hugepages', 'status', '--json'], { env });
    expect(r.exitCode).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.sizes).toEqual([
      { page_size: 2 * MiB, name: '2M', total: 512, free: 100, reserved: 4, surplus: 0, nodes: [{ node: 0, total: 512, free: 100, surplus: 0 }] },
      { page_size: 1024 * MiB, name: '1G', total: 2, free: 1, reserved: 0, surplus: 0, nodes: [{ node: 0, total: 2, free: 1, surplus: 0 }] },
    ]);
    expect(doc.buddy[0]).toMatchObject({ node: 0, blocks2_m: 1645 });
    expect(doc.memfiles).toEqual([]);
  });

  it('status without --json is a short report for a person', async () => {
    const r = await ziu(['hugepages', 'status'], { env });
    expect(r.stdout).toContain('2M pages: total 512, free 100, reserved 4, surplus 0');
    expect(r.stdout).toContain('  node 0: 1645 x 2M, 0 x 1G');
  });

  it("status shows ziu's debt and unfinished mem file entries, and gives back debt that is due", async () => {
    const ledger = new Ledger(env['ZIU_STATE_DIR']!);
    const self = processRef(process.pid)!;
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    const gone = processRef(sleeper.pid!)!;
    sleeper.kill('SIGKILL');
    expect(await waitGone(gone, 5000)).toBe(true);
    const debt = { pages: 3, memfile: 'vr1/flow', path: '/hp/vr1/flow', file: null, since: new Date().toISOString() };
    ledger.putDebt(2 * MiB, [{ ...debt, holders: [self] }]);
    ledger.put('vr9', 'pool-0', { pageSize: 2 * MiB, addedPages: 3, created: 'then', state: 'reserving', owner: gone });

    const text = (await ziu(['hugepages', 'status'], { env })).stdout;
    expect(text).toContain(`owed to the kernel (debt):\n  2M: 3 pages of vr1/flow (removed while in use, until pid ${self.pid} exits)`);
    expect(text).toContain(
      `unfinished mem file entries:\n  vr9/pool-0: 3 x 2M pages, reserving, orphaned: an unfinished create (pid ${gone.pid} is gone); 'ziu hugepages release' or 'ziu recover' gives them back`,
    );
    expect(await fake.count(`${sizeRel('2M')}/nr_hugepages`)).toBe(512);

    // its holder gone, the debt is due: status gives it back, and leaves the orphan to release and recover
    ledger.putDebt(2 * MiB, [{ ...debt, holders: [gone] }]);
    const doc = JSON.parse((await ziu(['hugepages', 'status', '--json'], { env })).stdout);
    expect(doc.settled).toEqual([expect.objectContaining({ kind: 'debt', memfile: 'vr1/flow', released_pages: 3, debt_pages: 0 })]);
    expect(doc.debt).toEqual([]);
    expect(doc.intents).toEqual([expect.objectContaining({ instance: 'vr9', role: 'pool-0', status: 'orphaned', added_pages: 3 })]);
    expect(await fake.count(`${sizeRel('2M')}/nr_hugepages`)).toBe(509);
  });

  it('plan answers fits-now, fits-after-reserve or does-not-fit, with exit 1 for the last', async () => {
    const now = await ziu(['hugepages', 'plan', '64M', '--json'], { env });
    expect(JSON.parse(now.stdout).verdict).toBe('fits-now');
    expect(now.exitCode).toBe(0);
    const later = await ziu(['hugepages', 'plan', '1G', '--json'], { env });
    expect(JSON.parse(later.stdout).verdict).toBe('fits-after-reserve');
    const never = await ziu(['hugepages', 'plan', '1G', '--free-only', '--json'], { env });
    expect(JSON.parse(never.stdout)).toMatchObject({ verdict: 'does-not-fit', rows: [{ pages_needed: 512, pages_free: 96 }] });
    expect(never.exitCode).toBe(1);
  });
});

describe('memfile create, list and remove on tmpfs', () => {
  let shm: string;
  let state: ReturnType<typeof tempDir>;
  let env: Record<string, string>;

  beforeEach(() => {
    shm = fs.mkdtempSync('/dev/shm/ziu-cli-');
    state = tempDir();
    env = { ZIU_LOG_LEVEL: 'warn', ZIU_TMPFS_DIR: shm, ZIU_STATE_DIR: state.dir };
  });
  afterEach(() => {
    fs.rmSync(shm, { recursive: true, force: true });
    state.remove();
  });

  it('create --json prints path, bytes, page_size and backing; list and remove agree', async () => {
    const r = await ziu(['memfile', 'create', 'vr1/pool-0', '--size', '3M', '--backing', 'tmpfs', '--json'], { env });
    expect(r.exitCode).toBe(0);
    const made = JSON.parse(r.stdout);
    expect(made).toMatchObject({ path: `${shm}/vr1/pool-0`, bytes: 4 * MiB, page_size: 4096, backing: 'tmpfs', requested: 3 * MiB });
    expect(fs.statSync(made.path).size).toBe(4 * MiB);

    const list = JSON.parse((await ziu(['memfile', 'list', '--json'], { env })).stdout);
    expect(list).toMatchObject([{ instance: 'vr1', role: 'pool-0', backing: 'tmpfs', bytes: 4 * MiB, allocated: 4 * MiB }]);

    const again = await ziu(['memfile', 'create', 'vr1/pool-0', '--size', '3M', '--backing', 'tmpfs'], { env });
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toBe(`ziu: mem file vr1/pool-0 already exists at ${shm}/vr1/pool-0: remove it first`);

    const rm = await ziu(['memfile', 'remove', 'vr1/pool-0', '--json'], { env });
    expect(JSON.parse(rm.stdout)).toMatchObject([{ instance: 'vr1', role: 'pool-0', released_pages: 0 }]);
    expect(fs.readdirSync(shm)).toEqual([]);
    const gone = await ziu(['memfile', 'remove', 'vr1/pool-0'], { env });
    expect(gone.exitCode).toBe(2);
    expect(gone.stderr).toMatch(/^ziu: no mem file vr1\/pool-0 \(looked in /);
  });
});

const noHugepages = realHugepagesUnavailable();
if (noHugepages) console.warn(`skipping real hugetlbfs CLI tests: ${noHugepages}`);

describe.skipIf(noHugepages !== null)('memfile on real hugepages through the CLI', () => {
  it('create prepopulates, status shows the owner, remove gives the pages back', async () => {
    const snap = hostSnapshot();
    const tmp = tempDir();
    const env = {
      ZIU_LOG_LEVEL: 'warn',
      ZIU_STATE_DIR: path.join(tmp.dir, 'state'),
      ZIU_HUGEPAGE_DIR_2M: path.join(tmp.dir, 'hp2M'),
    };
    try {
      const start = noFreePages();
      const flow = await ziu(['memfile', 'create', 'vr7/flow', '--size', '4M', '--json'], { env });
      expect(flow.exitCode).toBe(0);
      expect(JSON.parse(flow.stdout)).toMatchObject({ backing: 'hugetlbfs', bytes: 4 * MiB, page_size: 2 * MiB, added_pages: 2 });
      expect(pool()).toEqual({ total: start.total + 2, free: start.free });

      const bridge = await ziu(['memfile', 'create', 'vr7/bridge', '--size', '2M', '--vrouter-agent'], { env });
      expect(bridge.stdout).toContain(`huge_page_2M=${tmp.dir}/hp2M/vr7/flow ${tmp.dir}/hp2M/vr7/bridge`);

      const status = JSON.parse((await ziu(['hugepages', 'status', '--json'], { env })).stdout);
      expect(status.mounts).toContainEqual(expect.objectContaining({ dir: `${tmp.dir}/hp2M`, page_size: 2 * MiB }));
      expect(status.memfiles.map((f: { instance: string; role: string }) => `${f.instance}/${f.role}`).sort()).toEqual([
        'vr7/bridge',
        'vr7/flow',
      ]);

      const rm = await ziu(['memfile', 'remove', 'vr7', '--json'], { env });
      expect(JSON.parse(rm.stdout).map((r: { released_pages: number }) => r.released_pages).sort()).toEqual([1, 2]);
      expect(pool()).toEqual(start);
    } finally {
      snap.restore();
      tmp.remove();
    }
  });
});
