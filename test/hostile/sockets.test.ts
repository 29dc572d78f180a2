/**
 * Control and vhost-user sockets in a directory another local user can
 * write (issue 10). The other user (uid 65534, a real process) races every
 * bind: the moment the socket appears it renames it away, notes its mode,
 * and puts a symlink to a root-owned file in its place. A chmod after bind
 * would follow that symlink (the file's mode changes) and the stolen socket
 * would show the mode it had before the chmod (open to every user).
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { UnixListener } from '../../src/net/socket.js';
import { isRoot, NOBODY, NOT_ROOT } from './victim.js';

if (!isRoot) console.log(`test/hostile/sockets.test.ts skipped: ${NOT_ROOT}`);

const ATTACKER = `
const fs = require('node:fs');
const [sock, target, out, stop] = process.argv.slice(2);
const modes = new Set();
let wins = 0;
for (let i = 0; !fs.existsSync(stop); i++) {
  try {
    fs.renameSync(sock, sock + '.stolen');
    const st = fs.lstatSync(sock + '.stolen');
    fs.rmSync(sock + '.stolen');
    if (!st.isSocket()) continue; // our own symlink, back from the last round
    modes.add((st.mode & 0o777).toString(8));
    fs.symlinkSync(target, sock);
    wins++;
  } catch {}
}
fs.writeFileSync(out, JSON.stringify({ wins, modes: [...modes] }));
`;

describe.skipIf(!isRoot)('sockets bound in a directory another user can write', () => {
  let dir: string | null = null;
  afterEach(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = null;
  });

  it('the mode is set before the socket appears, and no chmod follows a symlink swapped in', { timeout: 30_000 }, async () => {
    dir = fs.mkdtempSync('/tmp/ziu-sockets-');
    fs.chmodSync(dir, 0o711);
    const theirs = path.join(dir, 'theirs');
    fs.mkdirSync(theirs);
    fs.chownSync(theirs, NOBODY, NOBODY);
    const target = path.join(dir, 'precious');
    fs.writeFileSync(target, 'root file\n', { mode: 0o644 });
    fs.chmodSync(target, 0o644);
    const sock = path.join(theirs, 'ctl.sock');
    const out = path.join(theirs, 'result.json');
    const stop = path.join(dir, 'stop');
    fs.writeFileSync(path.join(dir, 'attacker.cjs'), ATTACKER, { mode: 0o644 });
    const attacker = execa('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, path.join(dir, 'attacker.cjs'), sock, target, out, stop], { reject: false });
    const oldUmask = process.umask(0o022);
    let binds = 0;
    try {
      for (const deadline = Date.now() + 5000; Date.now() < deadline && binds < 3000; ) {
        try {
          const l = await UnixListener.listen(sock, { mode: 0o600 });
          binds++;
          l.close({ keepPath: true });
        } catch {
          // the attacker's symlink is in the way (refused, not followed) or took the socket: clear and go again
        }
        fs.rmSync(sock, { force: true });
      }
    } finally {
      process.umask(oldUmask);
      fs.writeFileSync(stop, '');
      await attacker;
    }
    const result = JSON.parse(fs.readFileSync(out, 'utf8')) as { wins: number; modes: string[] };
    expect(binds).toBeGreaterThan(100);
    expect(result.wins, 'the attacker never got to the socket: the race did not run').toBeGreaterThan(0);
    expect((fs.statSync(target).mode & 0o777).toString(8), 'a chmod followed the symlink swapped in at the socket path').toBe('644');
    expect(result.modes, 'the socket was seen with another mode than 0600').toEqual(['600']);
    // Nothing of ours is left beside the path (the private bind directories).
    expect(fs.readdirSync(theirs).filter((f) => f.startsWith('.ziu-bind-'))).toEqual([]);
  });
});
