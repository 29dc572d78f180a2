import { Command, CommanderError } from 'commander';
import { UsageError, ZiuError } from '../errors.js';
import { VERSION } from '../version.js';
import { checkConfig, parseTap, parseVhostUser, readConfigFile, type DatapathConfig } from './config.js';
import { Datapath } from './datapath.js';

const collect = <T>(parse: (s: string) => T) => (value: string, prev: T[] = []) => [...prev, parse(value)];

function buildCommand(): Command {
  return new Command('ziu-datapath')
    .description("ziu's reference datapath: a vhost-user backend with an L2 bridge between its ports, packet memory from --mem-file files")
    .version(VERSION)
    .option('--control <path>', 'control socket (status, shutdown, handover), mode 0600')
    .option('--mem-file <path>', 'prepopulated memory for packet buffers and tables (repeatable; see ziu memfile create)', collect(String))
    .option('--vhost-user <name=path[,server|client]>', 'a vhost-user port; server (default): we listen, client: we connect to a listening frontend (repeatable)', collect(parseVhostUser))
    .option('--tap <name=ifname>', 'a tap uplink (repeatable; needs root)', collect(parseTap))
    .option('--instance <id>', 'instance id shown in status and logs')
    .option('--mac-entries <n>', 'MAC table entries', (v) => Number(v))
    .option('--config <file>', 'the same settings from a JSON or YAML file (flags override it)')
    .addHelpText('after', '\nReadiness: READY=1 to $NOTIFY_SOCKET once every port is set up (sd_notify); STOPPING=1 on exit.')
    .configureOutput({ outputError: (str, write) => write(`ziu-datapath: ${str.replace(/^error: /, '').trimEnd()}\n`) })
    .exitOverride();
}

/** Parse flags, start the datapath, stop it on SIGTERM/SIGINT. Returns an exit code on failure to start. */
export async function main(argv: string[]): Promise<number | null> {
  const cmd = buildCommand();
  let config: DatapathConfig;
  try {
    cmd.parse(argv, { from: 'user' });
    const o = cmd.opts<{ control?: string; memFile?: string[]; vhostUser?: DatapathConfig['vhostUser']; tap?: DatapathConfig['taps']; instance?: string; macEntries?: number; config?: string }>();
    const file = o.config ? readConfigFile(o.config) : {};
    config = checkConfig({
      ...file,
      ...(o.control ? { control: o.control } : {}),
      ...(o.memFile ? { memFiles: o.memFile } : {}),
      ...(o.vhostUser ? { vhostUser: o.vhostUser } : {}),
      ...(o.tap ? { taps: o.tap } : {}),
      ...(o.instance ? { instance: o.instance } : {}),
      ...(o.macEntries !== undefined ? { macEntries: o.macEntries } : {}),
    });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    process.stderr.write(`ziu-datapath: ${(err as Error).message}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
  const dp = new Datapath(config);
  try {
    await dp.start();
  } catch (err) {
    process.stderr.write(`ziu-datapath: ${(err as Error).message}\n`);
    return err instanceof UsageError || (err instanceof ZiuError && err.code === 'ERR_ZIU_MEMFILE') ? 2 : 1;
  }
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => void dp.stop().then(() => process.exit(0)));
  }
  return null;
}
