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
import { datapathArgv, workerArgs } from '../datapath/bin.js';
import type { HugepageHost } from '../hugepages/index.js';
import type { Logger } from '../log.js';
import type { Backing, CreateResult, MemFileStore } from '../memfile/index.js';
import { stopProcess } from '../process/index.js';
import { Workspace, type WorkspaceCleanup } from '../workspace/workspace.js';
import { PAGE_SIZE } from './options.js';
import { NO_PLACEMENT, type Placement } from '../sched/placement.js';
import { startIdleGuests, startTraffic, type IdleGuests, type PortPair, type Traffic } from './traffic.js';

const READY_TIMEOUT_MS = 15_000;
// A datapath stopped by a restart gets this long to close its ports on SIGTERM.
const STOP_GRACE_MS = 3000;

export interface RigOptions {
  host: HugepageHost;
  privileged: boolean;
  /** vhost-user port pairs */
  ports: number;
  /** more vhost-user ports, each with an idle guest (rings up, no traffic): a node's idle VMs */
  idlePorts?: number;
  /** frames per second per pair */
  rate: number;
  size: number;
  /** bytes of memory per datapath instance */
  mem: number;
  /** parent of the rig's temp dir; must be on tmpfs (default /dev/shm) */
  baseDir?: string;
  log: Logger;
  signal?: AbortSignal;
  /** where the datapath's packet worker runs (--worker-cpus, --worker-priority) */
  worker?: Placement;
  /** where the probes' loops, the VMs' vCPUs, run */
  vm?: Placement;
}

/** One instance serving the ports, and the mem file instance it maps. */
export interface Serving {
  pid: number;
  instance: string;
  mem: string;
}

export type RigCleanup = WorkspaceCleanup;

export class Rig {
  readonly o: RigOptions;
  readonly ws: Workspace;
  readonly control: string;
  readonly pairs: PortPair[];
  /** the backing the instances' memory gets, and why not hugepages if not */
  backing: Backing = 'tmpfs';
  backingNote: string | null = null;
  #serving: Serving | null = null;
  /** the window's probes, stopped by teardown if a window failed */
  #traffic: Traffic | null = null;
  /** the idle guests' sockets, and their process once started */
  readonly idle: string[];
  #idleGuests: IdleGuests | null = null;
  #instances = 0;

  private constructor(o: RigOptions) {
    this.o = o;
    this.ws = new Workspace({ host: o.host, privileged: o.privileged, prefix: 'ziu-bench-', log: o.log, ...(o.baseDir ? { baseDir: o.baseDir } : {}) });
    this.control = this.ws.path('dp.sock');
    this.pairs = Array.from({ length: o.ports }, (_, i) => ({ tx: this.ws.path(`a${i}.sock`), rx: this.ws.path(`b${i}.sock`) }));
    this.idle = Array.from({ length: o.idlePorts ?? 0 }, (_, i) => this.ws.path(`i${i}.sock`));
  }

  get dir(): string {
    return this.ws.dir;
  }

  get store(): MemFileStore {
    return this.ws.store;
  }

  get pids(): Set<number> {
    return this.ws.pids;
  }

  get memInstances(): Set<string> {
    return this.ws.memInstances;
  }

  get serving(): Serving | null {
    return this.#serving;
  }

  set serving(s: Serving | null) {
    this.#serving = s;
    this.ws.servingPid = s?.pid ?? null;
  }

  /** A fresh directory and its own mem file store (hugepages as root, else tmpfs). */
  static async create(o: RigOptions): Promise<Rig> {
    const rig = new Rig(o);
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

  /** The datapath's command line without memory (as `ziu upgrade --new` takes it): its ports connect to the probes. */
  datapathArgv(instance: string): string[] {
    return [...datapathArgv(), '--control', this.control, ...this.#datapathArgs(instance)];
  }

  /** Its flags after --control. */
  #datapathArgs(instance: string): string[] {
    const ports = this.pairs.flatMap((p, i) => ['--vhost-user', `a${i}=${p.tx},client`, '--vhost-user', `b${i}=${p.rx},client`]);
    const idle = this.idle.flatMap((s, i) => ['--vhost-user', `i${i}=${s},client`]);
    return [...ports, ...idle, '--instance', instance, ...workerArgs(this.o.worker ?? NO_PLACEMENT)];
  }

  /** bench-1, bench-2, ...: the datapath instance id and its mem file instance. */
  nextInstance(): string {
    return `bench-${++this.#instances}`;
  }

  createMem(instance: string): Promise<CreateResult> {
    return this.ws.createMem(instance, this.o.mem, PAGE_SIZE);
  }

  removeMem(instance: string): Promise<void> {
    return this.ws.removeMem(instance);
  }

  /** Start a datapath instance on the rig's paths; resolves at READY=1 (every port connected to its probe). */
  launch(instance: string, memPath: string): Promise<number> {
    return this.ws.launch({
      name: instance,
      control: this.control,
      args: [...this.#datapathArgs(instance), '--mem-file', memPath],
      readyTimeoutMs: READY_TIMEOUT_MS,
      ...(this.o.signal ? { signal: this.o.signal } : {}),
    });
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
    const traffic = await startTraffic(this.pairs, { rate: this.o.rate, size: this.o.size, ...(this.o.vm ? { placement: this.o.vm } : {}) }, first);
    this.#traffic = traffic;
    return traffic;
  }

  async #startFirst(): Promise<void> {
    const instance = this.nextInstance();
    const mem = await this.createMem(instance);
    // The idle guests listen first: the datapath's client ports connect to them before it is ready.
    if (this.idle.length > 0) this.#idleGuests = await startIdleGuests(this.idle);
    const pid = await this.launch(instance, mem.path!);
    this.serving = { pid, instance, mem: instance };
    await this.#idleGuests?.ready();
  }

  /** What the idle guests saw over the run (null without them); stops them. */
  async stopIdle(): Promise<{ ports: number; connected: number; reconnects: number; disconnects: number } | null> {
    const g = this.#idleGuests;
    this.#idleGuests = null;
    return g ? g.stop() : null;
  }

  /** Undo exactly what the rig made (the workspace's teardown, the window's probes first). Never throws. */
  async teardown(): Promise<RigCleanup> {
    const traffic = this.#traffic;
    const idle = this.#idleGuests;
    const cleanup = await this.ws.teardown([
      ...(traffic ? [['stopping the probes', () => traffic.stop()] as [string, () => Promise<unknown>]] : []),
      ...(idle ? [['stopping the idle guests', () => idle.stop()] as [string, () => Promise<unknown>]] : []),
    ]);
    this.o.log.info(cleanup, 'bench: rig torn down');
    return cleanup;
  }
}
