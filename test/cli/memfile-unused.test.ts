import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ziu } from './helpers.js';
import { tempDir } from '../helpers/tmp.js';

describe('memfile remove --unused: what a stopped service leaves (its ExecStopPost)', () => {
  let shm: string;
  let state: ReturnType<typeof tempDir>;
  let env: Record<string, string>;
  let holder: ReturnType<typeof spawn> | null = null;

  beforeEach(() => {
    shm = fs.mkdtempSync('/dev/shm/ziu-cli-');
    state = tempDir();
    // Its own directories only: the host's hugetlbfs mem files are other tests' (and datapaths') to keep.
    env = { ZIU_LOG_LEVEL: 'warn', ZIU_TMPFS_DIR: shm, ZIU_STATE_DIR: state.dir, ZIU_HUGEPAGE_DIR_2M: `${state.dir}/hp-2M`, ZIU_HUGEPAGE_DIR_1G: `${state.dir}/hp-1G` };
  });
  afterEach(() => {
    holder?.kill('SIGKILL');
    holder = null;
    fs.rmSync(shm, { recursive: true, force: true });
    state.remove();
  });

  it('removes every mem file no process holds, whatever its instance, and keeps one a process holds', async () => {
    for (const name of ['dp/packets', 'upgrade-1a2b3c4d/packets', 'other/packets']) {
      expect((await ziu(['memfile', 'create', name, '--size', '2M', '--backing', 'tmpfs'], { env })).exitCode).toBe(0);
    }
    // Another datapath still runs on its memory (here: holds it open).
    holder = spawn('sh', ['-c', `exec 3<"$1"; echo held; exec sleep 60`, 'sh', `${shm}/other/packets`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => holder!.stdout!.once('data', () => resolve()));
    const r = await ziu(['memfile', 'remove', '--unused', '--json'], { env });
    expect(r.exitCode, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Array<{ path: string }>).map((f) => f.path).sort()).toEqual([`${shm}/dp/packets`, `${shm}/upgrade-1a2b3c4d/packets`]);
    const left = JSON.parse((await ziu(['memfile', 'list', '--json'], { env })).stdout) as Array<{ instance: string }>;
    expect(left.map((f) => f.instance)).toEqual(['other']);
    expect((await ziu(['memfile', 'remove', '--unused'], { env })).stdout).toBe('nothing to remove');
  });

  it('takes a name or --unused, not both, not neither', async () => {
    for (const args of [['--unused', 'dp'], []]) {
      const r = await ziu(['memfile', 'remove', ...args], { env });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toBe('ziu: give <instance>[/<role>] or --unused (not both)');
    }
  });
});
