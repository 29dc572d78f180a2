import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.js';
import { ControlServer } from '../../src/control/server.js';
import { logger } from '../../src/log.js';
import { native } from '../../src/native/index.js';
import { openFds } from '../helpers/fds.js';
import { tempDir } from '../helpers/tmp.js';
import { cannotRunAs } from '../cli/helpers.js';

const peer = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'control-peer.mjs');

describe('control socket', () => {
  let tmp: ReturnType<typeof tempDir>;
  let server: ControlServer;
  let fdsBefore: number;

  beforeEach(async () => {
    fdsBefore = openFds();
    tmp = tempDir();
    fs.chmodSync(tmp.dir, 0o755);
    server = await ControlServer.listen(
      path.join(tmp.dir, 'ctl.sock'),
      {
        status: () => ({ body: { status: { instance: 'vr1' } } }),
        echoFd: (_req, fds) => {
          const out = { body: { got: fds.length }, fds: [...fds] };
          setImmediate(() => fds.forEach((fd) => native.close(fd)));
          return out;
        },
        fail: () => {
          throw Object.assign(new Error('the device is frozen'), { code: 'ERR_ZIU_FROZEN' });
        },
      },
      logger('test'),
    );
  });
  afterEach(() => {
    server.close();
    tmp.remove();
  });

  it('is created with mode 0600', () => {
    expect(fs.statSync(server.path).mode & 0o777).toBe(0o600);
  });

  it('answers requests in order, carries fds both ways, and reports errors with their code', async () => {
    const c = await ControlClient.connect(server.path);
    const [a, b] = await Promise.all([c.request({ op: 'status' }), c.request({ op: 'nope' })]);
    expect(a.body).toEqual({ ok: true, status: { instance: 'vr1' } });
    expect(b.body).toEqual({ ok: false, error: { code: 'ERR_ZIU_CONTROL_UNKNOWN_OP', message: "unknown control op 'nope'" } });
    await expect(c.call({ op: 'fail' })).rejects.toThrow(`fail on ${server.path}: the device is frozen`);

    const efd = native.eventfd(0, false) as number;
    native.eventfdWrite(efd, 5n);
    const r = await c.request({ op: 'echoFd' }, [efd]);
    expect(r.body).toEqual({ ok: true, got: 1 });
    expect(r.fds).toHaveLength(1);
    expect(native.eventfdRead(r.fds[0]!)).toBe(5n); // the same eventfd, back through two processes' worth of hops
    native.close(r.fds[0]!);
    native.close(efd);
    c.close();
    await new Promise((res) => setTimeout(res, 20));
    expect(openFds()).toBe(fdsBefore + 1); // the listener
  });

  it.skipIf(cannotRunAs(65534) !== null)('refuses a peer that is neither root nor our uid (SO_PEERCRED)', async () => {
    // the socket is 0600; open it to others only to reach the SO_PEERCRED check
    fs.chmodSync(server.path, 0o666);
    const r = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'node', peer, server.path]);
    // Refused: no status comes back, and the peer is told its connection was closed (a reset reaches
    // libuv as POLLERR, which it reports as EBADF: the socket layer names it for what it is).
    const refused = JSON.parse(r.stdout) as { error?: string; ok?: boolean };
    expect(refused.ok).toBeUndefined();
    expect(refused.error).toBe('ERR_ZIU_PEER_CLOSED');
    const ok = await execa('node', [peer, server.path]);
    expect(JSON.parse(ok.stdout)).toEqual({ ok: true, status: { instance: 'vr1' } });
  });
});
