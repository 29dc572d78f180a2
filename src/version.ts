import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json');

/** ziu's version, from package.json (the same file in src/ and dist/ runs). */
export const VERSION: string = (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { version: string }).version;
