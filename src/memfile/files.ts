import fs from 'node:fs';
import path from 'node:path';
import { hasCode } from '../errors.js';
import { logger } from '../log.js';
import type { FileId } from '../process/index.js';
import { TrustedDir } from '../trusted-dir.js';
import { checkNamePart } from './names.js';

// Mem files on disk: <dir>/<instance>/<role>, always reached through verified directory fds.

const log = logger('memfile');

export interface FoundFile {
  instance: string;
  role: string;
  path: string;
  bytes: number;
  allocated: number;
}

/**
 * The mem files in a ziu directory: <dir>/<instance>/<role>, regular files
 * only, read through directory fds. An entry that is not ziu's (a symlink,
 * another user's, a name ziu would not make) is skipped and logged.
 */
export function scan(dir: string): FoundFile[] {
  const out: FoundFile[] = [];
  const root = TrustedDir.open(dir, { shared: true });
  try {
    for (const inst of root.list()) {
      if (!inst.isDirectory()) continue;
      let instDir: TrustedDir;
      try {
        checkNamePart('instance', inst.name);
        instDir = root.subdir(inst.name, { mode: 0o700 });
      } catch (err) {
        log.warn({ path: path.join(dir, inst.name), err: (err as Error).message }, 'skipping a directory that is not a ziu instance');
        continue;
      }
      try {
        for (const f of instDir.list()) {
          const p = path.join(dir, inst.name, f.name);
          const st = instDir.lstat(f.name);
          if (st === null || !st.isFile()) {
            if (st !== null && !f.name.endsWith('.tmp')) log.warn({ path: p }, 'skipping an entry that is not a mem file (not a regular file)');
            continue;
          }
          if (st.uid !== 0 && st.uid !== process.geteuid?.()) {
            log.warn({ path: p, uid: st.uid }, 'skipping a file another user owns');
            continue;
          }
          out.push({ instance: inst.name, role: f.name, path: p, bytes: st.size, allocated: st.blocks * 512 });
        }
      } finally {
        instDir.close();
      }
    }
  } finally {
    root.close();
  }
  return out;
}

/** Remove <dir>/<instance>/<role> (role null: the empty instance directory), through verified directory fds. */
export function removeEntry(dir: string, instance: string, role: string | null): void {
  const root = TrustedDir.open(dir, { shared: true });
  try {
    if (role === null) {
      root.remove(instance, { dir: true });
      return;
    }
    if (root.lstat(instance) === null) return;
    const inst = root.subdir(instance, { mode: 0o700 });
    try {
      inst.remove(role);
    } finally {
      inst.close();
    }
  } finally {
    root.close();
  }
}

/** <dir>/<instance>/<role> as the kernel names it, and its size, or null if there is no such regular file. */
export function statEntry(dir: string, instance: string, role: string): { id: FileId; bytes: number; allocated: number } | null {
  let root: TrustedDir;
  try {
    root = TrustedDir.open(dir, { shared: true });
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return null;
    throw err;
  }
  try {
    if (root.lstat(instance) === null) return null;
    const inst = root.subdir(instance, { mode: 0o700 });
    try {
      const st = inst.lstat(role);
      if (st === null || !st.isFile()) return null;
      const big = fs.lstatSync(inst.at(role), { bigint: true });
      return { id: { dev: big.dev, ino: big.ino }, bytes: st.size, allocated: st.blocks * 512 };
    } finally {
      inst.close();
    }
  } finally {
    root.close();
  }
}
