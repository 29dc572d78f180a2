import fs from 'node:fs';
import path from 'node:path';
import { launchDatapath } from '../datapath/launch.js';
import { hasCode } from '../errors.js';
import { pageSizeInfo, PAGE_SIZES, unmount, type HugepageHost } from '../hugepages/index.js';
import type { Logger } from '../log.js';
import { MemFileStore, type CreateResult } from '../memfile/index.js';
import { processAlive, stopProcess } from '../process/index.js';

// The instance serving at teardown gets this long to close its ports and exit on SIGTERM.
const STOP_GRACE_MS = 3000;

export interface WorkspaceOptions {
  host: HugepageHost;
  privileged: boolean;
  /** name prefix of the directory: ziu-demo-, ziu-bench- */
  prefix: string;
  /** its parent; must be on tmpfs, since tmpfs mem files live inside (default /dev/shm) */
  baseDir?: string;
  log: Logger;
}

/** What was made and is verifiably gone at teardown; problems name what is not. */
export interface WorkspaceCleanup {
  processes: number;
  memFiles: number;
  tempDir: boolean;
  problems: string[];
}

/**
 * One fresh directory for datapath instances run on this host for a while
 * (the demo, a bench run): their sockets, logs, mem files on a hugetlbfs
 * mount of their own as root (tmpfs otherwise), the upgrade journal. Nothing
 * under /run/ziu, /dev/shm/ziu or ziu's shared mounts is touched, so teardown
 * can undo exactly what was made, and prove it.
 */
export class Workspace {
  readonly dir: string;
  readonly store: MemFileStore;
  readonly log: Logger;
  /** every datapath pid started here, for teardown */
  readonly pids = new Set<number>();
  /** every mem file instance created in the store (also by upgrades run here) */
  readonly memInstances = new Set<string>();
  /** the instance forwarding now: stopped gently at teardown, the others killed */
  servingPid: number | null = null;
  readonly #host: HugepageHost;

  constructor(o: WorkspaceOptions) {
    this.dir = fs.mkdtempSync(path.join(o.baseDir ?? '/dev/shm', o.prefix));
    this.#host = o.host;
    this.log = o.log;
    this.store = new MemFileStore({
      host: o.host,
      privileged: o.privileged,
      stateDir: this.dir,
      tmpfsDir: path.join(this.dir, 'shm'),
      hugetlbfsDir: (p) => path.join(this.dir, `hugepages-${pageSizeInfo(p).name}`),
    });
  }

  path(name: string): string {
    return path.join(this.dir, name);
  }

  async createMem(instance: string, size: number, pageSize: number): Promise<CreateResult> {
    this.memInstances.add(instance);
    return this.store.create({ instance, role: 'packets', size, pageSize, backing: 'auto' });
  }

  /** Remove an instance's mem files; gone already (an upgrade removes the old one's on commit) is fine. */
  async removeMem(instance: string): Promise<void> {
    try {
      await this.store.remove(instance);
    } catch (err) {
      if (!hasCode(err, 'ERR_ZIU_NO_MEMFILE')) throw err;
    }
  }

  /** Start a datapath here (log and notify socket named after it); resolves at READY=1. */
  async launch(o: { name: string; control: string; args: string[]; readyTimeoutMs: number; signal?: AbortSignal }): Promise<number> {
    const l = await launchDatapath({
      control: o.control,
      args: o.args,
      readyTimeoutMs: o.readyTimeoutMs,
      logFile: this.path(`${o.name}.log`),
      notifyPath: this.path(`${o.name}.notify.sock`),
      log: this.log,
      ...(o.signal ? { signal: o.signal } : {}),
      // Tracked from the spawn on: an instance that never becomes ready is still ours to stop.
      onSpawn: (pid) => this.pids.add(pid),
    });
    return l.pid;
  }

  /**
   * Undo everything: `first` (the probes, say), every process (the serving
   * one gently), then the mem files (only now: a file still mapped would keep
   * its pages; the store gives back the hugepages it added for each), the
   * mounts, the directory. Never throws.
   */
  async teardown(first: Array<[what: string, run: () => Promise<unknown>]> = []): Promise<WorkspaceCleanup> {
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    for (const [what, run] of first) await attempt(what, run);
    for (const pid of this.pids) await attempt(`stopping pid ${pid}`, () => stopProcess(pid, pid === this.servingPid ? STOP_GRACE_MS : 0));
    const alive = [...this.pids].filter((pid) => processAlive(pid));
    for (const pid of alive) problems.push(`process ${pid} is still running`);

    let left: string[] = [];
    await attempt('removing mem files', async () => {
      for (const f of await this.store.list()) await this.removeMem(f.instance);
      left = (await this.store.list()).map((f) => f.instance);
    });
    for (const inst of new Set(left)) problems.push(`mem files of ${inst} remain`);
    for (const { bytes } of PAGE_SIZES) {
      const mount = this.store.hugetlbfsDir(bytes);
      if (fs.existsSync(mount)) await attempt(`unmounting ${mount}`, () => unmount(this.#host, mount));
    }
    await attempt(`removing ${this.dir}`, async () => fs.rmSync(this.dir, { recursive: true, force: true }));
    return {
      processes: this.pids.size - alive.length,
      memFiles: [...this.memInstances].filter((m) => !left.includes(m)).length,
      tempDir: !fs.existsSync(this.dir),
      problems,
    };
  }
}
