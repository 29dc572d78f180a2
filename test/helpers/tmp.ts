import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A fresh temp dir for one test; remove() deletes it and everything in it. */
export function tempDir(prefix = 'ziu-test-'): { dir: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
