import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ERRORS, isErrorCode, type ErrorCode, type ErrorInfo } from '../src/error-codes.js';
import { EXIT, exitCodeFor, relayedCode, sysError, UsageError, ZiuError } from '../src/errors.js';
import { RECOVER_EXIT } from '../src/upgrade/recover.js';
import { EXIT_FOR } from '../src/upgrade/report.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CODE = /\bERR_ZIU_[A-Z0-9_]+\b/g;

function files(dir: string, ext: RegExp): string[] {
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && ext.test(e.name))
    .map((e) => path.join(e.parentPath, e.name));
}

/** Every ERR_ZIU_ code named in these files (literals and comments), with the first file naming it. */
function codesIn(list: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of list) {
    for (const m of fs.readFileSync(f, 'utf8').matchAll(CODE)) if (!out.has(m[0])) out.set(m[0], path.relative(root, f));
  }
  return out;
}

const registered = Object.keys(ERRORS);
const inSource = codesIn(files(path.join(root, 'src'), /\.ts$/).filter((f) => !f.endsWith(path.join('src', 'error-codes.ts'))));

describe('the error-code registry', () => {
  it('registers every ERR_ZIU_ code that src names', () => {
    const missing = [...inSource].filter(([c]) => !isErrorCode(c)).map(([c, f]) => `${c} (${f})`);
    expect(missing).toEqual([]);
  });

  it('registers no code that src does not use', () => {
    expect(registered.filter((c) => !inSource.has(c))).toEqual([]);
  });

  it('names every code the docs name', () => {
    const docs = codesIn([...files(path.join(root, 'docs'), /\.md$/), path.join(root, 'README.md')]);
    expect([...docs].filter(([c]) => !isErrorCode(c)).map(([c, f]) => `${c} (${f})`)).toEqual([]);
  });

  it('gives each class its documented exit code', () => {
    expect(EXIT).toEqual({ ok: 0, failed: 1, refused: 2, operator: 3 });
    for (const [code, info] of Object.entries(ERRORS)) {
      expect(exitCodeFor(new ZiuError(code as ErrorCode, 'x')), code).toBe(EXIT[info.class]);
      expect(info.meaning, code).toMatch(/^\S.*[^.]$/);
    }
  });

  // The exit codes ziu has always given: a class changes only on purpose.
  it('refuses (exit 2) exactly these codes', () => {
    const refused = registered.filter((c) => exitCodeFor(new ZiuError(c as ErrorCode, 'x')) === 2).sort();
    expect(refused).toEqual([
      'ERR_ZIU_LOCKED',
      'ERR_ZIU_MEMFILE',
      'ERR_ZIU_MEMFILE_EXISTS',
      'ERR_ZIU_NOT_A_DATAPATH',
      'ERR_ZIU_NOT_HUGETLBFS',
      'ERR_ZIU_NOT_TMPFS',
      'ERR_ZIU_NO_CONTROL',
      'ERR_ZIU_NO_HUGEPAGES',
      'ERR_ZIU_NO_LAUNCH',
      'ERR_ZIU_NO_MEMFILE',
      'ERR_ZIU_POOL_LOCKED',
      'ERR_ZIU_SHARED_MEMFILE',
      'ERR_ZIU_SOCKET_PATH',
      'ERR_ZIU_UNTRUSTED_PATH',
      'ERR_ZIU_USAGE',
    ]);
    expect(Object.values<ErrorInfo>(ERRORS).filter((i) => i.class === 'operator')).toEqual([]);
  });

  it('exits 1 for an error that is not a ZiuError, even with a registered code', () => {
    expect(exitCodeFor(new Error('boom'))).toBe(1);
    expect(exitCodeFor(Object.assign(new Error('boom'), { code: 'ERR_ZIU_USAGE' }))).toBe(1);
    expect(exitCodeFor(sysError(-13, 'open', { path: '/x' }))).toBe(1);
    expect(exitCodeFor('a string')).toBe(1);
    expect(exitCodeFor(new UsageError('bad'))).toBe(2);
  });

  it("passes on a registered or a foreign code, and makes an unknown ERR_ZIU_ code or none ERR_ZIU_INTERNAL", () => {
    expect(relayedCode('ERR_ZIU_BATON')).toBe('ERR_ZIU_BATON');
    expect(relayedCode('EBADF')).toBe('EBADF');
    expect(relayedCode('ERR_ZIU_FROM_THE_FUTURE')).toBe('ERR_ZIU_INTERNAL');
    expect(relayedCode(undefined)).toBe('ERR_ZIU_INTERNAL');
    expect(relayedCode(7)).toBe('ERR_ZIU_INTERNAL');
    expect(exitCodeFor(new ZiuError(relayedCode('EBADF'), 'x'))).toBe(1);
  });

  it('maps upgrade and recover results onto the same exit codes', () => {
    expect(EXIT_FOR).toEqual({ committed: 0, 'would-upgrade': 0, 'up-to-date': 0, rolled_back: 1, refused: 2, failed: 3 });
    expect(RECOVER_EXIT).toEqual({ nothing_to_do: 0, committed: 0, rolled_back: 1, failed: 3 });
  });
});

/** "Exit codes: 0 a, 1 b, ..." sentences of a document, as exit code -> phrase. */
function exitSentences(file: string): Array<Map<number, string>> {
  const text = fs.readFileSync(path.join(root, file), 'utf8').replace(/\s+/g, ' ');
  return [...text.matchAll(/Exit codes: (.*?)\.(?: |$)/g)].map(
    (m) => new Map(m[1]!.split(/, (?=\d )/).map((p) => [Number(p[0]), p.slice(2)] as const)),
  );
}

describe('the exit codes in the docs', () => {
  const sentences = ['README.md', 'docs/design.md'].flatMap((f) => exitSentences(f).map((s) => [f, s] as const));

  it('are found', () => {
    expect(sentences.map(([f]) => f)).toEqual(['README.md', 'README.md', 'docs/design.md']);
  });

  it('say what EXIT and EXIT_FOR say', () => {
    for (const [file, s] of sentences) {
      expect([...s.keys()], file).toEqual([0, 1, 2, 3]);
      if (s.get(0)!.startsWith('committed')) {
        expect(s.get(EXIT_FOR.rolled_back), file).toMatch(/^rolled back/);
        expect(s.get(EXIT_FOR.refused), file).toMatch(/refused/);
        expect(s.get(EXIT_FOR.failed), file).toMatch(/^failed/);
      } else {
        expect(s.get(EXIT.ok), file).toBe('done');
        expect(s.get(EXIT.failed), file).toMatch(/^failed/);
        expect(s.get(EXIT.refused), file).toBe('bad input or refused before anything changed');
        expect(s.get(EXIT.operator), file).toBe('failed and needs the operator');
      }
    }
  });
});
