import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { launchDatapath, type LaunchedDatapath } from '../../src/datapath/launch.js';
import type { Status } from '../../src/handover/messages/index.js';
import { logger } from '../../src/log.js';
import { launchDetached, processState } from '../../src/process/index.js';
import { DATAPATH_BIN } from '../../src/datapath/bin.js';
import { bindNotify, closeNotify } from '../../src/process/notify.js';
import { Peer } from '../../src/upgrade/peer.js';

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
  /** its stdout+stderr (the log) go to this file instead of the test's output */
  logFile?: string;
}

export interface RunningDatapath {
  dir: string;
  /** the ziu-datapath process */
  pid: number;
  control: string;
  /** socket path of each vhost-user port */
  sock: Record<string, string>;
  /** every sd_notify datagram received, in order */
  notices: string[];
  status(): Promise<Status>;
  /** shut down over the control socket and wait for the exit code; cleans up */
  stop(): Promise<number>;
}

/** A real ziu-datapath process with a tmpfs mem file, ready (READY=1 received) when this resolves. */
export async function startDatapath(o: DatapathOptions = {}): Promise<RunningDatapath> {
  const dir = fs.mkdtempSync('/dev/shm/ziu-dp-');
  const mem = path.join(dir, 'mem');
  const fd = fs.openSync(mem, 'w');
  fs.closeSync(fd);
  await execa('fallocate', ['-l', String(o.memBytes ?? 32 * 1024 * 1024), mem]);
  const control = path.join(dir, 'ctl.sock');
  const sock: Record<string, string> = {};
  const args = ['--mem-file', mem, '--instance', 'test'];
  for (const [name, mode] of Object.entries(o.ports ?? { a: 'server', b: 'server' })) {
    sock[name] = o.socketPaths?.[name] ?? path.join(dir, `${name}.sock`);
    args.push('--vhost-user', `${name}=${sock[name]},${mode}`);
  }
  for (const [name, ifname] of Object.entries(o.taps ?? {})) args.push('--tap', `${name}=${ifname}`);
  args.push(...(o.extraArgs ?? []));
  const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true });
  let dp: LaunchedDatapath;
  try {
    // Its output is the test's (no log file), its notices kept to the end (STOPPING=1).
    dp = await launchDatapath({
      control,
      args,
      env: { ZIU_LOG_LEVEL: process.env['ZIU_TEST_DP_LOG'] ?? 'warn', ...o.env },
      readyTimeoutMs: 10_000,
      notifyPath: path.join(dir, 'notify.sock'),
      keepNotify: true,
      ...(o.logFile !== undefined ? { logFile: o.logFile } : {}),
      what: 'ziu-datapath',
      log: logger('test-datapath'),
    });
  } catch (err) {
    cleanup();
    throw err;
  }
  // READY=1 arrives while the datapath is still in the tick that sent it, before it closes the
  // socket it sent from: once its main thread sleeps again, an fd count taken now holds.
  for (const deadline = Date.now() + 1000; processState(dp.pid) === 'R' && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 1));

  const status = async (): Promise<Status> => {
    const peer = await Peer.connect('test', control);
    try {
      return await peer.status();
    } finally {
      peer.close();
    }
  };
  return {
    dir,
    pid: dp.pid,
    control,
    sock,
    notices: dp.notices,
    status,
    stop: async () => {
      try {
        return (await dp.stop(5000)).code ?? -1;
      } finally {
        cleanup();
      }
    },
  };
}

/**
 * A second ziu-datapath beside `dp`, started as the new side of a handover
 * (standby, on its own control socket in dp's directory), and a peer on it.
 * `pid` is reported as soon as it is known, so that a test can stop it
 * whatever happens next.
 */
export async function startStandby(dp: RunningDatapath, pid: (pid: number) => void, env: Record<string, string> = {}): Promise<Peer> {
  const mem = path.join(dp.dir, 'mem-new');
  fs.writeFileSync(mem, Buffer.alloc(16 << 20));
  const control = path.join(dp.dir, 'standby.sock');
  const l = await launchDetached({
    argv: [process.execPath, DATAPATH_BIN, '--control', dp.control, '--mem-file', mem, '--instance', 'next'],
    env: { ZIU_HANDOVER: 'standby', ZIU_CONTROL_PATH: control, ZIU_LOG_LEVEL: 'warn', ...env },
    readyTimeoutMs: 10_000,
    logFile: path.join(dp.dir, 'next.log'),
    notifyPath: path.join(dp.dir, 'next.notify'),
    log: logger('test', {}),
  });
  pid(l.pid);
  return Peer.connect('new', control);
}

/** A unix datagram socket standing in for systemd's notify socket: every datagram, in order. */
export interface NotifyListener {
  path: string;
  messages: string[];
  /** resolves once a message satisfies `pred` (rejects after ms) */
  waitFor(pred: (msg: string) => boolean, ms?: number): Promise<string>;
  close(): void;
}

export function listenNotify(file: string): NotifyListener {
  const messages: string[] = [];
  const waiters = new Set<() => void>();
  const log = logger('test-notify');
  const sock = bindNotify(file, 'test service manager', log, (msg) => {
    messages.push(msg.toString('utf8'));
    for (const w of waiters) w();
  });
  return {
    path: file,
    messages,
    waitFor(pred, ms = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = messages.find(pred);
          if (m === undefined) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(m);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no such notify message within ${ms} ms; got ${JSON.stringify(messages)}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
    close: () => closeNotify(sock, file, log),
  };
}

export interface ServiceOptions {
  /** the service manager's notify socket (NOTIFY_SOCKET) */
  notify: NotifyListener;
  /** everything in <dir>/dp.yaml, paths relative to <dir>, and only `--config dp.yaml` on the command line, run in <dir> */
  configFile?: boolean;
}

/**
 * ziu-datapath started as systemd starts a Type=notify service: our child
 * (not an orchestrator's), NOTIFY_SOCKET naming the test's listener, ready
 * once READY=1 arrives there. Ports a and b, a tmpfs mem file, as startDatapath.
 */
export async function startServiceDatapath(o: ServiceOptions & { env?: Record<string, string> }): Promise<RunningDatapath> {
  const dir = fs.mkdtempSync('/dev/shm/ziu-svc-');
  const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true });
  const mem = path.join(dir, 'mem');
  fs.closeSync(fs.openSync(mem, 'w'));
  await execa('fallocate', ['-l', String(32 * 1024 * 1024), mem]);
  const control = path.join(dir, 'ctl.sock');
  const sock = { a: path.join(dir, 'a.sock'), b: path.join(dir, 'b.sock') };
  let args: string[];
  if (o.configFile) {
    fs.writeFileSync(path.join(dir, 'dp.yaml'), ['instance: svc', 'control: ctl.sock', 'memFiles: [mem]', 'vhostUser:', '  - a=a.sock', '  - b=b.sock', ''].join('\n'));
    args = ['--config', 'dp.yaml'];
  } else {
    args = ['--control', control, '--mem-file', mem, '--instance', 'svc', '--vhost-user', `a=${sock.a}`, '--vhost-user', `b=${sock.b}`];
  }
  const child = spawn(process.execPath, [DATAPATH_BIN, ...args], {
    cwd: dir,
    env: { ...process.env, ZIU_LOG_LEVEL: process.env['ZIU_TEST_DP_LOG'] ?? 'warn', ...o.env, NOTIFY_SOCKET: o.notify.path },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const pid = child.pid!;
  try {
    await Promise.race([
      o.notify.waitFor((m) => m.split('\n').includes(`MAINPID=${pid}`) && m.split('\n').includes('READY=1')),
      exited.then((code) => Promise.reject(new Error(`ziu-datapath exited (${code}) before READY=1`))),
    ]);
  } catch (err) {
    child.kill('SIGKILL');
    cleanup();
    throw err;
  }
  const status = async (): Promise<Status> => {
    const peer = await Peer.connect('test', control);
    try {
      return await peer.status();
    } finally {
      peer.close();
    }
  };
  return {
    dir,
    pid,
    control,
    sock,
    notices: o.notify.messages,
    status,
    async stop() {
      try {
        if (child.exitCode === null && child.signalCode === null) {
          try {
            const peer = await Peer.connect('test', control);
            try {
              // Whoever answers there now (a successor after an upgrade) is not ours to stop here.
              if ((await peer.hello()).pid === pid) await peer.call('shutdown');
            } finally {
              peer.close();
            }
          } catch {
            // no control socket: a signal below
          }
          const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5000).unref());
          if ((await Promise.race([exited, timeout])) === 'timeout') child.kill('SIGKILL');
        }
        return (await exited) ?? -1;
      } finally {
        cleanup();
      }
    },
  };
}
