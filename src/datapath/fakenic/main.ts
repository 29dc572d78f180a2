import { Command, CommanderError } from 'commander';
import { exitCodeFor } from '../../errors.js';
import { logger } from '../../log.js';
import { VERSION } from '../../version.js';
import { Notifier } from '../notify.js';
import { FakeNic } from './nic.js';

/** ziu-fakenic: the fake SmartNIC for tests and CI (docs/offload.md). */
export async function main(argv: string[]): Promise<number | null> {
  const cmd = new Command('ziu-fakenic')
    .description('a fake SmartNIC for ziu-datapath --offload fake=<control>: VFs as socketpairs, a flow table of limited capacity, error injection')
    .version(VERSION)
    .requiredOption('--control <path>', 'its control socket (attach, vm, inject, status, shutdown), mode 0600')
    .option('--vfs <n>', 'virtual functions (1-64)', (v) => Number(v), 2)
    .option('--flows <n>', 'flow table entries (1-4096)', (v) => Number(v), 64)
    .configureOutput({ outputError: (str, write) => write(`ziu-fakenic: ${str.replace(/^error: /, '').trimEnd()}\n`) })
    .exitOverride();
  const log = logger('fakenic');
  let nic: FakeNic;
  try {
    cmd.parse(argv, { from: 'user' });
    const o = cmd.opts<{ control: string; vfs: number; flows: number }>();
    nic = await FakeNic.start({ ...o, log });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    process.stderr.write(`ziu-fakenic: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      nic.close();
      process.exit(0);
    });
  }
  await new Notifier().notify({ READY: 1, STATUS: `${nic.vfs} VFs`, MAINPID: process.pid });
  return null;
}
