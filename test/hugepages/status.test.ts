import { afterEach, describe, expect, it } from 'vitest';
import { PAGE_1G, PAGE_2M } from '../../src/hugepages/sizes.js';
import { readStatus } from '../../src/hugepages/status.js';
import { parseBuddyinfo } from '../../src/hugepages/procfs.js';
import { fakeHost, sizeRel, type FakeHost } from './fake-host.js';
import { BUDDYINFO, MEMINFO_1G_DEFAULT, MOUNTS } from './fixtures.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

let fake: FakeHost | undefined;
afterEach(async () => {
  await fake?.cleanup();
  fake = undefined;
});

describe('readStatus', () => {
  it('reads two page sizes, two nodes, mounts and buddyinfo', async () => {
    fake = await fakeHost({
      global: { '2M': { nr: 100, free: 40, resv: 10, surplus: 2 }, '1G': { nr: 2, free: 1 } },
      nodes: [
        { '2M': { nr: 60, free: 20, surplus: 2 }, '1G': { nr: 2, free: 1 } },
        { '2M': { nr: 40, free: 20 }, '1G': { nr: 0, free: 0 } },
      ],
      buddyinfo: BUDDYINFO,
      mounts: MOUNTS,
    });
    const s = await readStatus(fake.host);
    expect(s.defaultPageSize).toBe(PAGE_2M);
    expect(s.sizes).toEqual([
      {
        pageSize: PAGE_2M,
        name: '2M',
        total: 100,
        free: 40,
        reserved: 10,
        surplus: 2,
        nodes: [
          { node: 0, total: 60, free: 20, surplus: 2 },
          { node: 1, total: 40, free: 20, surplus: 0 },
        ],
      },
      {
        pageSize: PAGE_1G,
        name: '1G',
        total: 2,
        free: 1,
        reserved: 0,
        surplus: 0,
        nodes: [
          { node: 0, total: 2, free: 1, surplus: 0 },
          { node: 1, total: 0, free: 0, surplus: 0 },
        ],
      },
    ]);
    expect(s.mounts.map((m) => [m.dir, m.pageSize])).toEqual([
      ['/dev/hugepages', PAGE_2M],
      ['/mnt/huge 1g', PAGE_1G],
      ['/mnt/plain', PAGE_2M],
    ]);
    expect(s.buddy).toEqual([
      { node: 0, blocks2M: 1645, blocks1G: 0, maxOrder: 10, maxOrderBytes: 3236 * 2 ** 20 },
      { node: 1, blocks2M: 29, blocks1G: 0, maxOrder: 10, maxOrderBytes: 48 * 2 ** 20 },
    ]);
    expect(s.notes).toEqual([
      'node 0: 1G reservations at runtime need contiguous memory; buddyinfo shows at most 3236 MiB in max-order (4M) blocks',
      'node 1: 1G reservations at runtime need contiguous memory; buddyinfo shows at most 48 MiB in max-order (4M) blocks',
    ]);
  });

  it('gives a mount without pagesize= the default size from meminfo', async () => {
    fake = await fakeHost({ mounts: MOUNTS, meminfo: MEMINFO_1G_DEFAULT });
    const s = await readStatus(fake.host);
    expect(s.defaultPageSize).toBe(PAGE_1G);
    expect(s.mounts.find((m) => m.dir === '/mnt/plain')?.pageSize).toBe(PAGE_1G);
  });

  it('handles a kernel without 1G pages, without node dirs and without buddyinfo', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 8, free: 8 } }, nodes: null, buddyinfo: null });
    const s = await readStatus(fake.host);
    expect(s.sizes).toEqual([{ pageSize: PAGE_2M, name: '2M', total: 8, free: 8, reserved: 0, surplus: 0, nodes: [] }]);
    expect(s.buddy).toEqual([]);
    expect(s.notes).toEqual(['/proc/buddyinfo is not readable: cannot tell how many pages could still be reserved']);
  });

  it('tolerates whitespace around sysfs numbers and names a file with garbage', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 0, free: 0 } } });
    await writeFile(join(fake.root, sizeRel('2M'), 'nr_hugepages'), '  12 \n\n');
    expect((await readStatus(fake.host)).sizes[0]?.total).toBe(12);
    const file = join(fake.root, sizeRel('2M'), 'free_hugepages');
    await writeFile(file, 'twelve\n');
    await expect(readStatus(fake.host)).rejects.toThrow(`unexpected content in ${file}: 'twelve'`);
  });
});

describe('parseBuddyinfo', () => {
  it('counts 1G blocks when the kernel lists orders up to 18', () => {
    // order 17 = 1 block (256 x 2M), order 18 = 2 blocks (2 x 512 x 2M, 2 x 1G).
    const counts = Array.from({ length: 19 }, (_, order) => (order === 17 ? 1 : order === 18 ? 2 : 0));
    expect(parseBuddyinfo(`Node 0, zone   Normal ${counts.join(' ')}\n`)).toEqual([
      { node: 0, blocks2M: 1280, blocks1G: 2, maxOrder: 18, maxOrderBytes: 2 * 2 ** 30 },
    ]);
  });

  it('lists a node whose only zone is DMA with nothing to offer', () => {
    expect(parseBuddyinfo('Node 0, zone      DMA      0 0 0 0 0 0 0 0 1 1 3\n')).toEqual([
      { node: 0, blocks2M: 0, blocks1G: 0, maxOrder: 10, maxOrderBytes: 0 },
    ]);
  });
});
