import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { plan } from '../../src/hugepages/plan.js';
import { PAGE_1G, PAGE_2M } from '../../src/hugepages/sizes.js';
import { readStatus, type HugepageStatus } from '../../src/hugepages/status.js';
import { fakeHost, type FakeHost } from './fake-host.js';
import { BUDDYINFO } from './fixtures.js';

const M = 2 ** 20;
let fake: FakeHost;
let status: HugepageStatus;

beforeAll(async () => {
  // 2M: 40 free, 10 of them promised -> 30 usable; node 0: 20 free, node 1: 20 free.
  // Buddyinfo: node 0 1645 2M blocks, node 1 29; 3236 + 48 MiB in 4 MiB blocks.
  fake = await fakeHost({
    global: { '2M': { nr: 100, free: 40, resv: 10 }, '1G': { nr: 2, free: 1 } },
    nodes: [
      { '2M': { nr: 60, free: 20 }, '1G': { nr: 2, free: 1 } },
      { '2M': { nr: 40, free: 20 }, '1G': { nr: 0, free: 0 } },
    ],
    buddyinfo: BUDDYINFO,
  });
  status = await readStatus(fake.host);
});
afterAll(() => fake.cleanup());

describe('plan', () => {
  it('fits now when enough pages are free and not promised', () => {
    expect(plan(status, [{ pageSize: PAGE_2M, bytes: 60 * M }])).toEqual({
      verdict: 'fits-now',
      rows: [
        { pageSize: PAGE_2M, node: null, pagesNeeded: 30, pagesFree: 30, pagesAddable: 0, verdict: 'fits-now', reason: 'needs 30 x 2M pages (60M) in total; 30 free' },
      ],
    });
  });

  it('rounds bytes up to pages and fits after reserving from buddyinfo', () => {
    expect(plan(status, [{ pageSize: PAGE_2M, bytes: 60 * M + 1 }]).rows).toEqual([
      {
        pageSize: PAGE_2M,
        node: null,
        pagesNeeded: 31,
        pagesFree: 30,
        pagesAddable: 1674,
        verdict: 'fits-after-reserve',
        reason: 'needs 31 x 2M pages (62M) in total; 30 free, reserve 1 more (buddyinfo: 1674 free 2M blocks)',
      },
    ]);
  });

  it('checks a node on its own as well as the machine, and the worst row wins', () => {
    const p = plan(status, [
      { pageSize: PAGE_2M, bytes: 100 * M, node: 1 },
      { pageSize: PAGE_2M, bytes: 100 * M, node: 1 },
    ]);
    expect(p.verdict).toBe('does-not-fit');
    expect(p.rows.map((r) => [r.node, r.verdict, r.reason])).toEqual([
      [null, 'fits-after-reserve', 'needs 100 x 2M pages (200M) in total; 30 free, reserve 70 more (buddyinfo: 1674 free 2M blocks)'],
      [
        1,
        'does-not-fit',
        'needs 100 x 2M pages (200M) on node 1; 20 free and at most 29 more could be reserved now (buddyinfo: 29 free 2M blocks): short by 51 pages (102M)',
      ],
    ]);
  });

  it('treats 1G runtime capacity as a hint from max-order blocks', () => {
    // floor((3236 + 48) MiB / 1024 MiB) = 3 could be added; 1 free.
    expect(plan(status, [{ pageSize: PAGE_1G, bytes: 2 * PAGE_1G }]).rows).toEqual([
      {
        pageSize: PAGE_1G,
        node: null,
        pagesNeeded: 2,
        pagesFree: 1,
        pagesAddable: 3,
        verdict: 'fits-after-reserve',
        reason:
          'needs 2 x 1G pages (2G) in total; 1 free, reserve 1 more (not certain: 1G reservations at runtime need ' +
          'contiguous memory; buddyinfo shows at most 3284 MiB in max-order blocks)',
      },
    ]);
    expect(plan(status, [{ pageSize: PAGE_1G, bytes: 5 * PAGE_1G, node: 1 }]).rows[1]?.reason).toBe(
      'needs 5 x 1G pages (5G) on node 1; 0 free and at most 0 more could be reserved now (not certain: 1G reservations ' +
        'at runtime need contiguous memory; buddyinfo shows at most 48 MiB in max-order blocks): short by 5 pages (5G)',
    );
  });

  it('counts only free pages when runtime reservation is off', () => {
    expect(plan(status, [{ pageSize: PAGE_2M, bytes: 64 * M }], { reserveAtRuntime: false }).rows[0]).toMatchObject({
      verdict: 'does-not-fit',
      reason: 'needs 32 x 2M pages (64M) in total; 30 free and runtime reservation is off: short by 2 pages (4M)',
    });
  });

  it('says when the kernel lacks the size or the node', async () => {
    const small = await fakeHost({ global: { '2M': { nr: 0, free: 0 } }, nodes: null });
    try {
      const s = await readStatus(small.host);
      expect(plan(s, [{ pageSize: PAGE_1G, bytes: PAGE_1G }]).rows[0]?.reason).toBe(
        'needs 1 x 1G pages (1G) in total; this kernel has no 1G hugepages',
      );
      expect(plan(s, [{ pageSize: PAGE_2M, bytes: PAGE_2M, node: 0 }]).rows[1]?.reason).toBe(
        'needs 1 x 2M pages (2M) on node 0; there is no node 0 (sysfs lists no NUMA nodes)',
      );
    } finally {
      await small.cleanup();
    }
    expect(plan(status, [{ pageSize: PAGE_2M, bytes: PAGE_2M, node: 5 }]).rows[1]?.reason).toBe(
      'needs 1 x 2M pages (2M) on node 5; there is no node 5 (nodes are 0, 1)',
    );
  });

  it('fits now when nothing is wanted, and rejects bad wants by name', () => {
    expect(plan(status, [])).toEqual({ verdict: 'fits-now', rows: [] });
    expect(() => plan(status, [{ pageSize: 4096, bytes: 1 }])).toThrow(new UsageError("unknown page size '4K': use 2M or 1G"));
    expect(() => plan(status, [{ pageSize: PAGE_2M, bytes: 0 }])).toThrow(
      "invalid size '0' for 2M pages: use a whole number of bytes above 0",
    );
    expect(() => plan(status, [{ pageSize: PAGE_2M, bytes: 1, node: -1 }])).toThrow("invalid NUMA node '-1': use 0, 1, ...");
  });
});
