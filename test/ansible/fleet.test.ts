import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProbe, type ProbeReport, type RunningProbe } from '../../src/probe/index.js';
import { processAlive } from '../../src/process/index.js';
import { ziu, ZIU } from '../cli/helpers.js';
import { startDatapath, type RunningDatapath } from '../helpers/datapath.js';
import { hostSnapshot, hugetlbfsMounts, pool, realHugepagesUnavailable } from '../helpers/hugepages.js';
import { makeRelease, type Release } from '../helpers/release.js';
import { fdCount, processesWithEnv, role } from '../helpers/upgrade.js';

/*
 * The ziu.vswitch collection, built and installed with ansible-galaxy, rolls
 * a fleet of datapath nodes on this one machine with ansible-core's
 * ansible-playbook. Every node is its own inventory host (local connection)
 * with its own ziu-datapath, control socket, state dir, hugetlbfs mount, mem
 * files and probe traffic. The new release is this checkout installed again
 * with another version, as a package upgrade would put it beside the old one.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const NODES = Number(process.env['ZIU_FLEET_NODES'] ?? 6);
const RATE = 200;
const hugepages = realHugepagesUnavailable() === null;

function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}
const missing = ['ansible-playbook', 'ansible-galaxy'].filter((c) => which(c) === null);
const skip = missing.length > 0 ? `${missing.join(' and ')} not found (ansible-core: scripts/install-system-deps installs it)` : null;
if (skip) console.warn(`skipping the Ansible fleet tests: ${skip}`);

interface Node {
  name: string;
  dp: RunningDatapath;
  root: string;
  env: { ZIU_STATE_DIR: string; ZIU_TMPFS_DIR: string; ZIU_HUGEPAGE_DIR_2M: string; ZIU_LOG_LEVEL: string };
  probe: RunningProbe | null;
  report: ProbeReport | null;
}

interface NodeState {
  pid: number;
  fds: number;
  role: string;
  version: string;
  memfiles: string[];
}

interface Row {
  node: string;
  result: string;
  switchover_us: number | null;
  outage_us: number | null;
  phase: string | null;
  reason: string | null;
}

interface Summary {
  check_mode: boolean;
  hosts: number;
  counts: Record<string, number>;
  nodes: Row[];
}

interface Recap {
  ok: number;
  changed: number;
  failed: number;
  skipped: number;
  rescued: number;
}

describe.skipIf(skip !== null)(`the ziu.vswitch collection rolls a fleet of ${NODES} datapath nodes (ansible-playbook, local connection)`, () => {
  let root = '';
  let release: Release;
  let version = '';
  const nodes: Node[] = [];
  let snapshot: { restore: () => void } | null = null;
  let runs = 0;
  const times: Record<string, number> = {};

  beforeAll(async () => {
    snapshot = hugepages ? hostSnapshot() : null;
    root = fs.mkdtempSync('/tmp/ziu-fleet-');
    version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    release = makeRelease(path.join(root, 'release'), `${version}-fleet.1`);
    for (let i = 1; i <= NODES; i++) {
      const name = `node${i}`;
      const nodeRoot = path.join(root, name);
      fs.mkdirSync(nodeRoot, { mode: 0o700 });
      const env = {
        ZIU_STATE_DIR: path.join(nodeRoot, 'state'),
        ZIU_TMPFS_DIR: path.join(nodeRoot, 'tmpfs'),
        ZIU_HUGEPAGE_DIR_2M: path.join(nodeRoot, 'hugepages-2M'),
        ZIU_LOG_LEVEL: 'warn',
      };
      const dp = await startDatapath({ logFile: path.join(nodeRoot, 'old.log') });
      nodes.push({ name, dp, root: nodeRoot, env, probe: null, report: null });
    }
    for (const n of nodes) n.probe = await startProbe({ tx: n.dp.sock['a']!, rx: n.dp.sock['b']!, rate: RATE, size: 128, ringSize: 1024 });
  }, 120_000);

  afterAll(async () => {
    for (const n of nodes) await n.probe?.stop().catch(() => undefined);
    for (const n of nodes) {
      // Whoever serves the node now (the old instance, or the new one after a commit), then anything a run left.
      const pid = await n.dp.status().then((s) => s.pid).catch(() => null);
      await n.dp.stop().catch(() => undefined);
      if (pid !== null && processAlive(pid)) process.kill(pid, 'SIGKILL');
      for (const p of processesWithEnv(`ZIU_STATE_DIR=${n.env.ZIU_STATE_DIR}`)) process.kill(p, 'SIGKILL');
    }
    await new Promise((res) => setTimeout(res, 200));
    for (const n of nodes) {
      const list = await ziu(['memfile', 'list', '--json'], { env: n.env }).catch(() => null);
      for (const f of list ? (JSON.parse(list.stdout || '[]') as Array<{ instance: string }>) : []) await ziu(['memfile', 'remove', f.instance], { env: n.env });
      await ziu(['hugepages', 'status', '--json'], { env: n.env }).catch(() => undefined);
      if (hugetlbfsMounts().includes(n.env.ZIU_HUGEPAGE_DIR_2M)) execFileSync('umount', [n.env.ZIU_HUGEPAGE_DIR_2M]);
    }
    snapshot?.restore();
    if (root && !process.env["ZIU_FLEET_KEEP_LOGS"]) fs.rmSync(root, { recursive: true, force: true });
    console.log(`fleet test phases (s): ${JSON.stringify(times)}`);
  }, 60_000);

  function inventory(extra: Record<string, Record<string, unknown>> = {}): string {
    const hosts: Record<string, unknown> = {};
    for (const n of nodes) {
      hosts[n.name] = {
        ansible_connection: 'local',
        ansible_python_interpreter: '/usr/bin/python3',
        ziu_control: n.dp.control,
        // The full command line until ziu reuses the running instance's configuration.
        ziu_new_command: `${release.datapath} --control ${n.dp.control} --vhost-user a=${n.dp.sock['a']},server --vhost-user b=${n.dp.sock['b']},server --instance ${n.name}-next`,
        ziu_mem: '16M',
        ziu_executable: [process.execPath, ZIU],
        ziu_environment: n.env,
        ...extra[n.name],
      };
    }
    const file = path.join(root, `inventory-${++runs}.yml`);
    fs.writeFileSync(file, JSON.stringify({ all: { children: { ziu_datapaths: { hosts } } } }, null, 2));
    return file;
  }

  const ansibleEnv = (): Record<string, string> => ({
    ANSIBLE_COLLECTIONS_PATH: path.join(root, 'collections'),
    ANSIBLE_HOME: path.join(root, 'ansible-home'),
    ANSIBLE_LOCAL_TEMP: path.join(root, 'ansible-tmp'),
    ANSIBLE_REMOTE_TMP: path.join(root, 'ansible-tmp'),
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_PIPELINING: '1',
    ANSIBLE_RETRY_FILES_ENABLED: '0',
    ANSIBLE_LOCALHOST_WARNING: '0',
    ANSIBLE_INVENTORY_UNPARSED_WARNING: '0',
  });

  function parseRecap(out: string): Record<string, Recap> {
    const recap: Record<string, Recap> = {};
    for (const m of out.matchAll(/^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)/gm)) {
      recap[m[1]!] = { ok: Number(m[2]), changed: Number(m[3]), failed: Number(m[4]), skipped: Number(m[5]), rescued: Number(m[6]) };
    }
    return recap;
  }

  async function playbook(name: string, inv: string, args: string[] = []): Promise<{ exitCode: number; out: string; recap: Record<string, Recap>; summary: Summary; markdown: string; dir: string }> {
    const t = performance.now();
    const r = await execa('ansible-playbook', ['-i', inv, 'ziu.vswitch.rolling_upgrade', '-f', String(NODES), '-e', JSON.stringify({ ziu_report_dir: path.join(root, 'reports'), ziu_run_id: name, ziu_batches: [1, '25%', '100%'] }), ...args], {
      reject: false,
      timeout: 150_000,
      cwd: root,
      env: ansibleEnv(),
    });
    times[name] = Math.round((performance.now() - t) / 100) / 10;
    const out = `${r.stdout}\n${r.stderr}`;
    fs.writeFileSync(path.join(root, `${name}.log`), out);
    const recap = parseRecap(out);
    const dir = path.join(root, 'reports', name);
    const read = (f: string): string => {
      try {
        return fs.readFileSync(path.join(dir, f), 'utf8');
      } catch {
        throw new Error(`no ${f} after the ${name} run (exit ${r.exitCode}):\n${out.slice(-6000)}`);
      }
    };
    return { exitCode: r.exitCode ?? -1, out, recap, summary: JSON.parse(read('summary.json')) as Summary, markdown: read('summary.md'), dir };
  }

  /** Every node's state, once the control connections of the last commands are closed on the datapaths' side too. */
  async function fleetState(): Promise<{ nodes: NodeState[]; pool: { total: number; free: number } | null; mounts: string[] }> {
    const statuses = [];
    for (const n of nodes) statuses.push(await n.dp.status());
    await new Promise((res) => setTimeout(res, 300));
    // fds first: the role() and memfile queries below open connections of their own.
    const fds = statuses.map((s) => fdCount(s.pid));
    const states: NodeState[] = [];
    for (const [i, n] of nodes.entries()) {
      const list = await ziu(['memfile', 'list', '--json'], { env: n.env });
      states.push({
        pid: statuses[i]!.pid,
        fds: fds[i]!,
        role: await role(n.dp.control),
        version: statuses[i]!.version,
        memfiles: (JSON.parse(list.stdout || '[]') as Array<{ instance: string; role: string }>).map((f) => `${f.instance}/${f.role}`).sort(),
      });
    }
    return { nodes: states, pool: hugepages ? pool() : null, mounts: hugetlbfsMounts() };
  }

  /** No process a run started is left, but the instance that serves each node now (a committed new one carries the node's env). */
  function noStrayProcesses(serving: number[]): void {
    for (const [i, n] of nodes.entries()) {
      expect(processesWithEnv(`ZIU_STATE_DIR=${n.env.ZIU_STATE_DIR}`).filter((p) => p !== serving[i]), n.name).toEqual([]);
    }
  }

  it('builds with ansible-galaxy collection build and installs with ansible-galaxy collection install', async () => {
    const t = performance.now();
    const built = await execa('ansible-galaxy', ['collection', 'build', path.join(ROOT, 'ansible'), '--output-path', path.join(root, 'build')], { reject: false });
    expect(built.exitCode, built.stderr).toBe(0);
    const tarball = path.join(root, 'build', 'ziu-vswitch-0.1.0.tar.gz');
    expect(fs.existsSync(tarball)).toBe(true);
    const installed = await execa('ansible-galaxy', ['collection', 'install', tarball, '-p', path.join(root, 'collections')], { reject: false, env: { ANSIBLE_HOME: path.join(root, 'ansible-home') } });
    expect(installed.exitCode, installed.stderr).toBe(0);
    const at = path.join(root, 'collections', 'ansible_collections', 'ziu', 'vswitch');
    for (const f of ['plugins/modules/ziu_upgrade.py', 'plugins/modules/ziu_memory.py', 'plugins/modules/ziu_fleet_summary.py', 'roles/ziu_rolling_upgrade/tasks/main.yml', 'playbooks/rolling_upgrade.yml', 'MANIFEST.json']) {
      expect(fs.existsSync(path.join(at, f)), f).toBe(true);
    }
    const doc = await execa('ansible-doc', ['ziu.vswitch.ziu_upgrade'], { reject: false, env: ansibleEnv() });
    expect(doc.exitCode, doc.stderr).toBe(0);
    expect(doc.stdout).toContain('ziu upgrade --dry-run');
    times['galaxy'] = Math.round((performance.now() - t) / 100) / 10;
  }, 60_000);

  it('examples/prepare-memory.yml (ziu_memory): plans and creates the mem files, then is unchanged; --check removes nothing; absent gives them back', async () => {
    const t = performance.now();
    const node = nodes[0]!;
    const inv = inventory();
    const run = async (extra: Record<string, unknown>, args: string[] = []) => {
      const r = await execa('ansible-playbook', ['-i', inv, '-l', node.name, path.join(ROOT, 'examples', 'prepare-memory.yml'), '-e', JSON.stringify({ ziu_become: false, new_instance: 'fleet-next', mem_files: [{ role: 'pool-0', size: '4M' }, { role: 'flow', size: '2M' }], ...extra }), ...args], { reject: false, cwd: root, env: ansibleEnv() });
      const out = `${r.stdout}\n${r.stderr}`;
      expect(r.exitCode, out.slice(-3000)).toBe(0);
      return parseRecap(out)[node.name]!;
    };
    const files = async () => (JSON.parse((await ziu(['memfile', 'list', '--json'], { env: node.env })).stdout) as Array<{ instance: string; role: string; bytes: number; backing: string }>).map((f) => [f.instance, f.role, f.bytes, f.backing]);
    const backing = hugepages ? 'hugetlbfs' : 'tmpfs';
    expect(await run({})).toMatchObject({ changed: 1, failed: 0 });
    const made = [['fleet-next', 'flow', 2 << 20, backing], ['fleet-next', 'pool-0', 4 << 20, backing]];
    expect((await files()).sort()).toEqual(made);
    expect(await run({})).toMatchObject({ changed: 0, failed: 0 });
    expect(await run({ mem_state: 'absent' }, ['--check'])).toMatchObject({ changed: 1, failed: 0 });
    expect((await files()).sort()).toEqual(made);
    expect(await run({ mem_state: 'absent' })).toMatchObject({ changed: 1, failed: 0 });
    expect(await files()).toEqual([]);
    times['memory'] = Math.round((performance.now() - t) / 100) / 10;
  }, 120_000);

  it('check mode (--check) changes nothing: the same pids, fds, roles, mem files and pool; every node would upgrade', async () => {
    const before = await fleetState();
    const run = await playbook('check', inventory(), ['--check']);
    expect(run.exitCode, run.out.slice(-4000)).toBe(0);
    const after = await fleetState();
    expect(after).toEqual(before);
    noStrayProcesses(after.nodes.map((x) => x.pid));
    expect(run.summary).toMatchObject({ check_mode: true, hosts: NODES, counts: { 'would-upgrade': NODES } });
    expect(run.summary.nodes.map((r) => [r.node, r.result, r.outage_us])).toEqual(nodes.map((n) => [n.name, 'would-upgrade', 0]));
    for (const n of nodes) expect(run.recap[n.name], n.name).toMatchObject({ failed: 0 });
  }, 150_000);

  it('a canary whose new instance crashes rolls back on that node and stops the rollout: no other node is touched', async () => {
    const before = await fleetState();
    const canary = nodes[0]!;
    const run = await playbook('canary', inventory({ [canary.name]: { ziu_environment: { ...canary.env, ZIU_FAULT: 'crash-after-resume' } } }));
    expect(run.exitCode, run.out.slice(-4000)).not.toBe(0);
    const after = await fleetState();
    // The canary serves on its old instance again, with the fds it had; nothing of the new one is left.
    expect(after.nodes[0]).toEqual(before.nodes[0]);
    expect(await role(canary.dp.control)).toBe('active');
    // No other node was touched: not even a pre-check ran there.
    expect(after.nodes.slice(1)).toEqual(before.nodes.slice(1));
    expect(after.pool).toEqual(before.pool);
    noStrayProcesses(after.nodes.map((x) => x.pid));
    expect(run.recap[canary.name]).toMatchObject({ failed: 1 });
    for (const n of nodes.slice(1)) expect(run.recap[n.name], n.name).toBeUndefined();
    expect(run.summary.nodes[0]).toMatchObject({ node: canary.name, result: 'rolled_back', phase: 'verify', switchover_us: expect.any(Number) });
    expect(run.summary.nodes[0]!.reason).toMatch(/^the new instance stopped answering during verify: /);
    expect(run.summary.nodes.slice(1).map((r) => [r.node, r.result])).toEqual(nodes.slice(1).map((n) => [n.name, 'not-run']));
    expect(run.markdown).toMatch(new RegExp(`^\\| ${canary.name} \\| rolled_back \\| [\\d.]+ us \\| - \\| verify \\| the new instance stopped answering during verify`, 'm'));
    const node = JSON.parse(fs.readFileSync(path.join(run.dir, 'nodes', `${canary.name}.json`), 'utf8')) as { report: { rollback: { phase: string } } };
    expect(node.report.rollback.phase).toBe('verify');
  }, 150_000);

  it('a full rollout (canary, 25%, the rest) commits every node with zero frames lost; the summary lists every node', async () => {
    const before = await fleetState();
    const run = await playbook('rollout', inventory());
    expect(run.exitCode, run.out.slice(-4000)).toBe(0);
    const after = await fleetState();
    for (const [i, n] of nodes.entries()) {
      expect(after.nodes[i]!.pid, n.name).not.toBe(before.nodes[i]!.pid);
      expect(after.nodes[i]).toMatchObject({ role: 'active', version: release.version, memfiles: [expect.stringMatching(/^upgrade-[0-9a-f]{8}\/packets$/)] });
      expect(processAlive(before.nodes[i]!.pid)).toBe(false);
      expect(run.recap[n.name], n.name).toMatchObject({ failed: 0, changed: 1 });
    }
    noStrayProcesses(after.nodes.map((x) => x.pid));
    expect(run.summary).toMatchObject({ check_mode: false, hosts: NODES, counts: { committed: NODES } });
    expect(run.summary.nodes.map((r) => r.node)).toEqual(nodes.map((n) => n.name));
    for (const r of run.summary.nodes) {
      expect(r).toMatchObject({ result: 'committed', phase: null, reason: null });
      expect(r.switchover_us).toBeGreaterThan(0);
      expect(r.outage_us).toBe(r.switchover_us);
    }
    const table = run.markdown.split('\n').filter((l) => /^\| node\d+ \|/.test(l));
    expect(table).toHaveLength(NODES);
    // The batches: the canary alone, then 25% of the rest, then the rest.
    expect([...run.out.matchAll(/^PLAY \[(.+)\]/gm)].map((m) => m[1])).toEqual([
      'ziu rolling upgrade | begin',
      'ziu rolling upgrade | canary',
      ...Array(NODES > 1 ? (NODES - 1 > 1 ? 2 : 1) : 0).fill('ziu rolling upgrade | the rest, in growing batches'),
      'ziu rolling upgrade | fleet summary',
    ]);
    for (const n of nodes) {
      n.report = await n.probe!.stop();
      n.probe = null;
    }
    const figures = nodes.map((n, i) => ({ node: n.name, sent: n.report!.sent, lost: n.report!.lost, dup: n.report!.duplicated, maxGapUs: n.report!.maxGapUs, maxGapAtMs: n.report!.maxGapAtMs, senderLateMaxUs: n.report!.latenessUs.max, switchoverUs: run.summary.nodes[i]!.switchover_us }));
    console.log(`fleet rollout: ${JSON.stringify(figures)}`);
    for (const n of nodes) expect(n.report, n.name).toMatchObject({ lost: 0, reordered: 0, reconnects: 0 });
    // The canary's rollback (its new instance died after taking the rings) may send chains again; no other node's may.
    for (const n of nodes.slice(1)) expect(n.report!.duplicated, n.name).toBe(0);
  }, 150_000);

  it('a second run is all ok and unchanged: every node already runs the new version', async () => {
    const before = await fleetState();
    const run = await playbook('again', inventory());
    expect(run.exitCode, run.out.slice(-4000)).toBe(0);
    const after = await fleetState();
    expect(after).toEqual(before);
    noStrayProcesses(after.nodes.map((x) => x.pid));
    for (const n of nodes) expect(run.recap[n.name], n.name).toMatchObject({ changed: 0, failed: 0 });
    expect(run.summary).toMatchObject({ hosts: NODES, counts: { 'up-to-date': NODES } });
    expect(run.summary.nodes.map((r) => [r.node, r.result, r.outage_us])).toEqual(nodes.map((n) => [n.name, 'up-to-date', 0]));
  }, 150_000);
});
