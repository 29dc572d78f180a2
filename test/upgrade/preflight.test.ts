import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processAlive } from '../../src/process/index.js';
import { upgradePaths } from '../../src/upgrade/journal.js';
import { fdCount, startRig, type Rig } from '../helpers/upgrade.js';

describe('ziu upgrade refuses bad input in preflight, changing nothing (exit 2)', () => {
  let rig: Rig | null = null;
  let server: net.Server | null = null;
  afterEach(async () => {
    server?.close();
    server = null;
    await rig?.cleanup();
    rig = null;
  });

  async function refused(args: string[], message: string, code: string): Promise<void> {
    const r = rig!;
    const pid = r.dp.pid;
    const fds = fdCount(pid);
    const out = await r.cli(['upgrade', '--json', ...args]);
    expect(out.exitCode, out.stderr).toBe(2);
    expect(out.stderr).toBe(`ziu: ${message}`);
    const doc = JSON.parse(out.stdout) as { result: string; code: string; new: unknown };
    expect(doc).toMatchObject({ result: 'refused', code, new: null });
    // Nothing changed: the old instance forwards alone, with the fds it had; no journal, no lock.
    await new Promise((res) => setTimeout(res, 200));
    expect(processAlive(pid)).toBe(true);
    expect(fdCount(pid)).toBe(fds);
    const paths = upgradePaths(r.dp.control, r.stateDir);
    expect(fs.existsSync(paths.journal)).toBe(false);
    expect(fs.existsSync(paths.lock)).toBe(false);
    const files = await r.cli(['memfile', 'list', '--json']);
    expect(JSON.parse(files.stdout)).toEqual([]);
  }

  it('no such control socket', async () => {
    rig = await startRig({ probe: false });
    const missing = path.join(rig.dp.dir, 'nope.sock');
    await refused(['--control', missing, '--new', rig.newCommand()], `no control socket at ${missing} (old instance): ENOENT: no such file or directory, stat '${missing}'`, 'ERR_ZIU_NO_CONTROL');
  });

  it('a peer that is not a datapath', async () => {
    rig = await startRig({ probe: false });
    const sock = path.join(rig.dp.dir, 'other.sock');
    server = net.createServer((c) => c.end('220 smtp.example ESMTP\r\n'));
    await new Promise<void>((res) => server!.listen(sock, res));
    const out = await rig.cli(['upgrade', '--control', sock, '--new', rig.newCommand()]);
    expect(out.exitCode).toBe(2);
    expect(out.stderr).toMatch(new RegExp(`^ziu: ${sock.replace(/[.]/g, '\\.')} is not a datapath speaking the ziu handover protocol: `));
  });

  it('a new command that does not exist', async () => {
    rig = await startRig({ probe: false });
    await refused(['--control', rig.dp.control, '--new', '/opt/nowhere/ziu-datapath --control x'], "new datapath command '/opt/nowhere/ziu-datapath' not found", 'ERR_ZIU_NEW_COMMAND');
  });

  it('a new command that is not a handover datapath', async () => {
    rig = await startRig({ probe: false });
    await refused(['--control', rig.dp.control, '--new', 'true'], "'true --handover-info' did not print the handover protocol and state formats as JSON: is it a datapath that speaks the ziu handover protocol?", 'ERR_ZIU_NEW_COMMAND');
  });

  it('memory that does not fit', async () => {
    rig = await startRig({ probe: false });
    const out = await rig.cli(['upgrade', '--json', '--control', rig.dp.control, '--new', rig.newCommand(), '--mem', '64T']);
    expect(out.exitCode, out.stderr).toBe(2);
    expect(out.stderr).toMatch(/^ziu: --mem 64T(iB)? does not fit/);
    expect(JSON.parse(out.stdout)).toMatchObject({ result: 'refused' });
  });

  it('bad sizes and options: one line, exit 2', async () => {
    rig = await startRig({ probe: false });
    const c = rig.dp.control;
    fs.writeFileSync(`${rig.stateDir}/bad.json`, JSON.stringify({ contorl: c }));
    for (const [args, msg] of [
      [['--new', 'x'], /^ziu: --control <socket> is required/],
      [['--control', c], /^ziu: --new '<command line>' is required/],
      [['--control', c, '--new', 'x', '--mem', 'lots'], /^ziu: invalid size 'lots'/],
      [['--control', c, '--new', 'x', '--verify-ms', '1.5'], /^ziu: --verify-ms '1.5': use a whole number of milliseconds/],
      [['--control', c, '--new', 'x', '--health-url', 'ftp://x'], /^ziu: --health-url 'ftp:\/\/x': only http and https/],
      [['--config', `${rig.stateDir}/bad.json`], /^ziu: --config '.*bad\.json': unknown key 'contorl' \(known: control, new, mem, /],
    ] as const) {
      const out = await rig.cli(['upgrade', ...args]);
      expect(out.exitCode, out.stderr).toBe(2);
      expect(out.stderr).toMatch(msg);
      expect(out.stderr.trim().split('\n')).toHaveLength(1);
    }
  });
});
