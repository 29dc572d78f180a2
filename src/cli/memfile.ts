import type { Command } from 'commander';
import { hasCode, UsageError } from '../errors.js';
import { formatBytes, parsePageSize, parseSize } from '../hugepages/index.js';
import { checkNamePart, parseMemFileName, vrouterAgentLines, type Backing } from '../memfile/index.js';
import { context } from './context.js';
import { output, table } from './output.js';

const BACKINGS = ['auto', 'hugetlbfs', 'tmpfs'] as const;

export function memfileCommand(program: Command): void {
  const mf = program
    .command('memfile')
    .description("create, list and remove a datapath instance's --mem-file files (allocated and zeroed up front)")
    .addHelpText(
      'after',
      '\nNames are <instance>/<role>, e.g. vr-2/pool-0, vr-2/flow, vr-2/bridge; characters [A-Za-z0-9._-].\n' +
        'A flow or bridge file is what ziu-datapath takes as --flow-table or --bridge-table (sized by the file; docs/tables.md).',
    );

  mf.command('create')
    .description('create <instance>/<role> and prepopulate it: every page allocated and zeroed now, not when the datapath starts')
    .argument('<name>', '<instance>/<role>')
    .requiredOption('--size <size>', 'bytes wanted, e.g. 64M or 1G (rounded up to whole pages)')
    .option('--page-size <size>', 'hugepage size: 2M or 1G', '2M')
    .option('--backing <kind>', `where the memory comes from: ${BACKINGS.join(', ')}`, 'auto')
    .option('--vrouter-agent', "also print the kernel-mode vRouter agent's huge_page_<size>= line for the instance's flow and bridge files")
    .option('--json', 'print one JSON document')
    .addHelpText(
      'after',
      '\nauto: hugetlbfs when running as root on a kernel with the page size, else tmpfs (said in the output).\n' +
        'Pages missing from the pool are reserved first; removing the file gives them back.',
    )
    .action(async (name: string, opts: { size: string; pageSize: string; backing: string; vrouterAgent?: boolean; json?: boolean }) => {
      const { instance, role } = parseMemFileName(name);
      const size = parseSize(opts.size);
      const pageSize = parsePageSize(opts.pageSize);
      if (!(BACKINGS as readonly string[]).includes(opts.backing)) {
        throw new UsageError(
          opts.backing === 'memfd'
            ? "backing 'memfd' lives only as long as the process that holds it: use tmpfs from the CLI"
            : `unknown backing '${opts.backing}': use ${BACKINGS.join(', ')}`,
        );
      }
      const ctx = context();
      const made = await ctx.store.create({ instance, role, size, pageSize, backing: opts.backing as Backing | 'auto' });
      const agent = opts.vrouterAgent ? vrouterAgentLines((await ctx.store.list()).filter((f) => f.instance === instance)) : undefined;
      output(!!opts.json).result({ ...made, vrouterAgent: agent }, () => [
        `${made.path} ${formatBytes(made.bytes)} ${made.backing} (${formatBytes(made.pageSize)} pages), prepopulated in ${made.prepopulateMs.toFixed(1)} ms`,
        ...made.notes.map((n) => `note: ${n}`),
        ...(agent ?? []),
      ]);
    });

  mf.command('list')
    .description('mem files under ziu’s hugetlbfs and tmpfs directories, with the instance that owns each')
    .option('--instance <id>', 'only this instance')
    .option('--vrouter-agent', "print the kernel-mode vRouter agent's huge_page lines for --instance")
    .option('--json', 'print one JSON document')
    .action(async (opts: { instance?: string; vrouterAgent?: boolean; json?: boolean }) => {
      if (opts.instance !== undefined) checkNamePart('instance', opts.instance);
      if (opts.vrouterAgent && opts.instance === undefined) throw new UsageError('--vrouter-agent needs --instance');
      const ctx = context();
      await ctx.store.settle({ what: 'memfile list', orphans: false, wait: false });
      const files = (await ctx.store.list()).filter((f) => opts.instance === undefined || f.instance === opts.instance);
      if (opts.vrouterAgent) {
        const lines = vrouterAgentLines(files);
        output(!!opts.json).result({ vrouterAgent: lines }, () => lines);
        return;
      }
      output(!!opts.json).result(files, () =>
        files.length === 0
          ? ['no mem files']
          : table(
              ['INSTANCE', 'ROLE', 'BACKING', 'SIZE', 'ALLOCATED', 'PATH'],
              files.map((f) => [f.instance, f.role, f.backing, formatBytes(f.bytes), formatBytes(f.allocated), f.path ?? '-']),
            ),
      );
    });

  mf.command('remove')
    .description(
      'remove <instance>/<role>, or every mem file of <instance>; hugepages ziu reserved for them go back to the kernel ' +
        '(pages a process still maps: once it exits, by the next ziu command)',
    )
    .argument('[name]', '<instance>/<role> or <instance>')
    .option('--unused', 'instead of a name: every mem file no process maps or holds open, such as what a stopped service leaves (its ExecStopPost; never while a datapath is starting)')
    .option('--json', 'print one JSON document')
    .action(async (name: string | undefined, opts: { unused?: boolean; json?: boolean }) => {
      if ((name === undefined) === !opts.unused) throw new UsageError('give <instance>[/<role>] or --unused (not both)');
      const store = context().store;
      let removed: Awaited<ReturnType<typeof store.remove>> = [];
      if (name !== undefined) {
        const { instance, role } = name.includes('/') ? parseMemFileName(name) : { instance: checkNamePart('instance', name), role: undefined };
        removed = await store.remove(instance, role);
      } else {
        for (const f of await store.unused()) {
          try {
            removed.push(...(await store.remove(f.instance, f.role)));
          } catch (err) {
            // removed by someone else meanwhile
            if (!hasCode(err, 'ERR_ZIU_NO_MEMFILE')) throw err;
          }
        }
      }
      output(!!opts.json).result(removed, () =>
        removed.length === 0 ? ['nothing to remove'] : removed.map(
          (r) =>
            `removed ${r.path} (${formatBytes(r.bytes)} ${r.backing})` +
            (r.releasedPages > 0 ? `, ${r.releasedPages} pages given back` : '') +
            (r.debtPages > 0
              ? `, ${r.debtPages} pages still in use${r.heldBy.length > 0 ? ` by pid ${r.heldBy.join(', ')}` : ''}: owed, given back by the next ziu command once they are free`
              : ''),
        ),
      );
    });
}
