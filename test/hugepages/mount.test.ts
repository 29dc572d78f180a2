import { writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultMountDir, ensureMount, unmount } from '../../src/hugepages/mount.js';
import { PAGE_1G, PAGE_2M } from '../../src/hugepages/sizes.js';
import { readStatus } from '../../src/hugepages/status.js';
import { fakeHost, type FakeHost } from './fake-host.js';

let fake: FakeHost | undefined;
afterEach(async () => {
  await fake?.cleanup();
  fake = undefined;
});

describe('ensureMount', () => {
  it('creates the dir and mounts hugetlbfs when nothing is there, then reuses it', async () => {
    fake = await fakeHost();
    const dir = join(fake.root, 'mnt/huge 2M');
    expect(await ensureMount(fake.host, { pageSize: PAGE_2M, dir })).toEqual({ dir, pageSize: PAGE_2M, created: true });
    expect(existsSync(dir)).toBe(true);
    expect((await readStatus(fake.host)).mounts).toContainEqual({ dir, pageSize: PAGE_2M, options: ['rw', 'relatime', 'pagesize=2M'] });
    expect(await ensureMount(fake.host, { pageSize: PAGE_2M, dir: `${dir}/` })).toEqual({ dir, pageSize: PAGE_2M, created: false });
    expect(fake.writes.filter((w) => w.path === 'mount')).toHaveLength(1);
  });

  it('reuses a hugetlbfs mount without pagesize= when the default size matches', async () => {
    fake = await fakeHost();
    const dir = join(fake.root, 'plain');
    await writeFile(join(fake.root, 'proc/mounts'), `none ${dir} hugetlbfs rw,relatime 0 0\n`);
    expect(await ensureMount(fake.host, { pageSize: PAGE_2M, dir })).toMatchObject({ created: false });
  });

  it('refuses a dir where another file system is mounted', async () => {
    fake = await fakeHost();
    const dir = join(fake.root, 'run');
    await writeFile(join(fake.root, 'proc/mounts'), `tmpfs ${dir} tmpfs rw,nosuid 0 0\n`);
    await expect(ensureMount(fake.host, { pageSize: PAGE_2M, dir })).rejects.toMatchObject({
      code: 'ERR_ZIU_NOT_HUGETLBFS',
      message: `${dir} is a tmpfs mount (from tmpfs), not hugetlbfs`,
    });
    await expect(unmount(fake.host, dir)).rejects.toMatchObject({ code: 'ERR_ZIU_NOT_HUGETLBFS' });
    expect(fake.writes).toEqual([]);
  });

  it('refuses a hugetlbfs mount of the other page size, looking at the top of a stack', async () => {
    fake = await fakeHost();
    const dir = join(fake.root, 'huge');
    await writeFile(
      join(fake.root, 'proc/mounts'),
      `nodev ${dir} hugetlbfs rw,pagesize=2M 0 0\nnodev ${dir} hugetlbfs rw,pagesize=1024M 0 0\n`,
    );
    await expect(ensureMount(fake.host, { pageSize: PAGE_2M, dir })).rejects.toMatchObject({
      code: 'ERR_ZIU_HUGETLBFS_PAGE_SIZE',
      message: `${dir} is a hugetlbfs mount for 1G pages, not 2M`,
    });
  });

  it('refuses a page size the kernel lacks before touching anything', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 0, free: 0 } } });
    await expect(ensureMount(fake.host, { pageSize: PAGE_1G, dir: join(fake.root, 'g') })).rejects.toMatchObject({
      code: 'ERR_ZIU_HUGEPAGES_UNSUPPORTED',
    });
    expect(fake.writes).toEqual([]);
  });

  it('checks with statfs that the mount really is hugetlbfs of that size', async () => {
    fake = await fakeHost({ statfs: () => ({ type: 0x01021994, bsize: 4096, blocks: 0, bfree: 0 }) });
    const dir = join(fake.root, 'huge');
    await expect(ensureMount(fake.host, { pageSize: PAGE_2M, dir })).rejects.toMatchObject({
      code: 'ERR_ZIU_NOT_HUGETLBFS',
      message: `mounted hugetlbfs for 2M pages at ${dir}, but statfs reports f_type 0x1021994 with 4K blocks`,
    });
  });
});

describe('unmount', () => {
  it('unmounts hugetlbfs once and reports false when nothing is mounted', async () => {
    fake = await fakeHost();
    const dir = join(fake.root, 'huge');
    await ensureMount(fake.host, { pageSize: PAGE_1G, dir });
    expect(await unmount(fake.host, dir)).toBe(true);
    expect(await unmount(fake.host, dir)).toBe(false);
    expect((await readStatus(fake.host)).mounts).toEqual([]);
  });
});

describe('defaultMountDir', () => {
  it('uses /dev/hugepages-ziu-<size> unless the environment says otherwise', () => {
    expect(defaultMountDir(PAGE_2M, {})).toBe('/dev/hugepages-ziu-2M');
    expect(defaultMountDir(PAGE_1G, {})).toBe('/dev/hugepages-ziu-1G');
    expect(defaultMountDir(PAGE_1G, { ZIU_HUGEPAGE_DIR_1G: '/mnt/g' })).toBe('/mnt/g');
    expect(defaultMountDir(PAGE_2M, { ZIU_HUGEPAGE_DIR_1G: '/mnt/g', ZIU_HUGEPAGE_DIR_2M: '' })).toBe('/dev/hugepages-ziu-2M');
  });
});
