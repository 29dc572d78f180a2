import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The rooms of src/ and which may import which (docs/architecture.md). A
 * room is a folder of src/ (or a file at its top). Lower rooms never import
 * higher ones; some rooms are entered only through their front door.
 */
const BASE = ['errors', 'error-codes', 'log', 'version', 'options', 'snake-case', 'trusted-dir', 'types'];
const MAY: Record<string, string[]> = {
  native: [],
  net: ['native'],
  sched: ['native'],
  hugepages: [],
  process: ['native'],
  dpdk: ['process'],
  vhost: ['net'],
  control: ['net', 'native'],
  memfile: ['hugepages', 'native', 'process'],
  handover: ['native', 'sched'],
  datapath: ['control', 'handover', 'vhost', 'net', 'native', 'sched', 'memfile', 'process'],
  probe: ['vhost', 'net', 'native', 'sched'],
  upgrade: ['control', 'handover', 'hugepages', 'memfile', 'native', 'sched', 'process'],
  workspace: ['upgrade', 'datapath', 'hugepages', 'memfile', 'process'],
  bench: ['upgrade', 'datapath', 'probe', 'sched', 'hugepages', 'memfile', 'process', 'workspace'],
  demo: ['bench', 'upgrade', 'datapath', 'probe', 'sched', 'hugepages', 'memfile', 'process', 'workspace'],
  tables: ['control', 'native'],
  cli: ['bench', 'demo', 'upgrade', 'probe', 'sched', 'hugepages', 'memfile', 'workspace', 'tables'],
};
/** Rooms entered only through these files when imported from another room. */
const FRONT_DOOR: Record<string, string[]> = {
  upgrade: ['upgrade/index.ts'],
  datapath: ['datapath/bin.ts', 'datapath/launch.ts'],
};

const SRC = path.resolve(import.meta.dirname, '..', 'src');

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

function roomOf(rel: string): string {
  return rel.split('/')[0]!.replace(/\.d\.ts$|\.ts$/, '');
}

/** Every relative import of every file in src, as [from, to] paths relative to src (.ts). */
function imports(): Array<{ from: string; to: string }> {
  const out: Array<{ from: string; to: string }> = [];
  for (const f of files(SRC)) {
    const text = fs.readFileSync(f, 'utf8');
    for (const m of text.matchAll(/(?:import|export)\s[^;]*?from\s+'(\.{1,2}\/[^']+)'|import\('(\.{1,2}\/[^']+)'\)/g)) {
      const spec = (m[1] ?? m[2])!;
      const to = path.relative(SRC, path.resolve(path.dirname(f), spec)).replace(/\.js$/, '.ts');
      out.push({ from: path.relative(SRC, f), to });
    }
  }
  return out;
}

function violations(edges: Array<{ from: string; to: string }>): string[] {
  const bad: string[] = [];
  for (const { from, to } of edges) {
    const a = roomOf(from);
    const b = roomOf(to);
    if (a === b || BASE.includes(b)) continue;
    if (BASE.includes(a)) {
      bad.push(`${from} -> ${to}: ${a} is a base module and imports no room`);
      continue;
    }
    const may = MAY[a];
    if (may === undefined) {
      bad.push(`${from}: room '${a}' is not in docs/architecture.md`);
      continue;
    }
    if (!may.includes(b)) bad.push(`${from} -> ${to}: ${a} may not import ${b}`);
    else if (FRONT_DOOR[b] && !FRONT_DOOR[b].includes(to)) bad.push(`${from} -> ${to}: ${b} is entered through ${FRONT_DOOR[b].join(' or ')}`);
  }
  return bad;
}

describe('architecture: which room of src may import which (docs/architecture.md)', () => {
  it('no import in src crosses a forbidden line', () => {
    expect(violations(imports())).toEqual([]);
  });

  it('the check fails on the lines the page forbids: cli -> native, bench -> upgrade internals, anything -> cli, a lower room -> a higher one', () => {
    expect(violations([{ from: 'cli/upgrade.ts', to: 'native/index.ts' }])).toEqual(['cli/upgrade.ts -> native/index.ts: cli may not import native']);
    expect(violations([{ from: 'bench/modes.ts', to: 'upgrade/upgrade.ts' }])).toEqual(['bench/modes.ts -> upgrade/upgrade.ts: upgrade is entered through upgrade/index.ts']);
    expect(violations([{ from: 'bench/results.ts', to: 'cli/output.ts' }])).toEqual(['bench/results.ts -> cli/output.ts: bench may not import cli']);
    expect(violations([{ from: 'net/socket.ts', to: 'datapath/engine.ts' }])).toEqual(['net/socket.ts -> datapath/engine.ts: net may not import datapath']);
    expect(violations([{ from: 'upgrade/peer.ts', to: 'datapath/handover/index.ts' }])).toEqual(['upgrade/peer.ts -> datapath/handover/index.ts: upgrade may not import datapath']);
    expect(violations([{ from: 'log.ts', to: 'native/index.ts' }])).toEqual(['log.ts -> native/index.ts: log is a base module and imports no room']);
  });

  it('the page and this test name the same rooms', () => {
    const page = fs.readFileSync(path.resolve(SRC, '..', 'docs', 'architecture.md'), 'utf8');
    const rooms = [...page.matchAll(/^\| `src\/([a-z-]+)\/?` \|/gm)].map((m) => m[1]!);
    expect(rooms.sort()).toEqual(Object.keys(MAY).sort());
    const onDisk = fs.readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    for (const d of onDisk) expect([...Object.keys(MAY), ...BASE], `src/${d} is a room the page does not describe`).toContain(d);
  });
});
