import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DATAPATH_BIN } from '../../src/datapath/bin.js';
import { processAlive, waitGone } from '../../src/process/index.js';
import { Peer } from '../../src/upgrade/peer.js';
import { ZIU } from '../cli/helpers.js';
import { listenNotify, type NotifyListener } from '../helpers/datapath.js';
import { tempDir } from '../helpers/tmp.js';
import { startRig, type Rig } from '../helpers/upgrade.js';

/** `--new <binary>`: this checkout's ziu-datapath, no options. */
const BINARY = `${process.execPath} ${DATAPATH_BIN}`;

/** One sd_notify datagram as its fields (their order in the datagram does not matter to systemd). */
function fields(msg: string): Record<string, string> {
  return Object.fromEntries(msg.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

interface Report {
  result: string;
  upgrade_id: string;
  old: { pid: number };
  new: { pid: number } | null;
  new_command: { source: string; notify_socket: string | null };
  rollback?: { phase: string };
  message?: string;
}

describe('ziu-datapath under a service manager (sd_notify): MAINPID moves to the new instance only when it commits', () => {
  let rig: Rig | null = null;
  let notify: NotifyListener | null = null;
  let tmp: ReturnType<typeof tempDir> | null = null;
  afterEach(async () => {
    await rig?.cleanup();
    rig = null;
    notify?.close();
    notify = null;
    tmp?.remove();
    tmp = null;
  });

  async function serviceRig(): Promise<Rig> {
    tmp = tempDir('ziu-sdn-');
    notify = listenNotify(path.join(tmp.dir, 'notify.sock'));
    rig = await startRig({ rate: 2000, service: { notify } });
    return rig;
  }

  /** `ziu upgrade --new <binary> --json`; env as ExecReload's (NOTIFY_SOCKET under NotifyAccess=all) or none. */
  async function reload(r: Rig, env: Record<string, string> = {}): Promise<{ exitCode: number; stderr: string; report: Report }> {
    const out = await r.cli(['upgrade', '--control', r.dp.control, '--new', BINARY, '--json'], env);
    const report = JSON.parse(out.stdout) as Report;
    if (report.new?.pid) r.pids.add(report.new.pid);
    return { exitCode: out.exitCode, stderr: out.stderr, report };
  }

  async function shutdown(control: string, pid: number): Promise<void> {
    const peer = await Peer.connect('test', control);
    try {
      expect((await peer.hello()).pid).toBe(pid);
      await peer.call('shutdown');
    } finally {
      peer.close();
    }
    expect(await waitGone(pid, 5000)).toBe(true);
  }

  it('two upgrades in a row: READY and MAINPID of each instance in order, the old one silent once it handed over, STOPPING=1 only from the last', async () => {
    const r = await serviceRig();
    const n = notify!;
    const a = r.dp.pid;
    // The first from ExecReload's environment (NOTIFY_SOCKET given to it), the second without:
    // then the service's socket can only come from the running instance's hello.
    const first = await reload(r, { NOTIFY_SOCKET: n.path });
    expect(first.exitCode, first.stderr).toBe(0);
    const b = first.report.new!.pid;
    expect(first.report.new_command).toMatchObject({ source: 'reused', notify_socket: n.path });
    const second = await reload(r);
    expect(second.exitCode, second.stderr).toBe(0);
    const c = second.report.new!.pid;
    expect(second.report.new_command).toMatchObject({ source: 'reused', notify_socket: n.path });
    expect([processAlive(a), processAlive(b), processAlive(c)]).toEqual([false, false, true]);

    // Anything an exiting instance sent late would be here by now.
    await new Promise((res) => setTimeout(res, 300));
    const forwarding = 'forwarding between 2 ports';
    expect(n.messages.map(fields)).toEqual([
      { READY: '1', STATUS: forwarding, MAINPID: String(a) },
      { STATUS: `handing over to a new instance (upgrade ${first.report.upgrade_id})` },
      { MAINPID: String(b), READY: '1', STATUS: forwarding },
      { STATUS: `handing over to a new instance (upgrade ${second.report.upgrade_id})` },
      { MAINPID: String(c), READY: '1', STATUS: forwarding },
    ]);
    const probe = await r.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, reconnects: 0 });

    // The service stops: its main process, and only it, says STOPPING=1.
    await shutdown(r.dp.control, c);
    await n.waitFor((m) => m === 'STOPPING=1');
    expect(n.messages.slice(5)).toEqual(['STOPPING=1']);
  });

  it('a rollback (the new instance fails in its commit): MAINPID never names it, the old instance says MAINPID=<itself> again, and the new one is stopped without STOPPING=1 to the service', async () => {
    const r = await serviceRig();
    const n = notify!;
    const a = r.dp.pid;
    const out = await reload(r, { NOTIFY_SOCKET: n.path, ZIU_FAULT: 'commit-fail' });
    expect(out.exitCode, out.stderr).toBe(1);
    expect(out.report).toMatchObject({ result: 'rolled_back', rollback: { phase: 'commit' } });
    const b = out.report.new!.pid;
    expect(await waitGone(b, 3000)).toBe(true);
    expect(processAlive(a)).toBe(true);
    await new Promise((res) => setTimeout(res, 300));
    expect(n.messages.map(fields)).toEqual([
      { READY: '1', STATUS: 'forwarding between 2 ports', MAINPID: String(a) },
      { STATUS: `handing over to a new instance (upgrade ${out.report.upgrade_id})` },
      { MAINPID: String(a), STATUS: 'forwarding (handover undone)' },
    ]);
    expect(n.messages.join('\n')).not.toContain(`MAINPID=${b}`);
    const probe = await r.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, reconnects: 0 });
    await shutdown(r.dp.control, a);
    await n.waitFor((m) => m === 'STOPPING=1');
    expect(n.messages.slice(3)).toEqual(['STOPPING=1']);
  });

  it('a service manager that cannot be told MAINPID=: the old instance is left running (its exit would stop the service), exit 3 with what to do', async (ctx) => {
    if (spawnSync('python3', ['--version']).error) {
      console.log('skipped: python3 is needed for a service manager that stops reading its socket');
      ctx.skip();
    }
    const r = await serviceRig();
    const a = r.dp.pid;
    // After the old instance started, the manager stops reading: its queue full, a datagram gets EAGAIN.
    // (A socket nobody listens on any more is a launcher gone, not a manager: nothing to tell there.)
    const sock = path.join(tmp!.dir, 'notify.sock');
    notify!.close();
    notify = null;
    fs.rmSync(sock, { force: true });
    const deaf = spawn('python3', ['-c', DEAF_MANAGER, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((res, rej) => {
        deaf.stdout!.once('data', () => res());
        deaf.once('exit', (code) => rej(new Error(`the deaf manager exited (${code})`)));
      });
      const out = await reload(r);
      expect(out.exitCode, out.stderr).toBe(3);
      expect(out.report.result).toBe('failed');
      const b = out.report.new!.pid;
      expect(out.report.message).toContain(`could not tell the service manager (${path.join(tmp!.dir, 'notify.sock')}) that it is the main process now (MAINPID=), so the old instance (pid ${a}) was left running`);
      expect([processAlive(a), processAlive(b)]).toEqual([true, true]);
      // The new instance serves, and alone answers on the control socket (the old one committed: it stopped accepting).
      for (let i = 0; i < 5; i++) {
        const peer = await Peer.connect('test', r.dp.control);
        try {
          expect(await peer.hello()).toMatchObject({ pid: b, role: 'active' });
        } finally {
          peer.close();
        }
      }
    } finally {
      deaf.kill('SIGKILL');
    }
  });
});

/** Binds the socket, fills its own receive queue until a send would block, says so, and sleeps. */
const DEAF_MANAGER = `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); c.setblocking(False)
while True:
    try: c.sendto(b'X=1', sys.argv[1])
    except BlockingIOError: break
print('full', flush=True)
time.sleep(300)
`;

/**
 * The same under a real systemd, where this machine has one: a transient
 * Type=notify unit, `systemctl reload` running `ziu upgrade --new <binary>`.
 */
const systemdState = spawnSync('systemctl', ['is-system-running'], { encoding: 'utf8' });
const systemdReason =
  systemdState.error !== undefined
    ? `systemctl not found (${systemdState.error.message})`
    : !['running', 'degraded'].includes(systemdState.stdout.trim())
      ? `systemd is not running here (systemctl is-system-running: ${systemdState.stdout.trim() || systemdState.stderr.trim()})`
      : process.getuid?.() !== 0
        ? 'not root: cannot start a system unit'
        : null;
if (systemdReason) console.warn(`skipping the transient systemd unit test: ${systemdReason}`);

describe.skipIf(systemdReason !== null)('ziu-datapath as a transient systemd unit', () => {
  it('systemctl reload upgrades it: MainPID becomes the new instance, the unit stays active', async () => {
    const t = tempDir('ziu-unit-');
    const unit = `ziu-test-${process.pid}`;
    try {
      fs.closeSync(fs.openSync(path.join(t.dir, 'mem'), 'w'));
      execFileSync('fallocate', ['-l', '32M', path.join(t.dir, 'mem')]);
      const control = path.join(t.dir, 'ctl.sock');
      fs.writeFileSync(path.join(t.dir, 'dp.yaml'), `control: ${control}\nmemFiles: [${path.join(t.dir, 'mem')}]\nvhostUser: [a=${path.join(t.dir, 'a.sock')}]\n`);
      execFileSync('systemd-run', [
        '--unit', unit, '--collect',
        '-p', 'Type=notify', '-p', 'NotifyAccess=all', '-p', 'TimeoutStartSec=120',
        '-p', `ExecReload=${process.execPath} ${ZIU} upgrade --control ${control} --new '${BINARY}' --mem 32M`,
        '--setenv', `ZIU_STATE_DIR=${path.join(t.dir, 'state')}`, '--setenv', `ZIU_TMPFS_DIR=${path.join(t.dir, 'tmpfs')}`,
        process.execPath, DATAPATH_BIN, '--config', path.join(t.dir, 'dp.yaml'),
      ]);
      const mainPid = (): number => Number(execFileSync('systemctl', ['show', '-p', 'MainPID', '--value', unit], { encoding: 'utf8' }).trim());
      const before = mainPid();
      execFileSync('systemctl', ['reload', unit]);
      const after = mainPid();
      expect(after).not.toBe(before);
      expect(processAlive(before)).toBe(false);
      const peer = await Peer.connect('test', control);
      try {
        expect((await peer.hello()).pid).toBe(after);
      } finally {
        peer.close();
      }
      expect(execFileSync('systemctl', ['is-active', unit], { encoding: 'utf8' }).trim()).toBe('active');
    } finally {
      spawnSync('systemctl', ['stop', unit]);
      // The upgrade's memory may be on hugetlbfs, outside the temp dir: removed through ziu.
      const env = { ...process.env, ZIU_STATE_DIR: path.join(t.dir, 'state'), ZIU_TMPFS_DIR: path.join(t.dir, 'tmpfs') };
      const list = spawnSync(process.execPath, [ZIU, 'memfile', 'list', '--json'], { env, encoding: 'utf8' });
      for (const f of JSON.parse(list.stdout || '[]') as Array<{ instance: string }>) spawnSync(process.execPath, [ZIU, 'memfile', 'remove', f.instance], { env });
      t.remove();
    }
  });
});
