import fs from 'node:fs';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { processAlive } from '../../src/process/index.js';
import { realHugepagesUnavailable } from '../helpers/hugepages.js';
import { cannotRunAs, ziu } from './helpers.js';

const root = process.getuid?.() === 0;
const hugepages = realHugepagesUnavailable() === null;
const NR_HUGEPAGES = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';
const PHASES = ['preflight', 'reserve', 'start', 'ready', 'transfer', 'freeze', 'resume', 'verify', 'commit'];

interface DemoDoc {
  result: string;
  upgrade_id: string;
  switchover_us: number;
  phases: Record<string, number>;
  old: { pid: number; instance: string };
  new: { pid: number; instance: string };
  memory: { instance: string; backing: string; bytes: number };
  traffic: { sent: number; received: number; lost: number; max_gap_us: number };
  mode: { root: boolean; memory: string; tap: boolean; note: string | null };
  dir: string;
  cleanup: { processes: number; mem_files: number; tap: boolean; temp_dir: boolean; problems: string[] };
}

async function tapGone(): Promise<boolean> {
  const r = await execa('ip', ['link', 'show', 'ziudemo0'], { reject: false });
  return r.exitCode !== 0;
}

describe('ziu demo', () => {
  it('--json: one upgrade committed under traffic, zero frames lost; afterwards no process, file, hugepage or tap is left', async () => {
    const poolBefore = hugepages ? fs.readFileSync(NR_HUGEPAGES, 'utf8') : null;
    const r = await ziu(['demo', '--json', '--rate', '2000']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const doc = JSON.parse(r.stdout) as DemoDoc;
    expect(doc.result).toBe('committed');
    expect(doc.switchover_us).toBeGreaterThan(0);
    expect(Object.keys(doc.phases)).toEqual(PHASES);
    expect(doc.old.instance).toBe('demo-old');
    expect(doc.new.instance).toBe('demo-new');
    expect(doc.traffic.lost).toBe(0);
    expect(doc.traffic.sent).toBeGreaterThan(0);
    expect(doc.traffic.received).toBe(doc.traffic.sent);
    expect(doc.traffic.max_gap_us).toBeGreaterThan(0);
    expect(doc.mode).toEqual({
      root,
      memory: hugepages ? 'hugetlbfs' : 'tmpfs',
      tap: root,
      note: !root ? 'not root: tmpfs memory instead of hugepages, no tap' : hugepages ? null : expect.any(String),
    });
    expect(doc.memory).toMatchObject({ instance: `upgrade-${doc.upgrade_id}`, backing: doc.mode.memory, bytes: 64 * 2 ** 20 });
    expect(doc.cleanup).toEqual({ processes: 2, mem_files: 2, tap: root, temp_dir: true, problems: [] });

    expect(processAlive(doc.old.pid)).toBe(false);
    expect(processAlive(doc.new.pid)).toBe(false);
    expect(fs.existsSync(doc.dir)).toBe(false);
    expect(await tapGone()).toBe(true);
    // Test files run one at a time (vitest.config.ts): nothing else moves the pool meanwhile.
    if (poolBefore !== null) expect(fs.readFileSync(NR_HUGEPAGES, 'utf8')).toBe(poolBefore);
  });

  it('prints the mode, the upgrade, the traffic and what was cleaned up; progress goes to stderr', async () => {
    const r = await ziu(['demo', '--rate', '2000', '--size', '128']);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    if (root && hugepages) expect(lines[0]).toBe('ziu demo: 2 vhost-user ports + tap uplink, 64 MiB of 2 MiB hugepages per instance (root)');
    if (!root) expect(lines[0]).toBe('ziu demo: 2 vhost-user ports, 64 MiB of tmpfs memory per instance (not root: tmpfs memory instead of hugepages, no tap)');
    expect(lines[1]).toMatch(/^upgrade [0-9a-f]{8}: committed in \d+ ms$/);
    expect(lines[2]).toMatch(/^ {2}switchover: [\d.]+ us \(/);
    expect(r.stdout).toContain(`  ports: vm1 (traffic), vm2 (traffic)${root ? ', uplink' : '\n'}`);
    expect(r.stdout).toMatch(/\n {2}phases \(ms\): preflight [\d.]+, reserve [\d.]+, .*, commit [\d.]+\n/);
    expect(lines.at(-3)).toMatch(/^traffic: (\d+) sent, \1 received, 0 lost, 0 not sent \(VM TX ring full\)$/);
    expect(lines.at(-2)).toMatch(/^ {2}largest gap [\d.]+ (µs|ms|s) \([\w-]+\); largest latency in the switch [\d.]+ (µs|ms|s) \([\w-]+\); largest sender lateness [\d.]+ (µs|ms|s) \([\w-]+\)$/);
    expect(lines.at(-1)).toBe(`cleaned up: 2 processes, 2 mem files, ${root ? 'tap ziudemo0, ' : ''}temp dir`);
    expect(r.stderr).toMatch(/^ziu demo: working in \/dev\/shm\/ziu-demo-\w+\n/);
    expect(r.stderr).toContain('traffic: 2000 frames/s of 128 bytes, vm1 -> vm2');
    expect(r.stderr).toMatch(/\ncleaning up$/);
    expect(await tapGone()).toBe(true);
  });

  it.skipIf(!root || cannotRunAs(65534) !== null)('as a user without root: tmpfs memory and no tap, said on screen', async () => {
    const r = await ziu(['demo', '--rate', '1000'], { asUser: 65534 });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ziu demo: 2 vhost-user ports, 64 MiB of tmpfs memory per instance \(not root: tmpfs memory instead of hugepages, no tap\)\n/);
    expect(r.stdout).toContain('  memory: 64M tmpfs');
    expect(r.stdout).toMatch(/\ncleaned up: 2 processes, 2 mem files, temp dir$/);
    expect(r.stderr).toContain('\nnot root: tmpfs memory instead of hugepages, no tap\n');
  });

  it('refuses bad options before anything starts', async () => {
    const r = await ziu(['demo', '--rate', '0']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe("ziu: invalid --rate '0': use a whole number in 1..10000000 frames per second");
    const s = await ziu(['demo', '--size', '12', '--json']);
    expect(s.exitCode).toBe(2);
    expect(JSON.parse(s.stdout)).toEqual({ error: { code: 'ERR_ZIU_USAGE', message: "invalid --size '12': use a whole number in 64..9000 bytes" } });
  });
});
