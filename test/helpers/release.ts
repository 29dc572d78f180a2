import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Release {
  dir: string;
  version: string;
  /** argv of its ziu-datapath, as --new takes it (before the datapath's own flags) */
  datapath: string;
  remove(): void;
}

/**
 * This checkout installed again under `dir` with another version in its
 * package.json, as a package upgrade puts a new release beside the running
 * one: bin/ and dist/ copied (dist reads the version from ../package.json),
 * node_modules and the native addon linked. Needs a built dist/.
 */
export function makeRelease(dir: string, version: string): Release {
  fs.mkdirSync(dir, { recursive: true });
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify({ ...pkg, version }, null, 2)}\n`);
  fs.cpSync(path.join(ROOT, 'bin'), path.join(dir, 'bin'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  fs.symlinkSync(path.join(ROOT, 'build'), path.join(dir, 'build'));
  return {
    dir,
    version,
    datapath: `${process.execPath} ${path.join(dir, 'bin', 'ziu-datapath.js')}`,
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
