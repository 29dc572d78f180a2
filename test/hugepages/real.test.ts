import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HUGETLBFS_MAGIC, realHost } from '../../src/hugepages/host.js';
import { ensureMount, unmount } from '../../src/hugepages/mount.js';
import { HugepagesShortError, release, reserve } from '../../src/hugepages/reserve.js';
import { PAGE_1G, PAGE_2M } from '../../src/hugepages/sizes.js';
import { readStatus } from '../../src/hugepages/status.js';

// The real kernel: reserves a few pages, mounts hugetlbfs under /tmp, and puts
// everything back (afterAll runs even when an assertion fails).

const host = realHost();
const G2M = '/sys/kernel/mm/hugepages/hugepages-2048kB';
const G1G = '/sys/kernel/mm/hugepages/hugepages-1048576kB';
const skipReason =
  process.getuid?.() !== 0 ? 'not root' : !existsSync(G2M) ? `${G2M} is missing (kernel without hugepages)` : null;
if (skipReason !== null) console.log(`skipping real hugepage tests: ${skipReason}`);

async function nr(dir: string): Promise<number> {
  return Number((await host.readFile(join(dir, 'nr_hugepages'))).trim());
}

describe.skipIf(skipReason !== null)('hugepages on this kernel', () => {
  let original2M = 0;
  let original1G: number | null = null;
  let dir = '';

  beforeAll(async () => {
    original2M = await nr(G2M);
    original1G = existsSync(G1G) ? await nr(G1G) : null;
    dir = await mkdtemp(join(tmpdir(), 'ziu-hugetlbfs-'));
  });

  afterAll(async () => {
    const problems: string[] = [];
    for (const d of [join(dir, '1G'), dir]) {
      await unmount(host, d).catch((e: unknown) => problems.push(`unmount ${d}: ${String(e)}`));
    }
    await rm(dir, { recursive: true, force: true });
    const r2 = await release(host, { pageSize: PAGE_2M, total: original2M });
    if (r2.after !== original2M) problems.push(`2M pool is ${r2.after}, was ${original2M}`);
    if (original1G !== null) {
      const r1 = await release(host, { pageSize: PAGE_1G, total: original1G });
      if (r1.after !== original1G) problems.push(`1G pool is ${r1.after}, was ${original1G}`);
    }
    expect(problems).toEqual([]);
  });

  it('reserves 8 x 2M pages, mounts hugetlbfs, and gives both back', async () => {
    const r = await reserve(host, { pageSize: PAGE_2M, total: original2M + 8 });
    expect(r).toMatchObject({ before: original2M, requested: original2M + 8, after: original2M + 8 });
    const s = await readStatus(host);
    const size = s.sizes.find((x) => x.pageSize === PAGE_2M);
    expect(size?.total).toBe(original2M + 8);
    expect(size?.free).toBeGreaterThanOrEqual(8);
    expect(size?.nodes.reduce((n, x) => n + x.total, 0)).toBe(original2M + 8);

    expect(await ensureMount(host, { pageSize: PAGE_2M, dir })).toEqual({ dir, pageSize: PAGE_2M, created: true });
    expect(await ensureMount(host, { pageSize: PAGE_2M, dir })).toMatchObject({ created: false });
    expect((await readStatus(host)).mounts).toContainEqual(expect.objectContaining({ dir, pageSize: PAGE_2M }));
    expect(await host.statfs(dir)).toMatchObject({ type: HUGETLBFS_MAGIC, bsize: PAGE_2M });

    expect(await unmount(host, dir)).toBe(true);
    expect((await readStatus(host)).mounts.map((m) => m.dir)).not.toContain(dir);

    const back = await release(host, { pageSize: PAGE_2M, total: original2M });
    expect(back).toMatchObject({ before: original2M + 8, after: original2M, clamped: false });
  });

  it('reports a failed mount(8) with the command and its stderr', async () => {
    const missing = join(dir, 'no-such-dir');
    await expect(host.mount({ dir: missing, pageSize: PAGE_2M })).rejects.toMatchObject({
      code: 'ERR_ZIU_MOUNT',
      message: expect.stringMatching(new RegExp(`^mount -t hugetlbfs -o pagesize=2M nodev ${missing} failed: .*${missing}`)),
    });
  });

  it('reserves one 1G page when the kernel can find the contiguous memory', async (ctx) => {
    if (original1G === null) {
      console.log(`skipping 1G test: ${G1G} is missing`);
      ctx.skip();
      return;
    }
    try {
      await reserve(host, { pageSize: PAGE_1G, total: original1G + 1 });
    } catch (err) {
      if (!(err instanceof HugepagesShortError)) throw err;
      console.log(`skipping 1G test: ${err.message}`);
      ctx.skip();
      return;
    }
    expect(await nr(G1G)).toBe(original1G + 1);
    const gdir = join(dir, '1G');
    expect(await ensureMount(host, { pageSize: PAGE_1G, dir: gdir })).toMatchObject({ created: true });
    expect(await host.statfs(gdir)).toMatchObject({ type: HUGETLBFS_MAGIC, bsize: PAGE_1G });
    expect(await unmount(host, gdir)).toBe(true);
    expect(await release(host, { pageSize: PAGE_1G, total: original1G })).toMatchObject({ after: original1G });
  });
});
