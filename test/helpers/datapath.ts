import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { createSocket, type UnixDgramSocket } from 'unix-dgram';
import { ControlClient } from '../../src/control/client.js';
import { DATAPATH_BIN } from '../../src/datapath/bin.js';


export interface DatapathOptions {
  /** vhost-user ports: name -> mode ('server' default) */
  ports?: Record<string, 'server' | 'client'>;
  /** tap ports: name -> interface name */
  taps?: Record<string, string>;
  memBytes?: number;
  /** socket paths for some ports (default: <dir>/<name>.sock), e.g. where a frontend listens */
  socketPaths?: Record<string, string>;
  /** more ziu-datapath flags (e.g. --state-formats 1) */
  extraArgs?: string[];
  /** more environment (e.g. ZIU_TEST_HOOKS=1) */
  env?: Record<string, string>;
}

export interface RunningDatapath {
  dir: string;
  proc: ResultPromise;
  control: string;
  /** socket path of each vhost-user port */
  sock: Record<string, string>;
  /** every sd_notify datagram received, in order */
  notices: string[];
  status(): Promise<DatapathStatus>;
  /** shut down over the control socket and wait for the exit code; cleans up */
  stop(): Promise<number>;
}

export interface PortStatus {
  name: string;
  kind: string;
  connected?: boolean;
  disconnects?: number;
  lastError?: string | null;
  counters: { rxPackets: number; txPackets: number; dropsNoBuffer: number; dropsInvalid: number } | null;
}

export interface DatapathStatus {
  version: string;
  instance: string;
  pid: number;
  ports: PortStatus[];
  worker: { requested: { cpus: number[] | null; priority: number | null } | null; applied: { tid: number; policy: string; priority: number; cpus: number[] } };
}

/** A real ziu-datapath process with a tmpfs mem file, ready (READY=1 received) when this resolves. */
export async function startDatapath(o: DatapathOptions = {}): Promise<RunningDatapath> {
  const dir = fs.mkdtempSync('/dev/shm/ziu-dp-');
  const mem = path.join(dir, 'mem');
  const fd = fs.openSync(mem, 'w');
  fs.closeSync(fd);
  await execa('fallocate', ['-l', String(o.memBytes ?? 32 * 1024 * 1024), mem]);
  const control = path.join(dir, 'ctl.sock');
  const notifyPath = path.join(dir, 'notify.sock');
  const notices: string[] = [];
  const notify: UnixDgramSocket = createSocket('unix_dgram', (msg) => notices.push(msg.toString()));
  notify.bind(notifyPath);
  const sock: Record<string, string> = {};
  const args = ['--control', control, '--mem-file', mem, '--instance', 'test'];
  for (const [name, mode] of Object.entries(o.ports ?? { a: 'server', b: 'server' })) {
    sock[name] = o.socketPaths?.[name] ?? path.join(dir, `${name}.sock`);
    args.push('--vhost-user', `${name}=${sock[name]},${mode}`);
  }
  for (const [name, ifname] of Object.entries(o.taps ?? {})) args.push('--tap', `${name}=${ifname}`);
  args.push(...(o.extraArgs ?? []));
  const proc = execa('node', [DATAPATH_BIN, ...args], { reject: false, env: { NOTIFY_SOCKET: notifyPath, ZIU_LOG_LEVEL: process.env['ZIU_TEST_DP_LOG'] ?? 'warn', ...o.env }, stdout: 'inherit', stderr: 'inherit' });

  const cleanup = (): void => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    notify.close();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (!notices.some((n) => n.split('\n').includes('READY=1'))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      cleanup();
      throw new Error(`ziu-datapath did not become ready (exit ${proc.exitCode})`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }

  const call = async (op: string): Promise<Record<string, unknown>> => {
    const c = await ControlClient.connect(control);
    try {
      return (await c.call({ op })).body;
    } finally {
      c.close();
    }
  };
  return {
    dir,
    proc,
    control,
    sock,
    notices,
    status: async () => (await call('status'))['status'] as DatapathStatus,
    stop: async () => {
      try {
        if (proc.exitCode === null) await call('shutdown');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
        const r = await proc;
        clearTimeout(timer);
        return r.exitCode ?? -1;
      } finally {
        cleanup();
      }
    },
  };
}
