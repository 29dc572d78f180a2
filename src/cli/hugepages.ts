import type { Command } from 'commander';
import { EXIT, UsageError } from '../errors.js';
import {
  formatBytes,
  pageSizeInfo,
  parsePageSize,
  parseSize,
  plan,
  readStatus,
  release,
  reserve,
  type HugepageHost,
} from '../hugepages/index.js';
import type { PoolReport, SettleResult } from '../memfile/index.js';
import { context, requireRoot } from './context.js';
import type { Run } from './main.js';
import { output, table } from './output.js';

interface SizeOpts {
  pageSize: string;
  node?: string;
  json?: boolean;
}

export function hugepagesCommand(program: Command, run: Run): void {
  const hp = program
    .command('hugepages')
    .description('show, plan, reserve and release the host hugepage pools')
    .addHelpText('after', '\nPage sizes: 2M and 1G. Counts are pool sizes (nr_hugepages), not increments.');

  hp.command('status')
    .description('pools per page size and NUMA node, hugetlbfs mounts, what buddyinfo says could still be reserved, and ziu mem files')
    .option('--json', 'print one JSON document')
    .action(async (opts: { json?: boolean }) => {
      const ctx = context();
      // Debt whose holders are gone is given back first; a busy pool lock defers that (status never waits).
      const settled = await ctx.store.settle({ what: 'hugepages status', orphans: false, wait: false });
      const status = await readStatus(ctx.host);
      const files = await ctx.store.list();
      const pool = ctx.store.poolReport();
      const doc = { ...status, memfiles: files, debt: pool?.debt ?? [], intents: pool?.intents ?? [], settled: settled.settlements, settleDeferred: settled.deferred };
      output(!!opts.json).result(doc, () => {
        const lines: string[] = [];
        for (const s of status.sizes) {
          lines.push(`${s.name} pages: total ${s.total}, free ${s.free}, reserved ${s.reserved}, surplus ${s.surplus}`);
          for (const n of s.nodes) lines.push(`  node ${n.node}: total ${n.total}, free ${n.free}, surplus ${n.surplus}`);
        }
        if (status.sizes.length === 0) lines.push('this kernel offers no hugepages');
        lines.push('hugetlbfs mounts:');
        if (status.mounts.length === 0) lines.push('  none');
        for (const m of status.mounts) lines.push(`  ${m.dir} (${formatBytes(m.pageSize)})`);
        lines.push('could still be reserved at runtime (buddyinfo):');
        for (const b of status.buddy) lines.push(`  node ${b.node}: ${b.blocks2M} x 2M, ${b.blocks1G} x 1G`);
        lines.push(`mem files (${files.length}):`);
        if (files.length > 0) {
          lines.push(
            ...table(
              ['  INSTANCE', 'ROLE', 'BACKING', 'SIZE', 'PATH'],
              files.map((f) => [`  ${f.instance}`, f.role, f.backing, formatBytes(f.bytes), f.path ?? '-']),
            ),
          );
        }
        lines.push(...poolLines(pool, settled));
        for (const n of status.notes) lines.push(`note: ${n}`);
        return lines;
      });
    });

  hp.command('plan')
    .description('whether memory of these sizes fits beside what is in use, before anything changes')
    .argument('<size...>', 'memory wanted, e.g. 1G 256M (each rounded up to whole pages)')
    .option('--page-size <size>', 'hugepage size: 2M or 1G', '2M')
    .option('--node <n>', 'NUMA node the memory must come from')
    .option('--free-only', 'count only pages free now, not pages the kernel could still reserve')
    .option('--json', 'print one JSON document')
    .addHelpText('after', '\nExit status: 0 fits (now or after a reservation), 1 does not fit, 2 bad input.')
    .action(async (sizes: string[], opts: SizeOpts & { freeOnly?: boolean }) => {
      const ctx = context();
      const pageSize = parsePageSize(opts.pageSize);
      const node = parseNode(opts.node);
      const wants = sizes.map((s) => ({ pageSize, bytes: parseSize(s), ...(node === undefined ? {} : { node }) }));
      const result = plan(await readStatus(ctx.host), wants, { reserveAtRuntime: !opts.freeOnly });
      output(!!opts.json).result(result, () => [
        `verdict: ${result.verdict}`,
        ...table(
          ['PAGES', 'NODE', 'NEEDED', 'FREE', 'ADDABLE', 'VERDICT', 'WHY'],
          result.rows.map((r) => [
            formatBytes(r.pageSize),
            r.node ?? 'all',
            r.pagesNeeded,
            r.pagesFree,
            r.pagesAddable,
            r.verdict,
            r.reason,
          ]),
        ),
      ]);
      if (result.verdict === 'does-not-fit') run.exitCode = EXIT.failed;
    });

  hp.command('reserve')
    .description('grow a hugepage pool to <pages> (never shrinks it); restores the old size if the kernel gives fewer')
    .argument('<pages>', 'pool size wanted, in pages')
    .option('--page-size <size>', 'hugepage size: 2M or 1G', '2M')
    .option('--node <n>', 'reserve on this NUMA node only')
    .option('--json', 'print one JSON document')
    .action(async (pagesText: string, opts: SizeOpts) => {
      const { ctx, target } = await poolTarget(pagesText, opts, 'hugepages reserve');
      const r = await ctx.store.withPoolLock('hugepages reserve', () => reserve(ctx.host, target));
      output(!!opts.json).result(r, () => [
        `${formatBytes(r.pageSize)} pages${r.node === null ? '' : ` on node ${r.node}`}: ${r.before} -> ${r.after}` +
          (r.compacted ? ' (after compacting memory)' : ''),
      ]);
    });

  hp.command('release')
    .description(
      'shrink a hugepage pool towards <pages> (default 0), never below the pages in use or promised; ' +
        'first gives back what ziu owes: pages of mem file creates or removes killed half-way, and debt whose holders are gone',
    )
    .argument('[pages]', 'pool size wanted, in pages', '0')
    .option('--page-size <size>', 'hugepage size: 2M or 1G', '2M')
    .option('--node <n>', 'release on this NUMA node only')
    .option('--json', 'print one JSON document')
    .action(async (pagesText: string, opts: SizeOpts) => {
      const { ctx, target } = await poolTarget(pagesText, opts, 'hugepages release');
      const settled = await ctx.store.settle({ what: 'hugepages release', orphans: true, wait: true });
      const r = await ctx.store.withPoolLock('hugepages release', () => release(ctx.host, target));
      output(!!opts.json).result({ ...r, settled: settled.settlements }, () => [
        ...settled.settlements.map((s) => `settled: ${s.text}`),
        `${formatBytes(r.pageSize)} pages${r.node === null ? '' : ` on node ${r.node}`}: ${r.before} -> ${r.after}` +
          (r.clamped ? ` (${r.floor} are in use or promised to mappings)` : ''),
      ]);
    });
}

/** What status says of ziu's share of the pool: debt, entries that are not mem files, what was settled now. */
function poolLines(pool: PoolReport | null, settled: SettleResult): string[] {
  if (pool === null) return ["ziu's ledger: not read (not root)"];
  const lines = settled.settlements.map((s) => `settled: ${s.text}`);
  if (settled.deferred !== null) lines.push(`not settled now: ${settled.deferred}`);
  lines.push(`owed to the kernel (debt):${pool.debt.length === 0 ? ' none' : ''}`);
  for (const d of pool.debt) {
    for (const r of d.records) {
      const waiting = r.waitingFor.length > 0 ? `, until pid ${r.waitingFor.join(', ')} exits` : ', due now';
      lines.push(`  ${formatBytes(d.pageSize)}: ${r.pages} pages of ${r.memfile} (removed while in use${waiting})`);
    }
  }
  lines.push(`unfinished mem file entries:${pool.intents.length === 0 ? ' none' : ''}`);
  for (const i of pool.intents) {
    const what = i.status === 'orphaned' ? "; 'ziu hugepages release' or 'ziu recover' gives them back" : i.status === 'stale' ? '; not given back by ziu' : '';
    lines.push(`  ${i.instance}/${i.role}: ${i.addedPages} x ${formatBytes(i.pageSize)} pages, ${i.state}, ${i.status}: ${i.why}${what}`);
  }
  return lines;
}

/** reserve and release: the pool size wanted, checked before anything changes, and root required. */
async function poolTarget(
  pagesText: string,
  opts: SizeOpts,
  what: string,
): Promise<{ ctx: ReturnType<typeof context>; target: { pageSize: number; total: number; node?: number } }> {
  const ctx = context();
  const pageSize = parsePageSize(opts.pageSize);
  const node = parseNode(opts.node);
  const total = await parseCount(ctx.host, pagesText, pageSize);
  requireRoot(ctx, what);
  return { ctx, target: { pageSize, total, ...(node === undefined ? {} : { node }) } };
}

export function parseNode(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,4}$/.test(text)) throw new UsageError(`invalid NUMA node '${text}': use a node number such as 0`);
  return Number(text);
}

/** A page count: a whole number, and no more pages than the machine has memory for. */
async function parseCount(host: HugepageHost, text: string, pageSize: number): Promise<number> {
  if (!/^\d+$/.test(text.trim())) {
    throw new UsageError(`invalid page count '${text}': use a whole number of pages, 0 or more`);
  }
  const n = Number(text.trim());
  const memTotal = await readMemTotal(host);
  const name = pageSizeInfo(pageSize).name;
  if (!Number.isSafeInteger(n) || (memTotal !== null && n * pageSize > memTotal)) {
    throw new UsageError(
      `page count '${text}' x ${name} is more than the machine's ${memTotal === null ? 'memory' : formatBytes(memTotal)}`,
    );
  }
  return n;
}

async function readMemTotal(host: HugepageHost): Promise<number | null> {
  try {
    const m = /^MemTotal:\s+(\d+) kB/m.exec(await host.readFile(`${host.procRoot}/meminfo`));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}
