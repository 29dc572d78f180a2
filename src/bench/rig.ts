/**
 * The bench's rig: one datapath instance at a time serving P pairs of
 * vhost-user ports, one probe per pair as the VMs, and everything they need
 * in one fresh directory (sockets, logs, mem files, the hugetlbfs mount,
 * the upgrade journal), so a run never touches /run/ziu, /dev/shm/ziu or
 * ziu's shared mounts, and teardown can prove that nothing is left. Memory
 * comes from the rig's own store like any `ziu upgrade`'s: as root it grows
 * the hugepage pool for each mem file and gives the pages back on removal.
 *
 * The probes are frontends in server mode and the datapath's ports are
 * vhost-user clients: a restarted backend connects again to the same
 * listening probes, as QEMU's `server=on` chardevs and DPDK's virtio-user
 * `server=1` let a restarted vswitch do.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCode } from '../errors.js';
import { pageSizeInfo, PAGE_SIZES, unmount, type HugepageHost } from '../hugepages/index.js';
import type { Logger } from '../log.js';
import { MemFileStore, type Backing, type CreateResult } from '../memfile/index.js';
import { launchDetached, processAlive, stopProcess } from '../upgrade/launch.js';
import { PAGE_SIZE } from './options.js';
import { startTraffic, type PortPair, type Traffic } from './traffic.js';

// dist/bench/rig.js and src/bench/rig.ts sit at the same depth below the package root.
const DATAPATH_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ziu-datapath.js');

const READY_TIMEOUT_MS = 15_000;
// A datapath stopped at teardown gets this long to close its ports on SIGTERM.
const STOP_GRACE_MS = 3000;

export interface RigOptions {
  host: HugepageHost;
  privileged: boolean;
  /** vhost-user port pairs */
  ports: number;
  /** frames per second per pair */
  rate: number;
  size: number;
  /** bytes of memory per datapath instance */
  mem: number;
  /** parent of the rig's temp dir; must be on tmpfs (default /dev/shm) */
  baseDir?: string;
  log: Logger;
  signal?: AbortSignal;
}

/** One instance serving the ports, and the mem file instance it maps. */
export interface Serving {
  pid: number;
  instance: string;
  mem: string;
}

/** What was made and is verifiably gone at the end; problems name what is not. */
export interface RigCleanup {
  processes: number;
  memFiles: number;
  tempDir: boolean;
  problems: string[];
}

export class Rig {
  readonly o: RigOptions;
  readonly dir: string;
  readonly store: MemFileStore;
  readonly control: string;
  readonly pairs: PortPair[];
  /** the backing the instances' memory gets, and why not hugepages if not */
  backing: Backing = 'tmpfs';
  backingNote: string | null = null;
  serving: Serving | null = null;
  /** every datapath pid started, for teardown */
  readonly pids = new Set<number>();
  /** every mem file instance created in the rig's store */
  readonly memInstances = new Set<string>();
  /** the window's probes, stopped by teardown if a window failed */
  #traffic: Traffic | null = null;
  #instances = 0;

  private constructor(o: RigOptions, dir: string) {
    this.o = o;
    this.dir = dir;
    this.store = new MemFileStore({
      host: o.host,
      privileged: o.privileged,
      stateDir: dir,
      tmpfsDir: path.join(dir, 'shm'),
      hugetlbfsDir: (p) => path.join(dir, `hugepages-${pageSizeInfo(p).name}`),
    });
    this.control = path.join(dir, 'dp.sock');
    this.pairs = Array.from({ length: o.ports }, (_, i) => ({ tx: path.join(dir, `a${i}.sock`), rx: path.join(dir, `b${i}.sock`) }));
  }

  /** A fresh directory and its own mem file store (hugepages as root, else tmpfs). */
  static async create(o: RigOptions): Promise<Rig> {
    const rig = new Rig(o, fs.mkdtempSync(path.join(o.baseDir ?? '/dev/shm', 'ziu-bench-')));
    try {
      const chosen = await rig.store.chooseBacking(PAGE_SIZE);
      rig.backing = chosen.backing;
      rig.backingNote = chosen.note;
    } catch (err) {
      await rig.teardown();
      throw err;
    }
    return rig;
  }

  /** The datapath's command line without memory: its ports connect to the probes. */
  datapathArgv(instance: string): string[] {
    const ports = this.pairs.flatMap((p, i) => ['--vhost-user', `a${i}=${p.tx},client`, '--vhost-user', `b${i}=${p.rx},client`]);
    return [process.execPath, DATAPATH_BIN, '--control', this.control, ...ports, '--instance', instance];
  }

  /** bench-1, bench-2, ...: the datapath instance id and its mem file instance. */
  nextInstance(): string {
    return `bench-${++this.#instances}`;
  }

  async createMem(instance: string): Promise<CreateResult> {
    this.memInstances.add(instance);
    return this.store.create({ instance, role: 'packets', size: this.o.mem, pageSize: PAGE_SIZE, backing: 'auto' });
  }

  /** Remove an instance's mem files; gone already (an upgrade removes the old one's on commit) is fine. */
  async removeMem(instance: string): Promise<void> {
    try {
      await this.store.remove(instance);
    } catch (err) {
      if (!hasCode(err, 'ERR_ZIU_NO_MEMFILE')) throw err;
    }
  }

  /** Start a datapath instance on the rig's paths; resolves at READY=1 (every port connected to its probe). */
  async launch(instance: string, memPath: string): Promise<number> {
    const launched = await launchDetached({
      argv: [...this.datapathArgv(instance), '--mem-file', memPath],
      readyTimeoutMs: READY_TIMEOUT_MS,
      logFile: path.join(this.dir, `${instance}.log`),
      notifyPath: path.join(this.dir, `${instance}.notify.sock`),
      log: this.o.log,
      ...(this.o.signal ? { signal: this.o.signal } : {}),
      onSpawn: (pid) => this.pids.add(pid),
    });
    return launched.pid;
  }

  /** SIGTERM to the serving instance, and wait until it is gone (SIGKILL after graceMs). */
  async stopServing(graceMs = STOP_GRACE_MS): Promise<Serving> {
    const s = this.serving;
    if (s === null) throw new Error('bench rig: no datapath instance is serving');
    await stopProcess(s.pid, graceMs);
    this.serving = null;
    return s;
  }

  /**
   * One probe per pair, listening; the datapath (re)connects to them. Before
   * the first window no datapath runs yet: it is started here, beside the
   * probes it must connect to before it says READY=1.
   */
  async startTraffic(): Promise<Traffic> {
    const first = this.serving === null ? this.#startFirst() : Promise.resolve();
    const traffic = await startTraffic(this.pairs, { rate: this.o.rate, size: this.o.size }, first);
    this.#traffic = traffic;
    return traffic;
  }

  async #startFirst(): Promise<void> {
    const instance = this.nextInstance();
    const mem = await this.createMem(instance);
    const pid = await this.launch(instance, mem.path!);
    this.serving = { pid, instance, mem: instance };
  }

  /**
   * Undo exactly what the rig made: probes, every datapath it started (the
   * serving one gently), mem files (and the hugepages added for them), the
   * hugetlbfs mount, the temp dir. Never throws; what could not be undone is
   * in problems.
   */
  async teardown(): Promise<RigCleanup> {
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    const traffic = this.#traffic;
    if (traffic) await attempt('stopping the probes', () => traffic.stop());
    for (const pid of this.pids) await attempt(`stopping pid ${pid}`, () => stopProcess(pid, pid === this.serving?.pid ? STOP_GRACE_MS : 0));
    const alive = [...this.pids].filter((pid) => processAlive(pid));
    for (const pid of alive) problems.push(`process ${pid} is still running`);

    // Only now: a file still mapped by a datapath would keep its pages. The store gives back
    // the hugepages it added to the pool for each file as it removes it.
    let left: string[] = [];
    await attempt('listing mem files', async () => {
      for (const f of await this.store.list()) await this.removeMem(f.instance);
      left = (await this.store.list()).map((f) => f.instance);
    });
    for (const inst of new Set(left)) problems.push(`mem files of ${inst} remain`);
    for (const { bytes } of PAGE_SIZES) {
      const mount = this.store.hugetlbfsDir(bytes);
      if (fs.existsSync(mount)) await attempt(`unmounting ${mount}`, () => unmount(this.o.host, mount));
    }
    await attempt(`removing ${this.dir}`, async () => fs.rmSync(this.dir, { recursive: true, force: true }));
    const cleanup: RigCleanup = {
      processes: this.pids.size - alive.length,
      memFiles: [...this.memInstances].filter((m) => !left.includes(m)).length,
      tempDir: !fs.existsSync(this.dir),
      problems,
    };
    this.o.log.info(cleanup, 'bench: rig torn down');
    return cleanup;
  }
}
