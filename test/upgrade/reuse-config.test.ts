import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlServer } from '../../src/control/server.js';
import { reusableArgs } from '../../src/datapath/config.js';
import { DATAPATH_BIN } from '../../src/datapath/bin.js';
import type { Hello } from '../../src/handover/messages/index.js';
import { logger } from '../../src/log.js';
import { processAlive } from '../../src/process/index.js';
import { Peer } from '../../src/upgrade/peer.js';
import { checkOwnMemory, isBareCommand, newCommand } from '../../src/upgrade/reuse.js';
import { ziu } from '../cli/helpers.js';
import { listenNotify, type NotifyListener } from '../helpers/datapath.js';
import { tempDir } from '../helpers/tmp.js';
import { startRig, type Rig } from '../helpers/upgrade.js';

/** `--new <binary>`: this checkout's ziu-datapath, no options. */
const BINARY = `${process.execPath} ${DATAPATH_BIN}`;

const HELLO: Hello = {
  protocol: 1,
  datapath: 'ziu-datapath',
  version: '0.1.0',
  stateFormats: { export: [1, 2], import: [1, 2] },
  instance: 'dp',
  pid: 4242,
  role: 'active',
  control: '/run/ziu/dp.sock',
  worker: null,
  launch: { args: ['--config', 'dp.yaml', '--worker-cpus', '1'], cwd: '/', notifySocket: '/run/systemd/notify' },
};

async function helloOf(control: string): Promise<Hello> {
  const peer = await Peer.connect('test', control);
  try {
    return await peer.hello();
  } finally {
    peer.close();
  }
}

describe('what a datapath reports of its command line, and how ziu upgrade completes a bare --new', () => {
  it('reports its flags without --mem-file (either spelling), and nothing of --handover-info', () => {
    expect(reusableArgs(['--control', '/c', '--mem-file', '/m1', '--vhost-user', 'a=/a', '--mem-file=/m2', '--config', 'dp.yaml'])).toEqual(['--control', '/c', '--vhost-user', 'a=/a', '--config', 'dp.yaml']);
    expect(reusableArgs(['--handover-info', '--state-formats', '1'])).toEqual(['--state-formats', '1']);
  });

  it('a bare command is a binary, or an interpreter and its script: no word that is an option', () => {
    expect(isBareCommand(['ziu-datapath'])).toBe(true);
    expect(isBareCommand(['/opt/ziu-2/bin/ziu-datapath'])).toBe(true);
    expect(isBareCommand(['node', '/opt/ziu/bin/ziu-datapath.js'])).toBe(true);
    expect(isBareCommand(['ziu-datapath', '--control', '/c'])).toBe(false);
    expect(isBareCommand([])).toBe(false);
  });

  it('completes a bare command from the old instance: its flags, its directory, its service manager; paths of ours made absolute', () => {
    const c = newCommand(['./bin/ziu-datapath'], HELLO, { mem: false, env: {}, cwd: '/home/op' });
    expect(c).toEqual({ source: 'reused', argv: ['/home/op/bin/ziu-datapath', '--config', 'dp.yaml', '--worker-cpus', '1'], cwd: '/', notifySocket: '/run/systemd/notify', memory: 'same-as-old' });
    expect(newCommand(['ziu-datapath'], HELLO, { mem: true, env: {} })).toMatchObject({ argv: ['ziu-datapath', '--config', 'dp.yaml', '--worker-cpus', '1'], memory: 'given' });
    // A whole command line is taken as it is.
    expect(newCommand(['ziu-datapath', '--control', '/c'], HELLO, { mem: false, env: {}, cwd: '/x' })).toEqual({ source: 'given', argv: ['ziu-datapath', '--control', '/c'], cwd: '/x', notifySocket: '/run/systemd/notify', memory: 'in-command' });
    // The old instance runs under no service manager: ours (if any) is not its.
    expect(newCommand(['ziu-datapath'], { ...HELLO, launch: { ...HELLO.launch!, notifySocket: null } }, { mem: true, env: { NOTIFY_SOCKET: '/run/systemd/notify' } }).notifySocket).toBeNull();
  });

  it('an old instance that does not report launch: a whole command line still works (our NOTIFY_SOCKET for the service), a bare one is refused', () => {
    const old = { ...HELLO, launch: null };
    expect(newCommand(['ziu-datapath', '--control', '/c'], old, { mem: true, env: { NOTIFY_SOCKET: '/run/systemd/notify' } }).notifySocket).toBe('/run/systemd/notify');
    expect(() => newCommand(['ziu-datapath'], old, { mem: true, env: {} })).toThrow(
      expect.objectContaining({
        code: 'ERR_ZIU_NO_LAUNCH',
        message:
          "--new 'ziu-datapath' names only a binary, but the old instance (ziu-datapath 0.1.0, pid 4242) does not report how it was started (no launch in its hello: it predates that): " +
          "give the new instance's whole command line, e.g. --new 'ziu-datapath --control /run/ziu/dp.sock --vhost-user <name>=<socket> ...' with --mem",
      }),
    );
    expect(() => newCommand(['ziu-datapath'], { ...HELLO, launch: { ...HELLO.launch!, cwd: '/nonexistent-ziu-dir' } }, { mem: true })).toThrow(
      'the old instance (pid 4242) runs in /nonexistent-ziu-dir, which is no directory any more',
    );
  });

  it("refuses a command line that gives the new instance one of the old instance's mem files", () => {
    const t = tempDir();
    try {
      const mem = path.join(t.dir, 'mem');
      fs.writeFileSync(mem, '');
      fs.symlinkSync(mem, path.join(t.dir, 'link'));
      const cmd = (argv: string[]) => ({ source: 'given' as const, argv, cwd: t.dir, notifySocket: null, memory: 'in-command' as const });
      expect(() => checkOwnMemory(cmd(['dp', '--mem-file', 'link']), [mem])).toThrow(expect.objectContaining({ code: 'ERR_ZIU_SHARED_MEMFILE' }));
      expect(() => checkOwnMemory(cmd(['dp', `--mem-file=${mem}`]), [mem])).toThrow('--new gives the new instance --mem-file');
      expect(() => checkOwnMemory(cmd(['dp', '--mem-file', path.join(t.dir, 'other')]), [mem])).not.toThrow();
    } finally {
      t.remove();
    }
  });
});

describe('ziu upgrade --new <binary>: the running instance\'s configuration, memory of its own', () => {
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

  it('an instance run from a config file with relative paths: the new one reads the same file in the same directory, gets as much memory as the old had, zero frames lost', async () => {
    tmp = tempDir('ziu-reuse-');
    notify = listenNotify(path.join(tmp.dir, 'notify.sock'));
    rig = await startRig({ rate: 2000, service: { notify, configFile: true } });
    const oldMem = path.join(rig.dp.dir, 'mem');
    expect(await helloOf(rig.dp.control)).toMatchObject({ launch: { args: ['--config', 'dp.yaml'], cwd: rig.dp.dir, notifySocket: notify.path } });
    // Run from elsewhere: relative paths in dp.yaml must resolve in the old instance's directory, not ours.
    const out = await rig.cli(['upgrade', '--control', rig.dp.control, '--new', BINARY, '--json'], {});
    const rep = JSON.parse(out.stdout) as { result: string; new: { pid: number }; new_command: unknown; memory: { bytes: number; path: string } };
    if (rep.new?.pid) rig.pids.add(rep.new.pid);
    expect(out.exitCode, out.stderr).toBe(0);
    expect(rep.new_command).toEqual({ source: 'reused', argv: [process.execPath, DATAPATH_BIN, '--config', 'dp.yaml'], cwd: rig.dp.dir, notify_socket: notify.path, memory: 'same-as-old' });
    expect(rep.memory.bytes).toBe(32 * 1024 * 1024);
    // Its memory is its own, never the old instance's file that dp.yaml lists.
    const st = await rig.dp.status();
    expect(st.pid).toBe(rep.new.pid);
    expect(st.memFiles.map((m) => m.path)).toEqual([rep.memory.path]);
    expect(rep.memory.path).not.toBe(oldMem);
    expect(st.ports.map((p) => [p.name, p.connected])).toEqual([['a', true], ['b', true]]);
    // And it says the same of itself, so the next upgrade reuses it too.
    expect((await helloOf(rig.dp.control)).launch).toEqual({ args: ['--config', 'dp.yaml'], cwd: rig.dp.dir, notifySocket: notify.path });
    await new Promise((res) => setTimeout(res, 300));
    expect(await rig.probe!.stop()).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });

    const human = await rig.cli(['upgrade', '--control', rig.dp.control, '--new', BINARY]);
    expect(human.exitCode, human.stderr).toBe(0);
    expect(human.stdout).toContain(`  new command (the old instance's configuration): ${BINARY} --config dp.yaml`);
    rig.pids.add((await helloOf(rig.dp.control)).pid);
  });

  it('an instance run with flags, --mem given: the new one gets every flag but the old --mem-file; a whole command line naming that file is refused', async () => {
    rig = await startRig({ rate: 1000 });
    const oldMem = path.join(rig.dp.dir, 'mem');
    const oldPid = rig.dp.pid;
    expect((await helloOf(rig.dp.control)).launch?.args).toEqual(expect.not.arrayContaining(['--mem-file', oldMem]));

    const shared = await rig.cli(['upgrade', '--json', '--control', rig.dp.control, '--new', `${rig.newCommand()} --mem-file ${oldMem}`]);
    expect(shared.exitCode, shared.stderr).toBe(2);
    expect(shared.stderr).toBe(`ziu: --new gives the new instance --mem-file ${oldMem}, which the old instance maps: the two would write the same memory. Give it its own (--mem <size>)`);
    expect(JSON.parse(shared.stdout)).toMatchObject({ result: 'refused', code: 'ERR_ZIU_SHARED_MEMFILE' });
    expect(await helloOf(rig.dp.control)).toMatchObject({ pid: oldPid, role: 'active' });

    const out = await rig.cli(['upgrade', '--json', '--control', rig.dp.control, '--new', BINARY, '--mem', '16M']);
    const rep = JSON.parse(out.stdout) as { new: { pid: number }; new_command: { argv: string[]; memory: string }; memory: { path: string; bytes: number } };
    if (rep.new?.pid) rig.pids.add(rep.new.pid);
    expect(out.exitCode, out.stderr).toBe(0);
    expect(rep.new_command.memory).toBe('given');
    expect(rep.new_command.argv).toEqual([process.execPath, DATAPATH_BIN, '--control', rig.dp.control, '--instance', 'test', '--vhost-user', `a=${rig.dp.sock['a']},server`, '--vhost-user', `b=${rig.dp.sock['b']},server`]);
    expect(rep.memory.bytes).toBe(16 * 1024 * 1024);
    expect((await rig.dp.status()).memFiles.map((m) => m.path)).toEqual([rep.memory.path]);
    expect(processAlive(oldPid)).toBe(false);
    expect(await rig.probe!.stop()).toMatchObject({ lost: 0, reconnects: 0 });
  });

  it('an old instance too old to say how it was started: --new <binary> is refused with what to give instead, exit 2', async () => {
    const t = tempDir('ziu-old-');
    tmp = t;
    const control = path.join(t.dir, 'ctl.sock');
    // An older datapath: hello without launch.
    const server = await ControlServer.listen(
      control,
      { hello: () => ({ body: { protocol: 1, datapath: 'ziu-datapath', version: '0.0.9', stateFormats: { export: [1], import: [1] }, instance: 'old', pid: process.pid, role: 'active', control, worker: null } }) },
      logger('test-old-datapath'),
    );
    try {
      const out = await ziu(['upgrade', '--json', '--control', control, '--new', 'ziu-datapath'], { env: { ZIU_STATE_DIR: path.join(t.dir, 'state'), ZIU_LOG_LEVEL: 'warn' } });
      expect(out.exitCode, out.stderr).toBe(2);
      expect(out.stderr).toContain("ziu: --new 'ziu-datapath' names only a binary, but the old instance (ziu-datapath 0.0.9, pid");
      expect(out.stderr).toContain(`give the new instance's whole command line, e.g. --new 'ziu-datapath --control ${control} --vhost-user <name>=<socket> ...' with --mem`);
      expect(JSON.parse(out.stdout)).toMatchObject({ result: 'refused', code: 'ERR_ZIU_NO_LAUNCH' });
    } finally {
      server.close();
    }
  });
});
