import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sysError, UsageError } from '../../src/errors.js';
import { growBy, HugepagesShortError, release, reserve, shrinkBy } from '../../src/hugepages/reserve.js';
import { PAGE_1G, PAGE_2M } from '../../src/hugepages/sizes.js';
import { fakeHost, sizeRel, type FakeHost } from './fake-host.js';

let fake: FakeHost | undefined;
afterEach(async () => {
  await fake?.cleanup();
  fake = undefined;
});

const NR_2M = `${sizeRel('2M')}/nr_hugepages`;
const NR_2M_NODE0 = `${sizeRel('2M', 0)}/nr_hugepages`;
const COMPACT = 'proc/sys/vm/compact_memory';

describe('reserve', () => {
  it('grows the pool to the total asked when the kernel gives it all', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 10, free: 10 } } });
    const r = await reserve(fake.host, { pageSize: PAGE_2M, total: 512 });
    expect(r).toEqual({ pageSize: PAGE_2M, node: null, before: 10, requested: 512, after: 512, compacted: false });
    expect(fake.writes).toEqual([{ path: NR_2M, data: '512' }]);
    expect(await fake.count(`${sizeRel('2M')}/free_hugepages`)).toBe(512);
  });

  it('leaves a pool that is already big enough alone', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 600, free: 100 } } });
    const r = await reserve(fake.host, { pageSize: PAGE_2M, total: 512 });
    expect(r).toMatchObject({ before: 600, requested: 512, after: 600, compacted: false });
    expect(fake.writes).toEqual([]);
  });

  it('compacts memory once and retries when the kernel gives fewer pages', async () => {
    fake = await fakeHost({
      global: { '2M': { nr: 10, free: 10 } },
      onWrite: ({ asked, compactions }) => (compactions > 0 ? asked : 300),
    });
    const r = await reserve(fake.host, { pageSize: PAGE_2M, total: 512 });
    expect(r).toEqual({ pageSize: PAGE_2M, node: null, before: 10, requested: 512, after: 512, compacted: true });
    expect(fake.writes).toEqual([
      { path: NR_2M, data: '512' },
      { path: COMPACT, data: '1' },
      { path: NR_2M, data: '512' },
    ]);
  });

  it('restores the previous value and says exactly how short it fell on a node', async () => {
    fake = await fakeHost({
      global: { '2M': { nr: 10, free: 10 } },
      nodes: [{ '2M': { nr: 10, free: 10 } }],
      onWrite: ({ asked }) => Math.min(asked, 300),
    });
    const file = join(fake.root, NR_2M_NODE0);
    const err = await reserve(fake.host, { pageSize: PAGE_2M, total: 512, node: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HugepagesShortError);
    expect(err).toMatchObject({
      code: 'ERR_ZIU_HUGEPAGES_SHORT',
      pageSize: PAGE_2M,
      node: 0,
      requested: 512,
      got: 300,
      before: 10,
      restored: 10,
      file,
      message:
        'asked for 512 x 2M pages on node 0, the kernel gave 300 (was 10): memory is fragmented or short, ' +
        `and compacting it did not help; ${file} is back to 10. ` +
        'Free some memory, ask for fewer pages, or reserve them at boot (hugepagesz=2M hugepages=0:512)',
    });
    expect(fake.compactions()).toBe(1);
    expect(fake.writes.map((w) => `${w.path}=${w.data}`)).toEqual([
      `${NR_2M_NODE0}=512`,
      `${COMPACT}=1`,
      `${NR_2M_NODE0}=512`,
      `${NR_2M_NODE0}=10`,
    ]);
    expect(await fake.count(NR_2M_NODE0)).toBe(10);
    expect(await fake.count(NR_2M)).toBe(10);
  });

  it('names the whole machine and 1G boot parameters when a global 1G reservation falls short', async () => {
    fake = await fakeHost({ global: { '1G': { nr: 0, free: 0 } }, onWrite: ({ asked }) => Math.min(asked, 1) });
    const file = join(fake.root, sizeRel('1G'), 'nr_hugepages');
    await expect(reserve(fake.host, { pageSize: PAGE_1G, total: 4 })).rejects.toThrow(
      'asked for 4 x 1G pages, the kernel gave 1 (was 0): memory is fragmented or short, ' +
        `and compacting it did not help; ${file} is back to 0. ` +
        'Free some memory, ask for fewer pages, or reserve them at boot (hugepagesz=1G hugepages=4)',
    );
  });

  it('says so when even the restore does not bring the old value back', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 2, free: 2 } }, onWrite: () => 5 });
    const file = join(fake.root, NR_2M);
    await expect(reserve(fake.host, { pageSize: PAGE_2M, total: 8 })).rejects.toThrow(
      `asked for 8 x 2M pages, the kernel gave 5 (was 2): memory is fragmented or short, and compacting it did not help; ${file} is at 5, not back to 2.`,
    );
  });

  it('still retries when memory cannot be compacted, and says why', async () => {
    const compactError = sysError(-30, 'open', { path: '/proc/sys/vm/compact_memory' });
    fake = await fakeHost({ onWrite: ({ asked }) => Math.min(asked, 3), compactError });
    const file = join(fake.root, NR_2M);
    await expect(reserve(fake.host, { pageSize: PAGE_2M, total: 8 })).rejects.toThrow(
      'asked for 8 x 2M pages, the kernel gave 3 (was 0): memory is fragmented or short, and it could not be ' +
        `compacted (EROFS: read-only file system, open '/proc/sys/vm/compact_memory'); ${file} is back to 0.`,
    );
    expect(fake.writes.map((w) => w.data)).toEqual(['8', '1', '8', '0']);
  });

  it('does not compact or restore when the write itself is refused', async () => {
    fake = await fakeHost({
      onWrite: ({ path }) => {
        throw sysError(-13, 'write', { path });
      },
    });
    await expect(reserve(fake.host, { pageSize: PAGE_2M, total: 8 })).rejects.toMatchObject({ code: 'EACCES' });
    expect(fake.writes).toEqual([{ path: NR_2M, data: '8' }]);
  });

  it('writes the node file for a per-node reservation', async () => {
    fake = await fakeHost({
      global: { '2M': { nr: 0, free: 0 } },
      nodes: [{ '2M': { nr: 0, free: 0 } }, { '2M': { nr: 0, free: 0 } }],
    });
    const r = await reserve(fake.host, { pageSize: PAGE_2M, total: 64, node: 1 });
    expect(r).toMatchObject({ node: 1, before: 0, after: 64 });
    expect(fake.writes).toEqual([{ path: `${sizeRel('2M', 1)}/nr_hugepages`, data: '64' }]);
  });

  it('explains a missing page size, a missing node and a bad total', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 0, free: 0 } }, nodes: [{ '2M': { nr: 0, free: 0 } }] });
    const root = fake.root;
    await expect(reserve(fake.host, { pageSize: PAGE_1G, total: 1 })).rejects.toMatchObject({
      code: 'ERR_ZIU_HUGEPAGES_UNSUPPORTED',
      message: `this kernel has no 1G hugepages: ${root}/sys/kernel/mm/hugepages/hugepages-1048576kB is missing`,
    });
    await expect(reserve(fake.host, { pageSize: PAGE_2M, total: 1, node: 3 })).rejects.toMatchObject({
      code: 'ERR_ZIU_NO_NODE',
      message: `no 2M hugepages on NUMA node 3: ${root}/sys/devices/system/node/node3/hugepages/hugepages-2048kB is missing (nodes are 0)`,
    });
    await expect(reserve(fake.host, { pageSize: PAGE_2M, total: -1 })).rejects.toThrow(
      new UsageError("invalid total '-1': use a whole number of pages, 0 or more"),
    );
    await expect(reserve(fake.host, { pageSize: 3 * 2 ** 20, total: 1 })).rejects.toThrow("unknown page size '3M': use 2M or 1G");
  });
});

describe('release', () => {
  it('never goes below the pages in use plus the reserved ones', async () => {
    // in use = 100 - 40 = 60, promised = 10: floor 70.
    fake = await fakeHost({ global: { '2M': { nr: 100, free: 40, resv: 10 } } });
    const r = await release(fake.host, { pageSize: PAGE_2M });
    expect(r).toEqual({ pageSize: PAGE_2M, node: null, before: 100, requested: 0, after: 70, floor: 70, clamped: true });
    expect(fake.writes).toEqual([{ path: NR_2M, data: '70' }]);
  });

  it('goes to the total asked when it is above the floor, and never grows the pool', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 100, free: 40, resv: 10 } } });
    expect(await release(fake.host, { pageSize: PAGE_2M, total: 80 })).toMatchObject({ after: 80, clamped: false });
    expect(await release(fake.host, { pageSize: PAGE_2M, total: 200 })).toMatchObject({ before: 80, after: 80, clamped: false });
    expect(fake.writes).toEqual([{ path: NR_2M, data: '80' }]);
  });

  it('on a node gives back only free pages the global pool can spare beyond the reserved ones', async () => {
    fake = await fakeHost({
      global: { '2M': { nr: 100, free: 40, resv: 10 } },
      nodes: [{ '2M': { nr: 60, free: 20 } }, { '2M': { nr: 40, free: 20 } }],
    });
    // Node 1: spare = min(20 free, 40 - 10) = 20 -> floor 20.
    expect(await release(fake.host, { pageSize: PAGE_2M, node: 1 })).toMatchObject({ node: 1, before: 40, after: 20, floor: 20 });
    // Globally 20 free now, 10 of them promised: node 0 may give back 10 -> floor 50.
    expect(await release(fake.host, { pageSize: PAGE_2M, node: 0 })).toMatchObject({ node: 0, before: 60, after: 50, floor: 50, clamped: true });
    expect(await fake.count(NR_2M)).toBe(70);
  });
});

describe('growBy and shrinkBy: changes relative to the pool as it is now', () => {
  it('grow from the size read at the call, so pages another caller added since are kept', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 10, free: 10 } } });
    expect(await growBy(fake.host, { pageSize: PAGE_2M, pages: 3 })).toMatchObject({ before: 10, after: 13 });
    await fake.host.writeFile(join(fake.root, NR_2M), '20'); // someone else added 7
    expect(await shrinkBy(fake.host, { pageSize: PAGE_2M, pages: 3 })).toMatchObject({ before: 20, after: 17, clamped: false });
    expect(await fake.count(NR_2M)).toBe(17);
  });

  it('shrinkBy stops at the floor and says how many pages it could not give back', async () => {
    // in use = 10 - 2 = 8: only 2 can go back.
    fake = await fakeHost({ global: { '2M': { nr: 10, free: 2 } } });
    const r = await shrinkBy(fake.host, { pageSize: PAGE_2M, pages: 5 });
    expect(r).toMatchObject({ before: 10, requested: 5, after: 8, floor: 8, clamped: true });
  });

  it('refuses a count that is not a whole number of pages', async () => {
    fake = await fakeHost({ global: { '2M': { nr: 10, free: 10 } } });
    await expect(growBy(fake.host, { pageSize: PAGE_2M, pages: -1 })).rejects.toThrow("invalid pages '-1': use a whole number of pages, 0 or more");
    await expect(shrinkBy(fake.host, { pageSize: PAGE_2M, pages: 1.5 })).rejects.toThrow("invalid pages '1.5'");
  });
});
