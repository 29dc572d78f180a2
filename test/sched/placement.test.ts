import fs from 'node:fs';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { DATAPATH_BIN } from '../../src/datapath/bin.js';
import { native } from '../../src/native/index.js';
import { formatCpuList, onlineCpus, parseCpuList, parsePriority, placeThread, readPlacement } from '../../src/sched/placement.js';
import { ziu } from '../cli/helpers.js';
import { procSched } from '../helpers/sched.js';

const online = onlineCpus();

describe('CPU lists and priorities', () => {
  it('parses lists of CPUs that exist and refuses the rest naming the flag', () => {
    expect(parseCpuList('0', '--x', [0, 1])).toEqual([0]);
    expect(parseCpuList('0-1', '--x', [0, 1])).toEqual([0, 1]);
    expect(parseCpuList('1,0,1', '--x', [0, 1])).toEqual([0, 1]);
    expect(() => parseCpuList('2', '--worker-cpus', [0, 1])).toThrow("--worker-cpus '2': CPU 2 does not exist here (online: 0-1)");
    expect(() => parseCpuList('1-', '--worker-cpus', [0, 1])).toThrow("--worker-cpus '1-': use a CPU list such as 1, 0-1 or 1,3 (online: 0-1)");
    expect(() => parseCpuList('3-1', '--worker-cpus', [0, 1])).toThrow('use a CPU list');
    expect(formatCpuList([0, 1, 2, 5, 7, 8])).toBe('0-2,5,7-8');
  });

  it('takes SCHED_FIFO priorities 1..99 only', () => {
    expect(parsePriority('1', '--p')).toBe(1);
    expect(parsePriority('99', '--p')).toBe(99);
    for (const bad of ['0', '100', '-5', '1.5', 'high', '']) expect(() => parsePriority(bad, '--p')).toThrow(`--p '${bad}': a SCHED_FIFO priority is a whole number from 1 to 99`);
  });

  it('places a thread and reads back what the kernel applied, as /proc shows it', () => {
    const tid = native.gettid();
    const before = readPlacement(tid);
    try {
      const cpu = online.at(-1)!;
      const r = placeThread(tid, { cpus: [cpu], priority: null }, 'this thread');
      expect(r.applied.cpus).toEqual([cpu]);
      expect(procSched(process.pid, tid).cpusAllowed).toBe(String(cpu));
    } finally {
      native.schedSet(tid, before.cpus, -1, 0);
    }
  });
});

describe('ziu-datapath and ziu bench refuse bad placement before anything starts', () => {
  const missing = String(Math.max(...online) + 1);
  it.each([
    [['--worker-cpus', missing], `ziu-datapath: --worker-cpus '${missing}': CPU ${missing} does not exist here (online: ${formatCpuList(online)})`],
    [['--worker-priority', '0'], "ziu-datapath: --worker-priority '0': a SCHED_FIFO priority is a whole number from 1 to 99"],
    [['--worker-priority', '100'], "ziu-datapath: --worker-priority '100': a SCHED_FIFO priority is a whole number from 1 to 99"],
  ])('ziu-datapath %j exits 2 with one line', async (args, line) => {
    const r = await execa('node', [DATAPATH_BIN, '--control', '/tmp/ziu-never.sock', '--mem-file', '/nonexistent', '--vhost-user', 'a=/tmp/ziu-never-a.sock', ...args], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim()).toBe(line);
    expect(fs.existsSync('/tmp/ziu-never.sock')).toBe(false);
  });

  it.each([
    [['--worker-cpus', missing], `ziu: --worker-cpus '${missing}': CPU ${missing} does not exist here (online: ${formatCpuList(online)})`],
    [['--vm-priority', '100'], "ziu: --vm-priority '100': a SCHED_FIFO priority is a whole number from 1 to 99"],
  ])('ziu bench %j exits 2 with one line', async (args, line) => {
    const out = fs.mkdtempSync('/tmp/ziu-bench-out-');
    try {
      const r = await ziu(['bench', '--out', out, ...args]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr.trim()).toBe(line);
      expect(fs.readdirSync(out)).toEqual([]);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});

describe('without the privilege for SCHED_FIFO', () => {
  const root = process.getuid?.() === 0;
  if (!root) console.log('skipping the fallback check: it drops CAP_SYS_NICE from root');
  it.skipIf(!root)('a thread keeps SCHED_OTHER on the CPUs it got, and the report says why', async () => {
    // The built module (npm test builds dist/ first), in a process without CAP_SYS_NICE.
    const script = [
      "const { native } = await import('./dist/native/index.js');",
      "const { placeThread } = await import('./dist/sched/placement.js');",
      'const r = placeThread(native.gettid(), { cpus: [0], priority: 40 }, "this thread");',
      'console.log(JSON.stringify(r));',
    ].join('\n');
    const r = await execa('setpriv', ['--inh-caps=-all', '--bounding-set=-sys_nice', process.execPath, '--input-type=module', '-e', script], { reject: false, cwd: process.cwd() });
    expect(r.exitCode, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { applied: { policy: string; cpus: number[] }; fallback: string | null };
    expect(out.applied).toMatchObject({ policy: 'other', cpus: [0] });
    expect(out.fallback).toBe('SCHED_FIFO 40 refused (no CAP_SYS_NICE or RLIMIT_RTPRIO): running SCHED_OTHER');
  });
});
