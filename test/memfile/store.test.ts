import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { realHost } from '../../src/hugepages/index.js';
import { MemFileStore, parseMemFileName, vrouterAgentLines } from '../../src/memfile/index.js';
import { native } from '../../src/native/index.js';
import { openFds } from '../helpers/fds.js';
import { hostSnapshot, noFreePages, pool, realHugepagesUnavailable } from '../helpers/hugepages.js';
import { tempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

describe('mem file names', () => {
  it.each([
    ['', "mem file name '' must be <instance>/<role>, e.g. vr1/pool-0"],
    ['/flow', 'instance name is empty'],
    ['vr1/', 'role name is empty'],
    ['vr1/../etc', "mem file name 'vr1/../etc' contains '..'"],
    ['vr1/a..b', "role name 'a..b' contains '..'"],
    ['vr 1/flow', "instance name 'vr 1' has characters outside [A-Za-z0-9._-]"],
    ['vr1/fl$ow', "role name 'fl$ow' has characters outside [A-Za-z0-9._-]"],
    ['vr1/a/b', "mem file name 'vr1/a/b' must be <instance>/<role> with one '/'"],
  ])('%j is refused: %s', (name, message) => {
    expect(() => parseMemFileName(name)).toThrow(message);
  });

  it('accepts instance and role names operators use', () => {
    expect(parseMemFileName('vr-2024.1_a/pool-0')).toEqual({ instance: 'vr-2024.1_a', role: 'pool-0' });
  });
});

describe('tmpfs and memfd mem files', () => {
  let shm: ReturnType<typeof tempDir>;
  let state: ReturnType<typeof tempDir>;
  let store: MemFileStore;

  beforeEach(() => {
    shm = { dir: fs.mkdtempSync('/dev/shm/ziu-test-'), remove: () => fs.rmSync(shm.dir, { recursive: true, force: true }) };
    state = tempDir();
    store = new MemFileStore({ host: realHost(), tmpfsDir: shm.dir, stateDir: state.dir, privileged: false });
  });
  afterEach(() => {
    shm.remove();
    state.remove();
  });

  it('without root, auto picks tmpfs, says so, and prepopulates every page', async () => {
    const made = await store.create({ instance: 'vr1', role: 'pool-0', size: 3 * MiB + 1, pageSize: 2 * MiB });
    expect(made).toMatchObject({ backing: 'tmpfs', bytes: 4 * MiB, allocated: 4 * MiB, pageSize: 4096, requested: 3 * MiB + 1 });
    expect(made.notes).toContain(`not root: using tmpfs (${shm.dir}) instead of 2M hugepages`);
    expect(made.notes).toContain(`size rounded up from ${3 * MiB + 1} to ${4 * MiB} bytes (2M pages)`);
    const st = fs.statSync(made.path!);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.blocks * 512).toBe(4 * MiB);
    expect(await store.list()).toMatchObject([{ instance: 'vr1', role: 'pool-0', backing: 'tmpfs', bytes: 4 * MiB }]);
  });

  it('an existing mem file is refused and left untouched', async () => {
    const first = await store.create({ instance: 'vr1', role: 'flow', size: MiB, pageSize: 2 * MiB });
    await expect(store.create({ instance: 'vr1', role: 'flow', size: 8 * MiB, pageSize: 2 * MiB })).rejects.toThrow(
      `mem file vr1/flow already exists at ${first.path}: remove it first`,
    );
    expect(fs.statSync(first.path!).size).toBe(2 * MiB);
  });

  it('remove takes one role or a whole instance, and removes the empty instance directory', async () => {
    await store.create({ instance: 'vr1', role: 'flow', size: MiB, pageSize: 2 * MiB });
    await store.create({ instance: 'vr1', role: 'bridge', size: MiB, pageSize: 2 * MiB });
    await store.create({ instance: 'vr2', role: 'flow', size: MiB, pageSize: 2 * MiB });
    expect((await store.remove('vr1', 'flow')).map((r) => r.role)).toEqual(['flow']);
    expect((await store.remove('vr1')).map((r) => r.role)).toEqual(['bridge']);
    expect(fs.existsSync(path.join(shm.dir, 'vr1'))).toBe(false);
    expect((await store.list()).map((f) => `${f.instance}/${f.role}`)).toEqual(['vr2/flow']);
    await expect(store.remove('vr1', 'flow')).rejects.toThrow(/^no mem file vr1\/flow \(looked in /);
  });

  it('a tmpfs directory that is not on tmpfs is refused', async () => {
    const disk = tempDir();
    try {
      const s = new MemFileStore({ host: realHost(), tmpfsDir: disk.dir, stateDir: state.dir, privileged: false });
      await expect(s.create({ instance: 'vr1', role: 'flow', size: MiB, pageSize: 2 * MiB })).rejects.toThrow(
        new RegExp(`^${disk.dir} is not on tmpfs`),
      );
      expect(fs.readdirSync(disk.dir)).toEqual([]);
    } finally {
      disk.remove();
    }
  });

  it('memfd backing hands the caller an fd holding prepopulated memory', async () => {
    const before = openFds();
    const made = await store.create({ instance: 'probe', role: 'guest', size: 2 * MiB, pageSize: 2 * MiB, backing: 'memfd' });
    expect(made).toMatchObject({ backing: 'memfd', path: null, bytes: 2 * MiB, allocated: 2 * MiB });
    expect(openFds()).toBe(before + 1);
    native.close(made.fd!);
  });

  it('prints vRouter agent lines for the flow and bridge files, flow first', () => {
    const f = (role: string, pageSize: number) =>
      ({ instance: 'vr', role, backing: 'hugetlbfs', path: `/hp/vr/${role}`, bytes: pageSize, allocated: pageSize, pageSize, addedPages: 0 }) as const;
    expect(vrouterAgentLines([f('bridge', 2 * MiB), f('flow', 2 * MiB), f('pool-0', 2 * MiB)])).toEqual([
      'huge_page_2M=/hp/vr/flow /hp/vr/bridge',
    ]);
    expect(vrouterAgentLines([f('flow', 1024 * MiB), f('bridge', 1024 * MiB)])).toEqual(['huge_page_1G=/hp/vr/flow /hp/vr/bridge']);
  });
});

const noHugepages = realHugepagesUnavailable();
if (noHugepages) console.warn(`skipping real hugetlbfs mem file tests: ${noHugepages}`);

describe.skipIf(noHugepages !== null)('hugetlbfs mem files on the real kernel', () => {
  let snap: ReturnType<typeof hostSnapshot>;
  let mnt: ReturnType<typeof tempDir>;
  let state: ReturnType<typeof tempDir>;
  let store: MemFileStore;

  beforeEach(() => {
    snap = hostSnapshot();
    mnt = tempDir('ziu-hp-');
    state = tempDir();
    store = new MemFileStore({
      host: realHost(),
      // one mount, for 2 MiB pages only: a 1G listing must not find the same files (a kernel without 1G pages refuses them)
      hugetlbfsDir: (pageSize) => path.join(mnt.dir, pageSize === 2 * MiB ? 'mnt' : `mnt-${pageSize}`),
      stateDir: state.dir,
      privileged: true,
    });
  });
  afterEach(() => {
    snap.restore();
    mnt.remove();
    state.remove();
  });

  it('creating a file takes exactly its pages, prepopulated; removing it gives them back', async () => {
    const start = noFreePages();
    const made = await store.create({ instance: 'vr1', role: 'flow', size: 6 * MiB, pageSize: 2 * MiB });
    expect(made).toMatchObject({ backing: 'hugetlbfs', bytes: 6 * MiB, allocated: 6 * MiB, pageSize: 2 * MiB, addedPages: 3 });
    const after = pool();
    expect(after.total).toBe(start.total + 3);
    expect(after.free).toBe(start.free); // the 3 new pages are allocated already, not on first touch

    // the pages are zeroed and shared: write through one mapping, read through another
    const fd = fs.openSync(made.path!, 'r+');
    const a = new Uint8Array(native.mmap(fd, 6 * MiB, 0, 0) as ArrayBuffer);
    const b = new Uint8Array(native.mmap(fd, 6 * MiB, 0, 0) as ArrayBuffer);
    expect(a.every((x) => x === 0)).toBe(true);
    a[6 * MiB - 1] = 0xab;
    expect(b[6 * MiB - 1]).toBe(0xab);
    native.munmap(a.buffer as ArrayBuffer);
    native.munmap(b.buffer as ArrayBuffer);
    fs.closeSync(fd);
    expect(pool().free).toBe(start.free);

    const [removed] = await store.remove('vr1', 'flow');
    expect(removed).toMatchObject({ releasedPages: 3 });
    expect(pool()).toEqual(start);
  });

  it('with pages already free in the pool, HugePages_Free drops by exactly the file\'s pages and comes back', async () => {
    const start = pool();
    fs.writeFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', String(start.total + 8));
    const reserved = pool();
    expect(reserved.free).toBe(start.free + 8);
    const made = await store.create({ instance: 'vr1', role: 'pool-0', size: 10 * MiB, pageSize: 2 * MiB });
    expect(made.addedPages).toBe(0);
    expect(pool()).toEqual({ total: reserved.total, free: reserved.free - 5 });
    const [removed] = await store.remove('vr1', 'pool-0');
    expect(removed!.releasedPages).toBe(0); // ziu did not reserve them, so it does not release them
    expect(pool()).toEqual(reserved);
  });

  it('free pages already in the pool are used before reserving more', async () => {
    const start = noFreePages();
    fs.writeFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', String(start.total + 2));
    const made = await store.create({ instance: 'vr1', role: 'pool-0', size: 8 * MiB, pageSize: 2 * MiB });
    expect(made.addedPages).toBe(2);
    expect(pool().total).toBe(start.total + 4);
    await store.remove('vr1');
    // the two pages someone else reserved stay
    expect(pool().total).toBe(start.total + 2);
  });

  it('a failed create leaves nothing behind: no file, no mount, no reservation', async () => {
    const start = pool();
    // a file that does not fit the mount: hugetlbfs answers ENOSPC only past
    // its size= limit, so make the fallocate fail by a file name that exists
    await store.create({ instance: 'vr1', role: 'flow', size: 2 * MiB, pageSize: 2 * MiB });
    const mid = pool();
    await expect(store.create({ instance: 'vr1', role: 'flow', size: 4 * MiB, pageSize: 2 * MiB })).rejects.toThrow(
      /already exists/,
    );
    expect(pool()).toEqual(mid); // the 2 pages reserved for the second try were given back
    await store.remove('vr1');
    expect(pool()).toEqual(start);
  });
});
