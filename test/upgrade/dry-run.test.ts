import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { processAlive } from '../../src/process/index.js';
import { upgradePaths } from '../../src/upgrade/journal.js';
import { hugetlbfsMounts, pool, realHugepagesUnavailable } from '../helpers/hugepages.js';
import { makeRelease, type Release } from '../helpers/release.js';
import { fdCount, processesWithEnv, role, startRig, type Rig } from '../helpers/upgrade.js';

const hugepages = realHugepagesUnavailable() === null;

/** What a run that changes nothing must leave exactly as it was. */
interface Snapshot {
  pid: number;
  fds: number;
  role: string;
  stateDir: string[];
  pool: { total: number; free: number } | null;
  mounts: string[];
}

async function snapshot(rig: Rig): Promise<Snapshot> {
  // The old instance closes the control connection of a finished command on its own time.
  await new Promise((res) => setTimeout(res, 300));
  const fds = fdCount(rig.dp.pid);
  return {
    pid: (await rig.dp.status()).pid,
    fds,
    role: await role(rig.dp.control),
    stateDir: fs.readdirSync(rig.stateDir, { recursive: true }).map(String).sort(),
    pool: hugepages ? pool() : null,
    mounts: hugetlbfsMounts(),
  };
}

/** Nothing of a run is left: no process it started, no mem file, no lock or journal. */
async function expectNothingChanged(rig: Rig, before: Snapshot): Promise<void> {
  expect(await snapshot(rig)).toEqual(before);
  expect(processAlive(before.pid)).toBe(true);
  expect(processesWithEnv(`ZIU_STATE_DIR=${rig.stateDir}`)).toEqual([]);
  const files = await rig.cli(['memfile', 'list', '--json']);
  expect(JSON.parse(files.stdout)).toEqual([]);
  const paths = upgradePaths(rig.dp.control, rig.stateDir);
  expect(fs.existsSync(paths.journal)).toBe(false);
  expect(fs.existsSync(paths.lock)).toBe(false);
  expect(fs.existsSync(paths.last)).toBe(false);
}

interface DryReport {
  result: string;
  new: unknown;
  memory: unknown;
  phases: Record<string, number>;
  state_format: number;
  old: { pid: number; version: string };
  preflight: { target: { datapath: string; version: string }; up_to_date: boolean; memory: { verdict: string; backing: string; bytes: number } | null };
  code?: string;
}

describe('ziu upgrade --dry-run: preflight only, nothing changed', () => {
  let rig: Rig | null = null;
  let release: Release | null = null;
  afterEach(async () => {
    await rig?.cleanup();
    rig = null;
    release?.remove();
    release = null;
  });

  it("under traffic: 'would-upgrade' with the target, the state format and the memory plan; same pid, fds, pool, files; no frame lost", async () => {
    rig = await startRig({ rate: 1000 });
    const before = await snapshot(rig);
    const r = await rig.upgrade(['--dry-run']);
    expect(r.exitCode, r.stderr).toBe(0);
    const rep = r.report as unknown as DryReport;
    expect(rep).toMatchObject({ result: 'would-upgrade', new: null, memory: null, state_format: 2, old: { pid: rig.dp.pid } });
    expect(Object.keys(rep.phases)).toEqual(['preflight']);
    expect(rep.preflight.target).toMatchObject({ datapath: 'ziu-datapath', version: rep.old.version });
    expect(rep.preflight.up_to_date).toBe(true);
    expect(rep.preflight.memory).toMatchObject({ bytes: 32 << 20, backing: hugepages ? 'hugetlbfs' : 'tmpfs' });
    expect(['fits-now', 'fits-after-reserve']).toContain(rep.preflight.memory!.verdict);
    await expectNothingChanged(rig, before);

    const human = await rig.cli(['upgrade', '--dry-run', '--control', rig.dp.control, '--new', rig.newCommand(), '--mem', '16M']);
    expect(human.exitCode, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^upgrade [0-9a-f]{8}: would-upgrade in \d+ ms\n {2}running: pid \d+, [^;]+; new command: ziu-datapath \S+ \(the same\)\n {2}state format: 2\n {2}memory: 16M (hugetlbfs|tmpfs), fits-/);
    await expectNothingChanged(rig, before);

    // The real upgrade after the dry run goes through: the dry run left nothing in its way.
    const real = await rig.upgrade();
    expect(real.exitCode, real.stderr).toBe(0);
    expect(real.report['result']).toBe('committed');
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, duplicated: 0, reconnects: 0 });
  });

  it('refuses what the upgrade would refuse, with the same exit code, message and code, changing nothing', async () => {
    rig = await startRig({ probe: false, datapathArgs: ['--state-formats', '1'] });
    const before = await snapshot(rig);
    for (const [args, code, message] of [
      [['--mem', '64T'], 'ERR_ZIU_', /^ziu: --mem 64T(iB)? does not fit/],
      [['--new', rig.newCommand('--state-formats 2')], 'ERR_ZIU_STATE_FORMAT', /^ziu: incompatible state formats: the old instance \(\S+\) exports 1, the new datapath \(\S+\) imports 2$/],
    ] as const) {
      const dry = await rig.upgrade(['--dry-run', ...args]);
      const real = await rig.upgrade([...args]);
      expect(dry.exitCode, dry.stderr).toBe(2);
      expect(real.exitCode, real.stderr).toBe(2);
      expect(dry.stderr).toMatch(message);
      expect(dry.stderr).toBe(real.stderr);
      expect(dry.report).toMatchObject({ result: 'refused', code: real.report['code'], new: null });
      expect(String(dry.report['code'])).toContain(code);
      await expectNothingChanged(rig, before);
    }
  });

  it('refuses while another upgrade holds the lock or left its journal, and leaves both alone', async () => {
    rig = await startRig({ probe: false });
    const paths = upgradePaths(rig.dp.control, rig.stateDir);
    fs.mkdirSync(path.dirname(paths.lock), { recursive: true, mode: 0o700 });
    const lock = `${JSON.stringify({ pid: process.pid, upgradeId: 'other', since: '2026-01-01T00:00:00.000Z', control: rig.dp.control })}\n`;
    fs.writeFileSync(paths.lock, lock);
    const locked = await rig.upgrade(['--dry-run']);
    expect(locked.exitCode, locked.stderr).toBe(2);
    expect(locked.report).toMatchObject({ result: 'refused', code: 'ERR_ZIU_LOCKED' });
    expect(locked.stderr).toContain(`another upgrade of ${rig.dp.control} is running: pid ${process.pid}, upgrade other`);
    expect(fs.readFileSync(paths.lock, 'utf8')).toBe(lock);
    fs.rmSync(paths.lock);

    const journal = `${JSON.stringify({ version: 1, upgradeId: 'crashed', control: rig.dp.control, phase: 'transfer', phases: [] })}\n`;
    fs.writeFileSync(paths.journal, journal);
    const unfinished = await rig.upgrade(['--dry-run']);
    expect(unfinished.exitCode, unfinished.stderr).toBe(2);
    expect(unfinished.report).toMatchObject({ result: 'refused', code: 'ERR_ZIU_JOURNAL_EXISTS' });
    expect(unfinished.stderr).toContain("of an unfinished upgrade (crashed, phase transfer) is in the way; run 'ziu recover' first");
    expect(fs.readFileSync(paths.journal, 'utf8')).toBe(journal);
    expect(processesWithEnv(`ZIU_STATE_DIR=${rig.stateDir}`)).toEqual([]);
  });
});

describe('ziu upgrade --skip-if-current: a node that runs the target version is left alone', () => {
  let rig: Rig | null = null;
  let release: Release | null = null;
  afterEach(async () => {
    await rig?.cleanup();
    rig = null;
    release?.remove();
    release = null;
  });

  it("'up-to-date' for the running version (changing nothing), an upgrade to another version, then 'up-to-date' for that one", async () => {
    rig = await startRig({ rate: 1000 });
    const current = await rig.upgrade(['--skip-if-current', '--dry-run']);
    const version = (current.report['old'] as { version: string }).version;
    release = makeRelease(fs.mkdtempSync('/tmp/ziu-release-'), `${version}-next.1`);
    const before = await snapshot(rig);
    expect(current.exitCode, current.stderr).toBe(0);
    expect(current.report).toMatchObject({ result: 'up-to-date', new: null, preflight: { up_to_date: true, target: { version } } });

    const same = await rig.upgrade(['--skip-if-current']);
    expect(same.exitCode, same.stderr).toBe(0);
    expect(same.report).toMatchObject({ result: 'up-to-date', new: null, switchover_us: null, preflight: { up_to_date: true } });
    await expectNothingChanged(rig, before);

    const next = `${release.datapath} --control ${rig.dp.control} --instance next`;
    const wouldBe = await rig.upgrade(['--skip-if-current', '--dry-run', '--new', next]);
    expect(wouldBe.exitCode, wouldBe.stderr).toBe(0);
    expect(wouldBe.report).toMatchObject({ result: 'would-upgrade', preflight: { up_to_date: false, target: { version: release.version } } });

    const up = await rig.upgrade(['--skip-if-current', '--new', next]);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.report).toMatchObject({ result: 'committed', new: { version: release.version }, preflight: { up_to_date: false } });
    const pid = (up.report['new'] as { pid: number }).pid;
    rig.pids.add(pid);
    await new Promise((res) => setTimeout(res, 300));
    const fds = fdCount(pid);

    const again = await rig.upgrade(['--skip-if-current', '--new', next]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.report).toMatchObject({ result: 'up-to-date', old: { pid, version: release.version } });
    await new Promise((res) => setTimeout(res, 300));
    expect(fdCount(pid)).toBe(fds);
    expect((await rig.dp.status()).pid).toBe(pid);
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, reconnects: 0 });
  });
});
