import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { ageTables, showTables } from '../tables/reader.js';
import { output, table } from './output.js';

function parseIdle(v: string): number {
  const n = Number(v);
  if (!/^\s*\d+\s*$/.test(v) || n > 86400) throw new UsageError(`--idle '${v}': use 0 to 86400 seconds`);
  return n;
}

export function tablesCommand(program: Command): void {
  const t = program
    .command('tables')
    .description("a datapath's bridge and flow tables, read from their files as the vRouter agent reads its own (docs/tables.md)");

  t.command('show')
    .description('list the learned MACs and the flows, with their ports, counters and ages (maps the table files read-only)')
    .requiredOption('--datapath <control socket>', 'control socket of the datapath (it says where its table files are)')
    .option('--max <n>', 'at most this many flows', (v) => Number(v), 100_000)
    .option('--json', 'print one JSON document')
    .action(async (flags: { datapath: string; max: number; json?: boolean }) => {
      if (!Number.isInteger(flags.max) || flags.max < 1) throw new UsageError('--max: a positive number of flows');
      const v = await showTables(flags.datapath, flags.max);
      output(flags.json === true).result(v, () => [
        `${v.instance} (pid ${v.pid}): bridge table format ${v.bridge.format}, ${v.bridge.live} of ${v.bridge.entries} MACs; flow table format ${v.flows.format}, ${v.flows.live} of ${v.flows.entries} flows (idle timeout ${v.flows.idleS} s)`,
        ...table(['MAC', 'PORT', 'AGE'], v.bridge.macs.map((m) => [m.mac, m.port, `${m.ageS}s`])),
        '',
        ...table(
          ['IN', 'PROTO', 'SRC', 'DST', 'ACTION', 'OUT', 'PACKETS', 'BYTES', 'IDLE'],
          v.flows.list.map((f) => [f.inPort, f.proto, f.src, f.dst, f.action + (f.pinned ? ' (pinned)' : '') + (f.marked ? ' (aging)' : ''), f.outPort ?? '-', f.packets, f.bytes, `${f.idleS}s`]),
        ),
      ]);
    });

  t.command('age')
    .description('age out idle flows: mark every flow idle at least --idle; the datapath removes those that stay idle (about a second more)')
    .requiredOption('--datapath <control socket>', 'control socket of the datapath')
    .option('--idle <seconds>', "idle at least this long (default: the flow table's own idle timeout, the rule the datapath applies by itself)", parseIdle)
    .option('--json', 'print one JSON document')
    .action(async (flags: { datapath: string; idle?: number; json?: boolean }) => {
      const r = await ageTables(flags.datapath, flags.idle);
      output(flags.json === true).result(r, () => [`marked ${r.marked} of ${r.live} flows idle for ${r.idleS} s or more: the datapath removes each that stays idle`]);
    });
}
