import fs from 'node:fs';
import path from 'node:path';
import { DATAPATH_BIN } from '../../src/datapath/bin.js';
import { startProbe, type ProbeReport } from '../../src/probe/index.js';
import { processAlive } from '../../src/process/index.js';
import { Peer } from '../../src/upgrade/peer.js';
import { ziu, type CliResult } from '../cli/helpers.js';
import { startDatapath, startServiceDatapath, type DatapathOptions, type RunningDatapath, type ServiceOptions } from './datapath.js';
import { hostSnapshot, realHugepagesUnavailable } from './hugepages.js';


export interface Rig {
  dp: RunningDatapath;
  /** ZIU_STATE_DIR for the orchestrator: journal, lock, ledger, the new instance's log */
  stateDir: string;
  probe: { stop(): Promise<ProbeReport> } | null;
  /** the new datapath's command line, as --new takes it */
  newCommand(extra?: string): string;
  /** `ziu upgrade --control <old> --new <cmd> --json ...`, with the rig's state dir */
  upgrade(args?: string[], env?: Record<string, string>): Promise<CliResult & { report: Record<string, unknown> }>;
  cli(args: string[], env?: Record<string, string>): Promise<CliResult>;
  /** pids of every process started, to make sure none is left */
  pids: Set<number>;
  cleanup(): Promise<void>;
}

/** A datapath with ports a and b, the probe sending a -> b through it, and an orchestrator state dir. */
export async function startRig(
  o: {
    rate?: number;
    dp?: DatapathOptions;
    datapathArgs?: string[];
    probe?: boolean;
    queues?: number;
    /** started as a service manager starts it, with its NOTIFY_SOCKET */
    service?: ServiceOptions;
    /** table files made with `ziu memfile create` (hugepages as root unless backing 'tmpfs'), given as --bridge-table and --flow-table */
    tables?: { bridge: string; flow: string; backing?: 'auto' | 'tmpfs' };
    /**
     * Restore nr_hugepages and unmount new hugetlbfs mounts at cleanup (default true). The pool and the
     * mounts are the host's: on a host shared with other test runs, false leaves that to `memfile remove`,
     * which gives back exactly the pages this rig's files took.
     */
    hugepageSnapshot?: boolean;
  } = {},
): Promise<Rig> {
  // As root the orchestrator reserves hugepages and mounts hugetlbfs: both go back as they were.
  // The orchestrators of a rig mount at ziu's default directories (ZIU_HUGEPAGE_DIR_* unset): only those are the rig's.
  const snapshot = realHugepagesUnavailable() === null && o.hugepageSnapshot !== false ? hostSnapshot(2048, { mountsUnder: '/dev/hugepages-ziu-' }) : null;
  const stateDir = fs.mkdtempSync('/tmp/ziu-state-');
  // tmpfs mem files of this rig: a directory of its own on a tmpfs
  const tmpfsDir = path.join('/dev/shm', `ziu-rig-${path.basename(stateDir).replace(/^ziu-state-/, '')}`);
  const env = (extra: Record<string, string> = {}) => ({ ZIU_STATE_DIR: stateDir, ZIU_TMPFS_DIR: tmpfsDir, ZIU_LOG_LEVEL: 'warn', ...extra });
  // Table files made as an operator makes them (hugepages as root, else tmpfs): `ziu memfile create rig/bridge|flow`.
  const tableArgs: string[] = [];
  let dp: RunningDatapath;
  try {
    for (const kind of o.tables ? (['bridge', 'flow'] as const) : []) {
      // The hugetlbfs mount is the host's: a name of this rig's own.
      const name = `rig-${path.basename(stateDir).replace(/^ziu-state-/, '')}/${kind}`;
      const r = await ziu(['memfile', 'create', name, '--size', o.tables![kind], '--backing', o.tables!.backing ?? 'auto', '--json'], { env: env() });
      if (r.exitCode !== 0) throw new Error(`ziu memfile create ${name}: ${r.stderr}`);
      tableArgs.push(`--${kind}-table`, (JSON.parse(r.stdout) as { path: string }).path);
    }
    const extraArgs = [...(o.datapathArgs ?? o.dp?.extraArgs ?? []), ...tableArgs];
    // As a service manager starts it (service), or as an orchestrator does.
    dp = o.service ? await startServiceDatapath(o.service) : await startDatapath({ ...o.dp, ...(extraArgs.length > 0 ? { extraArgs } : {}) });
  } catch (err) {
    if (o.tables) await ziu(['memfile', 'remove', `rig-${path.basename(stateDir).replace(/^ziu-state-/, '')}`], { env: env() }).catch(() => undefined);
    fs.rmSync(stateDir, { recursive: true, force: true });
    fs.rmSync(tmpfsDir, { recursive: true, force: true });
    snapshot?.restore();
    throw err;
  }
  const pids = new Set<number>([dp.pid]);
  let n = 0;
  // 1024 descriptors, as the demo: room for the scheduling stalls of a 2-core host while a new runtime
  // starts beside the datapath. With 256, one CI run lost 63 of 127,422 frames in the 20-upgrade test;
  // where exactly is not pinned down yet (a follow-up in the issue note).
  const probe = o.probe === false ? null : await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: o.rate ?? 2000, size: 128, ringSize: 1024, queues: o.queues ?? 1 });
  const rig: Rig = {
    dp,
    stateDir,
    probe,
    pids,
    newCommand: (extra = '') => `${process.execPath} ${DATAPATH_BIN} --control ${dp.control} --instance new${++n} ${extra}`.trim(),
    cli: (args, extra) => ziu(args, { env: env(extra) }),
    async upgrade(args = [], extra = {}) {
      const r = await ziu(['upgrade', '--control', dp.control, '--new', rig.newCommand(), '--mem', '32M', '--json', ...args], { env: env(extra) });
      let report: Record<string, unknown> = {};
      try {
        report = JSON.parse(r.stdout) as Record<string, unknown>;
      } catch {
        // a crashed orchestrator prints nothing
      }
      const pid = (report['new'] as { pid?: number } | null | undefined)?.pid;
      if (pid) pids.add(pid);
      return { ...r, report };
    },
    async cleanup() {
      await probe?.stop().catch(() => undefined);
      await dp.stop().catch(() => undefined);
      for (const pid of pids) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
      // Whatever an orchestrator of this rig started and a test did not learn of: it carries our state dir.
      for (const pid of processesWithEnv(`ZIU_STATE_DIR=${stateDir}`)) process.kill(pid, 'SIGKILL');
      for (const f of fs.existsSync(path.join(stateDir, 'upgrade')) ? fs.readdirSync(path.join(stateDir, 'upgrade')) : []) {
        // the new instance's log helps when a test failed
        if (f.endsWith('.log') && process.env['ZIU_TEST_SHOW_LOGS']) process.stderr.write(fs.readFileSync(path.join(stateDir, 'upgrade', f), 'utf8'));
      }
      // Only what this rig made: the hugetlbfs mount is the host's, and other tests' files are on it too
      // (their ledger entries are in their own state dirs; ours in this one).
      const ours = (f: { instance: string; backing: string }): boolean => f.backing === 'tmpfs' || fs.existsSync(path.join(stateDir, 'memfiles', f.instance));
      await ziu(['memfile', 'list', '--json'], { env: env() }).then(async (r) => {
        for (const f of new Set(((JSON.parse(r.stdout || '[]') as Array<{ instance: string; backing: string }>) ?? []).filter(ours).map((f) => f.instance))) {
          await ziu(['memfile', 'remove', f], { env: env() });
        }
      }).catch(() => undefined);
      // Pages a removed file's (now killed) process still held are debt in this state dir: give
      // them back before the dir goes, or they stay in the pool for every later test.
      await ziu(['hugepages', 'status', '--json'], { env: env() }).catch(() => undefined);
      fs.rmSync(stateDir, { recursive: true, force: true });
      fs.rmSync(tmpfsDir, { recursive: true, force: true });
      snapshot?.restore();
    },
  };
  return rig;
}

export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Pids of the processes whose environment has this exact KEY=value. */
export function processesWithEnv(entry: string): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/environ`, 'utf8').split('\0').includes(entry)) out.push(Number(d));
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

/** The role the datapath answering on `control` says it has (hello). */
export async function role(control: string): Promise<string> {
  const peer = await Peer.connect('test', control);
  try {
    return (await peer.hello()).role;
  } finally {
    peer.close();
  }
}
