import fs from 'node:fs';
import { execa } from 'execa';
import { ControlServer, type Handler } from '../control/server.js';
import { hasCode, ZiuError } from '../errors.js';
import { STATE_FORMATS, type StateFormat } from '../handover/state.js';
import type { Launch, Status } from '../handover/messages/index.js';
import { logger, setLogContext, type Logger } from '../log.js';
import { check, native } from '../native/index.js';
import { openTrustedFile } from '../trusted-dir.js';
import { VERSION } from '../version.js';
import type { DatapathConfig, TapSpec } from './config.js';
import { Engine, type EngineFault, type PortStats } from './engine.js';
import { DatapathTables } from './tables.js';
import { Handover, type Fault, type HandoverHost, type TapPort } from './handover/index.js';
import { serve } from './handover/serve.js';
import { Notifier } from './notify.js';
import { VhostPort, type VhostPortOptions } from './vhost/port.js';
import { isPlaced, keepOff, placeThread, readPlacement, type Placement, type PlacementReport } from '../sched/placement.js';
import { closeFds } from '../native/fds.js';
import { Offload } from './offload.js';

interface MemFile {
  path: string;
  fd: number;
  size: number;
}

export interface DatapathOptions {
  /**
   * Started by an orchestrator as the new instance of a handover: open no
   * port (the old instance still serves them), wait for import and resume.
   */
  standby?: boolean;
  /** where to listen for control until the handover commits (the old instance holds config.control) */
  standbyControl?: string;
  /** state formats to speak (default: all this version knows) */
  stateFormats?: readonly StateFormat[];
  faults?: ReadonlySet<Fault>;
  /** ZIU_TEST_HOOKS=1: the control socket also answers `hold` (freeze the engine for a while, then thaw) */
  testHooks?: boolean;
  /** the upgrade a standby instance was started for (ZIU_UPGRADE_ID): its log lines carry it from the start */
  upgradeId?: string;
  /**
   * How it was started, reported in hello so that `ziu upgrade --new <binary>`
   * can start a successor the same way; its notifySocket is the service
   * manager's (NOTIFY_SOCKET, or for a standby ZIU_SERVICE_NOTIFY_SOCKET).
   */
  launch?: Launch;
}

/**
 * ziu-datapath: a vhost-user backend with an L2 bridge between its vhost-user
 * ports and tap uplinks. Packets move in a C thread (the engine); this is the
 * control plane: ports, vhost-user messages, the control socket, readiness,
 * and its side of a handover (handover.ts).
 */
export class Datapath {
  readonly config: DatapathConfig;
  readonly log: Logger;
  readonly startedAt = Date.now();
  #opts: DatapathOptions;
  #memFiles: MemFile[] = [];
  #engine: Engine | null = null;
  #ports: VhostPort[] = [];
  #taps: TapPort[] = [];
  /** taps whose device went away: no longer in the engine, their fd closed; kept for status */
  #downTaps: Array<{ spec: TapSpec; reason: string; counters: PortStats | null }> = [];
  #control: ControlServer | null = null;
  /** standby: the temporary control server, kept for its open connections after commit */
  #standbyControl: ControlServer | null = null;
  /** where sd_notify messages go now: whoever started us (a service manager, or an orchestrator until commit) */
  #notifier = new Notifier();
  /** the service manager's notify socket, ours from a commit on (docs/systemd.md) */
  #service: Notifier;
  #handover: Handover | null = null;
  #stopping: Promise<void> | null = null;
  #placement: PlacementReport | null = null;
  #offload: Offload | null = null;
  #tables: DatapathTables;

  constructor(config: DatapathConfig, opts: DatapathOptions = {}) {
    this.config = config;
    this.#opts = opts;
    this.log = logger('datapath', { instance: config.instance });
    this.#service = Notifier.to(opts.launch?.notifySocket ?? null);
    this.#tables = new DatapathTables(config, this.log);
  }

  /** Map memory, start the engine, open every port and the control socket, then say READY=1. */
  async start(): Promise<void> {
    const standby = this.#opts.standby === true;
    try {
      for (const p of this.config.memFiles) this.#memFiles.push(openMemFile(p));
      const first = this.#memFiles[0]!;
      this.#engine = new Engine(first.fd, first.size, { macEntries: this.config.macEntries, guestMemory: this.config.guestMemory });
      this.#engine.onFault((f) => this.#onEngineFault(f));
      // Before any ring is ours (ports open below, or import then resume in standby).
      if (isPlaced(this.config.worker)) this.placeWorker(this.config.worker);
      this.#handover = new Handover(this.#host(), standby ? 'standby' : 'active', this.#opts.upgradeId ?? null);
      // Every log line names the upgrade while one runs (an old instance from export, a new one from its start).
      const handover = this.#handover;
      setLogContext(() => (handover.upgradeId === null ? {} : { upgradeId: handover.upgradeId }));
      if (standby) {
        // Nothing is ours to poll until resume: the engine writes no guest memory while frozen.
        // No tables either until import: the predecessor's are the ones to map.
        this.#engine.freeze();
      } else {
        this.#tables.open(this.#engine);
        for (const t of this.config.taps) this.#taps.push(await this.#openTap(t));
        for (const spec of this.config.vhostUser) await this.#openPort(spec);
      }
      if (this.config.offload) {
        // The NIC's representors are ours in both roles (a standby engine is frozen by now: it
        // reads none of them before it takes over); a standby instance claims the NIC only at commit.
        this.#offload = new Offload({ spec: this.config.offload, engine: this.#engine, log: this.log, instance: this.config.instance, portOf: (n) => this.#portOf(n), portName: (p) => this.#portName(p), ports: () => this.#portNames() });
        await this.#offload.attach();
        this.#offload.register(standby ? 'none' : 'fresh');
      }
      const controlPath = standby ? (this.#opts.standbyControl ?? this.config.control) : this.config.control;
      this.#control = await ControlServer.listen(controlPath, this.#handlers(), this.log);
      if (this.#opts.faults?.has('exit-before-ready')) throw new ZiuError('ERR_ZIU_FAULT', 'injected fault: exit before READY (ZIU_FAULT=exit-before-ready)');
    } catch (err) {
      await this.stop();
      throw err;
    }
    const ports = this.#ports.length + this.#taps.length;
    this.log.info({ control: this.#control.path, ports, standby }, standby ? 'standby: waiting for a handover' : 'datapath ready');
    if (this.#opts.faults?.has('never-ready')) return;
    // Start-up that ends a second late (READY=1 after it): a signal in between must still stop us cleanly.
    if (this.#opts.faults?.has('slow-ready')) await new Promise((r) => setTimeout(r, 1000));
    await this.#notifier.notify({
      READY: 1,
      STATUS: standby ? 'standby: waiting for a handover' : `forwarding between ${ports} ports`,
      MAINPID: process.pid,
    });
  }

  /**
   * Put the packet worker where it was asked to run, and the rest of this
   * process (Node's threads) on the other CPUs. Also used by a new instance
   * to take its predecessor's placement before it takes the rings.
   */
  placeWorker(want: Placement): PlacementReport {
    const tid = this.#engine!.workerStats().tid;
    const report = placeThread(tid, want, 'the packet worker');
    if (want.cpus !== null) keepOff(want.cpus, [tid]);
    this.#placement = report;
    const line = { tid, requested: want, applied: report.applied };
    if (report.fallback) this.log.warn({ ...line, fallback: report.fallback }, 'packet worker placed with a fallback');
    else this.log.info(line, 'packet worker placed');
    return report;
  }

  /** The worker's placement as asked and as the kernel has it now. */
  workerPlacement(): { requested: Placement | null; applied: ReturnType<typeof readPlacement>; fallback: string | null } | null {
    if (this.#engine === null) return null;
    const applied = readPlacement(this.#engine.workerStats().tid);
    return { requested: this.#placement?.requested ?? null, applied, fallback: this.#placement?.fallback ?? null };
  }

  async #openPort(spec: { name: string; path: string; mode: 'server' | 'client' }): Promise<void> {
    const port = new VhostPort(this.#portOptions(spec));
    this.#ports.push(port);
    await port.open();
  }

  #portOptions(spec: { name: string; path: string; mode: 'server' | 'client' }): VhostPortOptions {
    return { ...spec, engine: this.#engine!, log: this.log };
  }

  /**
   * The worker gave up on a ring or a tap (native/dp_worker.c). A vhost-user
   * port drops its frontend with the reason; a tap whose device is gone goes
   * down for good: out of the engine, its fd closed, shown in status.
   */
  #onEngineFault(f: EngineFault): void {
    if (this.#offload?.fault(f.port, f.reason)) return;
    const port = this.#ports.find((p) => p.enginePort === f.port);
    if (port) {
      port.fault(f.reason);
      return;
    }
    const i = this.#taps.findIndex((t) => t.enginePort === f.port);
    if (i < 0) return;
    const t = this.#taps[i]!;
    const reason = `tap device ${t.spec.ifname} ${f.reason.replace(/^its device /, '')}`;
    const counters = this.#engine?.stats().find((s) => s.port === t.enginePort) ?? null;
    this.#taps.splice(i, 1);
    this.#engine?.removePort(t.enginePort);
    native.close(t.fd);
    this.#downTaps.push({ spec: t.spec, reason, counters });
    this.log.error({ port: t.spec.name, ifname: t.spec.ifname, reason }, 'tap port down');
  }

  /** Engine port of a port by name (vhost-user, tap or representor), for flows. */
  #portOf(name: string): number | null {
    return this.#ports.find((p) => p.name === name)?.enginePort ?? this.#taps.find((t) => t.spec.name === name)?.enginePort ?? this.#offload?.reps.find((r) => r.name === name)?.enginePort ?? null;
  }

  /** A port's name by its engine port. */
  #portName(port: number): string | null {
    return this.#ports.find((p) => p.enginePort === port)?.name ?? this.#taps.find((t) => t.enginePort === port)?.spec.name ?? this.#offload?.reps.find((r) => r.enginePort === port)?.name ?? null;
  }

  #portNames(): ReadonlySet<string> {
    return new Set([...this.#ports.map((p) => p.name), ...this.#taps.map((t) => t.spec.name), ...(this.#offload?.reps.map((r) => r.name) ?? [])]);
  }

  /** The `flow` control op (docs/offload.md): the host's flows and what the offload module did with them. */
  #flow(req: Record<string, unknown>): { body: Record<string, unknown> } {
    if (!this.#offload) throw new ZiuError('ERR_ZIU_OFFLOAD', 'flow: this datapath runs without --offload (no flow state to keep yet: see docs/offload.md)');
    const role = this.#handover?.role ?? 'starting';
    return { body: this.#offload.flowOp(req, () => (role === 'active' ? null : `this instance is ${role}: flows change only on an active instance (retry once the upgrade is over)`)) };
  }

  async #openTap(spec: TapSpec): Promise<TapPort> {
    const fd = check(native.tapOpen(spec.ifname), 'open /dev/net/tun (TUNSETIFF)', { path: spec.ifname });
    try {
      await execa('ip', ['link', 'set', 'dev', spec.ifname, 'up']);
      return { spec, fd, enginePort: this.#engine!.addPort('tap', fd, spec.name) };
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  #host(): HandoverHost {
    const engine = (): Engine => this.#engine!;
    const offload = (): Offload | null => this.#offload;
    return {
      config: this.config,
      log: this.log,
      get engine() {
        return engine();
      },
      ports: this.#ports,
      taps: this.#taps,
      get offload() {
        return offload();
      },
      faults: this.#opts.faults ?? new Set(),
      tables: this.#tables,
      stateFormats: this.#opts.stateFormats ?? STATE_FORMATS,
      portOptions: (spec) => this.#portOptions(spec),
      control: () => ({ path: this.#control!.path, listenerFd: this.#control!.listenerFd }),
      takeOverControl: async (fd) => {
        const standby = this.#control!;
        if (standby.path === this.config.control && fd === null) return;
        this.#control =
          fd !== null
            ? ControlServer.adopt(fd, this.config.control, this.#handlers(), this.log)
            : await ControlServer.listen(this.config.control, this.#handlers(), this.log);
        // The reply to commit still goes out on the standby connection; only stop listening there.
        standby.stopListening();
        this.#standbyControl = standby;
      },
      stopAccepting: () => this.#control?.stopListening({ keepPath: true }),
      openMissingPorts: async () => {
        for (const t of this.config.taps) if (!this.#taps.some((x) => x.spec.name === t.name)) this.#taps.push(await this.#openTap(t));
        for (const v of this.config.vhostUser) if (!this.#ports.some((p) => p.name === v.name)) await this.#openPort(v);
      },
      notify: (fields) => this.#notifier.notify(fields),
      launch: () => this.#opts.launch ?? null,
      becomeMain: (status) => this.#becomeMain(status),
      leaveService: () => {
        if (this.#notifier.path !== null) this.log.info('the successor is the main process now: no more notices to the service manager');
        this.#notifier = Notifier.to(null);
      },
      worker: () => this.#placement?.requested ?? null,
      placeWorker: (want) => this.placeWorker(want),
    };
  }

  /**
   * From a commit on, this process is the one the service manager must
   * watch: MAINPID= before the old instance exits, or systemd would take its
   * exit for the service's and stop it (docs/systemd.md). A datagram refused
   * because the manager's queue is full is sent again, for a second at most.
   */
  async #becomeMain(status: string): Promise<boolean | null> {
    this.#notifier = this.#service;
    if (this.#service.path === null) return null;
    for (let attempt = 0; ; attempt++) {
      const sent = await this.#service.send({ MAINPID: process.pid, READY: 1, STATUS: status });
      if (sent === 'sent') {
        this.log.info({ notifySocket: this.#opts.launch?.notifySocket }, 'told the service manager: MAINPID is this process');
        return true;
      }
      if (sent === 'absent') {
        // A launcher's readiness socket, long closed: no service manager watches the old process's exit.
        this.log.info({ notifySocket: this.#opts.launch?.notifySocket }, 'nobody listens on the notify socket any more: no service manager to tell');
        return null;
      }
      if (attempt >= 20) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    this.log.error({ notifySocket: this.#opts.launch?.notifySocket }, 'could not tell the service manager that this process is its main process now');
    return false;
  }

  #handlers(): Record<string, Handler> {
    return {
      status: serve('status', () => ({ body: { status: this.status() } })),
      shutdown: serve('shutdown', () => {
        setImmediate(() => void this.stop().then(() => process.exit(0)));
        return { body: { stopping: true } };
      }),
      ...this.#handover!.handlers(),
      flow: (req) => this.#flow(req),
      ...(this.#opts.testHooks ? { hold: (req) => this.#hold(req) } : {}),
    };
  }

  /**
   * Test hook: stop serving every ring for `ms`, as a switch that stalls
   * would, then serve again. Frames wait in the rings meanwhile: the VM side
   * must see it as latency and a gap, not as its own lateness.
   */
  async #hold(req: Record<string, unknown>): Promise<{ body: Record<string, unknown> }> {
    const ms = req['ms'];
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0 || ms > 10_000) throw new ZiuError('ERR_ZIU_USAGE', 'hold: ms must be a number of milliseconds in (0, 10000]');
    if (this.#handover?.role !== 'active') throw new ZiuError('ERR_ZIU_HANDOVER_STATE', `hold: this instance is ${this.#handover?.role ?? 'starting'}, not active`);
    const engine = this.#engine!;
    const frozenNs = engine.freeze();
    await new Promise((r) => setTimeout(r, ms));
    const thawedNs = engine.thaw();
    this.log.warn({ ms, frozenNs, thawedNs }, 'test hook: held every ring');
    return { body: { frozenNs: String(frozenNs), thawedNs: String(thawedNs) } };
  }

  status(): Status {
    const stats = this.#engine?.stats() ?? [];
    const counters = (port: number) => stats.find((s) => s.port === port) ?? null;
    return {
      version: VERSION,
      instance: this.config.instance,
      pid: process.pid,
      uptimeMs: Date.now() - this.startedAt,
      role: this.#handover?.role ?? 'starting',
      handover: this.#handover?.status() ?? null,
      memFiles: this.#memFiles.map((m) => ({ path: m.path, bytes: m.size })),
      tables: this.#tables.status(this.#engine),
      worker: this.workerPlacement(),
      ports: [
        ...this.#ports.map((p) => ({ kind: 'vhost-user', ...p.status(), counters: counters(p.enginePort) })),
        ...this.#taps.map((t) => ({ kind: 'tap', name: t.spec.name, ifname: t.spec.ifname, state: 'up', lastError: null, counters: counters(t.enginePort) })),
        ...this.#downTaps.map((t) => ({ kind: 'tap', name: t.spec.name, ifname: t.spec.ifname, state: 'down', lastError: t.reason, counters: t.counters })),
        ...(this.#offload?.portStatus(stats) ?? []),
      ],
      ...(this.#offload ? { offload: this.#offload.status() } : {}),
    };
  }

  /**
   * Stop forwarding, close every connection and socket, unmap memory.
   * Idempotent. An instance that no longer serves its devices (frozen or
   * handed over, or a new instance not yet committed) lets go of them without
   * touching the frontends or removing socket paths: someone else has them.
   */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await this.#notifier.notify({ STOPPING: 1 });
      const role = this.#handover?.role;
      const shared = role === 'frozen' || role === 'handed-over' || role === 'exporting';
      // Stop forwarding first: the ports that go below leave the tables as they are (what was
      // learned stays for the next instance that maps them: a restart or a successor).
      this.#engine?.freeze();
      if (shared) for (const p of this.#ports) p.detach();
      // A new instance that has not committed may already serve the predecessor's control
      // listener (a commit that failed half-way): that path is still the old instance's.
      const uncommitted = role === 'imported' || role === 'resumed' || role === 'handed-back';
      this.#control?.close({ keepPath: shared || (uncommitted && this.#control.path === this.config.control) });
      this.#standbyControl?.close();
      for (const p of this.#ports) p.close();
      for (const t of this.#taps) {
        this.#engine?.removePort(t.enginePort);
        native.close(t.fd);
      }
      this.#offload?.close(); // unregistered: the NIC keeps its flows
      this.#engine?.destroy();
      this.#offload?.closeFds();
      this.#tables.close();
      closeFds(this.#memFiles.map((m) => m.fd));
      this.log.info({ role }, 'datapath stopped');
    })();
    return this.#stopping;
  }
}

/**
 * The datapath writes its header into the first mem file and guest-visible
 * buffers into all of them, so it never opens one through a symlink (O_NOFOLLOW,
 * its directory verified: no symlink or directory another user planted on the
 * way), and only a regular file that is ours or root's and writable by nobody else.
 */
function openMemFile(path: string): MemFile {
  let fd: number;
  try {
    fd = openTrustedFile(path, fs.constants.O_RDWR);
  } catch (cause) {
    if (hasCode(cause, 'ERR_ZIU_UNTRUSTED_PATH')) {
      throw new ZiuError('ERR_ZIU_MEMFILE', `refusing --mem-file ${path}: ${(cause as Error).message.replace(/^refusing [^:]*: /, '')}`, { cause });
    }
    throw new ZiuError('ERR_ZIU_MEMFILE', `cannot open --mem-file ${path}: ${(cause as Error).message}`, { cause });
  }
  const st = check(native.fstat(fd), 'fstat', { path, fd });
  if (st.size === 0) {
    native.close(fd);
    throw new ZiuError('ERR_ZIU_MEMFILE', `--mem-file ${path} is empty: create it with 'ziu memfile create'`);
  }
  return { path, fd, size: st.size };
}
