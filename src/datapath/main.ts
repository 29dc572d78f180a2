import os from 'node:os';
import { Command, CommanderError } from 'commander';
import { EXIT, exitCodeFor, hasCode, UsageError } from '../errors.js';
import { handoverInfo, handoverInfoCodec } from '../handover/messages/index.js';
import { STATE_FORMATS, isStateFormat, type StateFormat } from '../handover/state.js';
import type { Fault } from './handover/index.js';
import { VERSION } from '../version.js';
import { checkConfig, GUEST_MEMORY_DEFAULTS, parseFlowFormats, parseGuestMemMax, parseGuestRegionsMax, parseTap, parseVhostUser, readConfigFile, reusableArgs, type DatapathConfig } from './config.js';
import { DEFAULT_GUEST_MEMORY } from './guest-memory.js';
import { parseCpuList, parsePriority } from '../sched/placement.js';
import { parseOffload, type OffloadSpec } from './offload.js';

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
    .option('--mac-entries <n>', 'MAC table entries when the bridge table is in memory (no --bridge-table)', (v) => Number(v))
    .option('--bridge-table <path>', 'the bridge table file (e.g. made by ziu memfile create <dp>/bridge): kept across restarts and handovers (default: in memory)')
    .option('--flow-table <path>', 'the flow table file (e.g. <dp>/flow); the same (default: in memory)')
    .option('--flow-formats <list>', 'flow table formats this instance reads; it serves the highest, e.g. 1 or 1,2 (default: 1,2)', (v) => parseFlowFormats(v))
    .option('--flow-idle <seconds>', 'a flow idle this long is aged out (written into a new flow table; default 300)', (v) => Number(v))
    .option('--worker-cpus <list>', 'CPUs for the packet worker thread, e.g. 1 or 2-3; the rest of the process stays off them (default: any CPU)', (v) => parseCpuList(v, '--worker-cpus'))
    .option('--worker-priority <1-99>', 'run the packet worker SCHED_FIFO at this priority; it still sleeps when idle (default: SCHED_OTHER)', (v) => parsePriority(v, '--worker-priority'))
    .option('--guest-mem-max <size>', "per port: the most guest memory a frontend's SET_MEM_TABLE may map, e.g. 64G; a larger table is refused (default 64G)", (v) => parseGuestMemMax(v))
    .option('--guest-regions-max <1-8>', 'per port: the most memory regions in one SET_MEM_TABLE (default 8)', (v) => parseGuestRegionsMax(v))
    .option('--offload <module=device>', 'hardware offload (docs/offload.md): an acceleration module and the device it drives, e.g. fake=<ziu-fakenic control socket>', (v) => parseOffload(v))
    .option('--config <file>', 'the same settings from a JSON or YAML file (flags override it)')
    .option('--state-formats <list>', `handover state formats to export and import, e.g. 1 or 1,2 (default: ${STATE_FORMATS.join(',')})`, parseFormats)
    .option('--handover-info', 'print the handover protocol and state formats this binary speaks as JSON, and exit')
    .addHelpText(
      'after',
      [
        '',
        'Readiness: READY=1 to $NOTIFY_SOCKET once every port is set up (sd_notify); STOPPING=1 on exit.',
        'Under systemd (Type=notify, NotifyAccess=all; examples/ziu-datapath.service, docs/systemd.md) a new instance',
        'started by `ziu upgrade` sends MAINPID=<its pid> when it commits, and the old one then exits without STOPPING=1.',
        'Config file: every flag but --mem-file as a key (control, memFiles, vhostUser, taps, instance, macEntries,',
        'workerCpus, workerPriority, guestMemMax, guestRegionsMax); flags given too override it (docs/datapath.md).',
        `Guest memory (per port, default ${GUEST_MEMORY_DEFAULTS}): only memfd, tmpfs and hugetlbfs files are mapped (FUSE, NFS or`,
        'disk files are refused: their page faults can block the packet worker); a frontend that shrinks its file later loses',
        'its connection, never the process.',
        'Handover (docs/handover-protocol.md): started with ZIU_HANDOVER=standby, the instance opens no port and',
        'listens for control on $ZIU_CONTROL_PATH until the handover commits; then it serves --control, and reports to',
        'the service manager named by $ZIU_SERVICE_NOTIFY_SOCKET.',
      ].join('\n'),
    )
    .configureOutput({ outputError: (str, write) => write(`ziu-datapath: ${str.replace(/^error: /, '').trimEnd()}\n`) })
    .exitOverride();
}

function parseFormats(v: string): StateFormat[] {
  const list = v.split(',').map(Number);
  if (list.length === 0 || !list.every(isStateFormat)) throw new UsageError(`--state-formats '${v}': use a list of ${STATE_FORMATS.join(', ')}`);
  return list as StateFormat[];
}

/** How long a SIGTERM or SIGINT that came during start-up waits for start-up to end. */
const START_STOP_BOUND_MS = 5000;

/** Parse flags, start the datapath, stop it on SIGTERM/SIGINT. Returns an exit code on failure to start. */
export async function main(argv: string[]): Promise<number | null> {
  const cmd = buildCommand();
  let config: DatapathConfig;
  let stateFormats: StateFormat[] | undefined;
  const standby = process.env['ZIU_HANDOVER'] === 'standby';
  try {
    cmd.parse(argv, { from: 'user' });
    const o = cmd.opts<{ control?: string; memFile?: string[]; vhostUser?: DatapathConfig['vhostUser']; tap?: DatapathConfig['taps']; instance?: string; macEntries?: number; config?: string; stateFormats?: StateFormat[]; handoverInfo?: boolean; bridgeTable?: string; flowTable?: string; flowFormats?: DatapathConfig['flowFormats']; flowIdle?: number; workerCpus?: number[]; workerPriority?: number; guestMemMax?: bigint; guestRegionsMax?: number; offload?: OffloadSpec }>();
    if (o.handoverInfo) {
      const formats = o.stateFormats ?? [...STATE_FORMATS];
      process.stdout.write(`${JSON.stringify(handoverInfoCodec.encode(handoverInfo(formats, o.flowFormats)))}\n`);
      return 0;
    }
    stateFormats = o.stateFormats;
    const file = o.config ? readConfigFile(o.config) : {};
    config = checkConfig({
      ...file,
      ...(o.control ? { control: o.control } : {}),
      ...(o.memFile ? { memFiles: o.memFile } : {}),
      ...(o.vhostUser ? { vhostUser: o.vhostUser } : {}),
      ...(o.tap ? { taps: o.tap } : {}),
      ...(o.instance ? { instance: o.instance } : {}),
      ...(o.macEntries !== undefined ? { macEntries: o.macEntries } : {}),
      ...(o.offload ? { offload: o.offload } : {}),
      ...(o.bridgeTable !== undefined ? { bridgeTable: o.bridgeTable } : {}),
      ...(o.flowTable !== undefined ? { flowTable: o.flowTable } : {}),
      ...(o.flowFormats !== undefined ? { flowFormats: o.flowFormats } : {}),
      ...(o.flowIdle !== undefined ? { flowIdleS: o.flowIdle } : {}),
      ...(o.guestMemMax !== undefined || o.guestRegionsMax !== undefined
        ? {
            guestMemory: {
              maxBytes: o.guestMemMax ?? file.guestMemory?.maxBytes ?? DEFAULT_GUEST_MEMORY.maxBytes,
              maxRegions: o.guestRegionsMax ?? file.guestMemory?.maxRegions ?? DEFAULT_GUEST_MEMORY.maxRegions,
            },
          }
        : {}),
      ...(o.workerCpus !== undefined || o.workerPriority !== undefined
        ? { worker: { cpus: o.workerCpus ?? file.worker?.cpus ?? null, priority: o.workerPriority ?? file.worker?.priority ?? null } }
        : {}),
    }, { standby });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    process.stderr.write(`ziu-datapath: ${(err as Error).message}\n`);
    // A bad socket path has always made ziu-datapath exit 1 (ziu exits 2): kept as it was.
    return hasCode(err, 'ERR_ZIU_SOCKET_PATH') ? EXIT.failed : exitCodeFor(err);
  }
  const faults = new Set((process.env['ZIU_FAULT'] ?? '').split(',').filter(Boolean) as Fault[]);
  // Loaded only to run: `--handover-info` (what ziu upgrade's preflight asks) must not pay for the
  // native addon, pino and the whole datapath, about half its start-up here.
  const { Datapath } = await import('./datapath.js');
  const dp = new Datapath(config, {
    standby,
    ...(process.env['ZIU_CONTROL_PATH'] ? { standbyControl: process.env['ZIU_CONTROL_PATH'] } : {}),
    ...(stateFormats ? { stateFormats } : {}),
    faults,
    testHooks: process.env['ZIU_TEST_HOOKS'] === '1',
    launch: {
      args: reusableArgs(argv),
      cwd: process.cwd(),
      // A standby's own NOTIFY_SOCKET is the orchestrator's; the service's comes separately.
      notifySocket: (standby ? process.env['ZIU_SERVICE_NOTIFY_SOCKET'] : process.env['NOTIFY_SOCKET']) || null,
    },
    ...(standby && process.env['ZIU_UPGRADE_ID'] ? { upgradeId: process.env['ZIU_UPGRADE_ID'] } : {}),
  });
  // Handlers first: READY=1 goes out at the end of start(), and a manager may stop us the
  // moment it hears it (installed after start, such a SIGTERM killed the process before its
  // handler was there). A signal during start-up stops once start-up is over, or, if start-up
  // does not end within START_STOP_BOUND_MS, exits as the signal would have; a failed start
  // exits by its own code.
  let up = false;
  const started = dp.start().then(() => {
    up = true;
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      const bound = up ? null : setTimeout(() => process.exit(128 + os.constants.signals[sig]), START_STOP_BOUND_MS).unref();
      void started.then(
        () => {
          if (bound !== null) clearTimeout(bound);
          return dp.stop().then(() => process.exit(0));
        },
        () => undefined,
      );
    });
  }
  try {
    await started;
  } catch (err) {
    process.stderr.write(`ziu-datapath: ${(err as Error).message}\n`);
    return hasCode(err, 'ERR_ZIU_SOCKET_PATH') ? EXIT.failed : exitCodeFor(err);
  }
  return null;
}
