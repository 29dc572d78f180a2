import { ZiuError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Handler } from '../control/server.js';
import { check, native, type PollHandle } from '../native/index.js';
import {
  BATON_FD,
  CONTROL_LISTENER_FD,
  GO_FD,
  decodeState,
  encodeState,
  fdName,
  HANDOVER_PROTOCOL,
  isStateFormat,
  type DeviceExport,
  type StateExport,
  type StateFormat,
  type TapExport,
  type VhostExport,
} from '../handover/state.js';
import { MAX_FDS_PER_MESSAGE } from '../net/socket.js';
import { checkPlacement, type Placement } from '../sched/placement.js';
import { VERSION } from '../version.js';
import type { DatapathConfig, TapSpec } from './config.js';
import type { Engine } from './engine.js';
import { VhostPort, type VhostPortOptions } from './vhost-port.js';

/**
 * Where an instance is in a handover (docs/handover-protocol.md):
 * old side: active -> exporting -> frozen -> handed-over (or back to active: thaw, abort);
 * new side: standby -> imported -> resumed -> active (commit), or back to standby (abort).
 */
export type Role = 'active' | 'exporting' | 'frozen' | 'handed-over' | 'standby' | 'imported' | 'resumed';

/**
 * The baton word in a shared page: who serves the rings. Created ACTIVE at
 * export (the old instance serves; a resume now must fail), set FROZEN by
 * freeze; then exactly one compare-and-swap wins: the new instance's worker
 * on the go signal or its resume (NEW), or the old instance's thaw or
 * dead-man switch (OLD).
 */
const BATON_FROZEN = 0;
const BATON_NEW = 1;
const BATON_OLD = 2;
const BATON_ACTIVE = 3;
const MAX_DEAD_MAN_MS = 60_000;

export const DEFAULT_DEAD_MAN_MS = 200;

/** Faults a test can inject through ZIU_FAULT (comma-separated); never set in production. */
export type Fault = 'exit-before-ready' | 'never-ready' | 'import-fail' | 'crash-after-resume' | 'no-forward';

export interface TapPort {
  spec: TapSpec;
  fd: number;
  enginePort: number;
}

/** What the handover needs from the datapath it runs in. */
export interface HandoverHost {
  readonly config: DatapathConfig;
  readonly log: Logger;
  readonly engine: Engine;
  readonly ports: VhostPort[];
  readonly taps: TapPort[];
  readonly faults: ReadonlySet<Fault>;
  readonly stateFormats: readonly StateFormat[];
  portOptions(spec: { name: string; path: string; mode: 'server' | 'client' }): VhostPortOptions;
  /** the control socket's path and listening fd (a successor takes it over) */
  control(): { path: string; listenerFd: number };
  /** new side, at commit: serve on the predecessor's control listener (or bind our own path) */
  takeOverControl(listenerFd: number | null): Promise<void>;
  /** new side, at commit: open configured ports the predecessor did not have */
  openMissingPorts(): Promise<void>;
  notify(fields: Record<string, string | number>): Promise<void>;
  /** the placement its worker has been given (its own flags, or inherited at import), or null */
  worker(): Placement | null;
  /** place the worker (a new instance takes its predecessor's placement before it takes the rings) */
  placeWorker(want: Placement): unknown;
}

interface Exported {
  format: StateFormat;
  upgradeId: string;
  generations: Map<string, number>;
}

/** The handover protocol's control ops, for both the old and the new side. */
export class Handover {
  role: Role;
  #host: HandoverHost;
  #log: Logger;
  #baton: number | null = null;
  /** the go eventfd: written by the old side's engine as it freezes, waited on by the new side's */
  #go: number | null = null;
  /** new side: the eventfd our worker writes after it acted on go, and its poll handle */
  #done: { fd: number; poll: PollHandle } | null = null;
  #exported: Exported | null = null;
  #deadMan: NodeJS.Timeout | null = null;
  /** new side: the predecessor's control listener, taken at commit */
  #controlFd: number | null = null;
  #controlPath: string | null = null;
  #upgradeId: string | null = null;
  #last: Record<string, unknown> = {};

  constructor(host: HandoverHost, role: 'active' | 'standby') {
    this.#host = host;
    this.#log = host.log.child({ component: 'handover' });
    this.role = role;
  }

  handlers(): Record<string, Handler> {
    // Ops that take no fds close any that came anyway: a confused peer must not leak them into us.
    const noFds =
      (h: (req: Record<string, unknown>) => ReturnType<Handler>): Handler =>
      (req, fds) => {
        for (const fd of fds) native.close(fd);
        return h(req);
      };
    return {
      hello: noFds(() => ({ body: this.hello() })),
      export: noFds((req) => this.#export(req)),
      import: (req, fds) => this.#import(req, fds),
      freeze: noFds((req) => this.#freeze(req)),
      resume: (req, fds) => this.#resume(req, fds),
      thaw: noFds((req) => this.#thaw(req)),
      commit: noFds(() => this.#commit()),
      abort: noFds(() => this.#abort()),
    };
  }

  hello(): Record<string, unknown> {
    return {
      protocol: HANDOVER_PROTOCOL,
      datapath: 'ziu-datapath',
      version: VERSION,
      instance: this.#host.config.instance,
      pid: process.pid,
      role: this.role,
      stateFormats: { export: [...this.#host.stateFormats], import: [...this.#host.stateFormats] },
      control: this.#host.control().path,
      worker: this.#host.worker(),
    };
  }

  status(): Record<string, unknown> {
    const t = this.#host.engine.times();
    return {
      role: this.role,
      upgradeId: this.#upgradeId,
      frozen: t.frozen,
      frozenNs: t.frozenNs,
      thawedNs: t.thawedNs,
      firstPassNs: t.firstPassNs,
      last: this.#last,
    };
  }

  // ---- old side ----

  #export(req: Record<string, unknown>): { body: Record<string, unknown>; fds: number[] } {
    this.#expectRole('export', ['active', 'exporting']);
    const format = req['format'] ?? this.#host.stateFormats.at(-1);
    if (!isStateFormat(format) || !this.#host.stateFormats.includes(format)) {
      throw new ZiuError('ERR_ZIU_STATE_FORMAT', `this instance exports state formats ${this.#host.stateFormats.join(', ')}, not ${String(format)}`);
    }
    const upgradeId = typeof req['upgradeId'] === 'string' ? req['upgradeId'] : 'unnamed';
    if (this.#baton === null) {
      const fd = check(native.memfdCreate('ziu-handover-baton', 0), 'memfd_create', {});
      check(native.ftruncate(fd, 4096), 'ftruncate', { fd });
      check(native.casWord(fd, 0, BATON_ACTIVE), 'baton compare-and-swap', { fd });
      this.#baton = fd;
      this.#go = check(native.eventfd(0, false), 'eventfd', {});
    }
    const { state, fds } = this.#collect(() => true);
    fds.set(BATON_FD, this.#baton);
    fds.set(GO_FD, this.#go!);
    if (fds.size > MAX_FDS_PER_MESSAGE) {
      // One message carries them all (SCM_RIGHTS: at most 253); splitting the export is not done yet.
      this.#forgetExport();
      throw new ZiuError(
        'ERR_ZIU_TOO_MANY_FDS',
        `export needs ${fds.size} fds (${state.devices.length} devices) but one message carries at most ${MAX_FDS_PER_MESSAGE}; this version hands over about 40 vhost-user ports per instance`,
      );
    }
    this.#exported = {
      format,
      upgradeId,
      generations: new Map(this.#host.ports.map((p) => [p.name, p.generation])),
    };
    this.#upgradeId = upgradeId;
    this.role = 'exporting';
    this.#log.info({ upgradeId, format, devices: state.devices.length, fds: fds.size }, 'exported device state');
    return { body: { format, state: encodeState(format, state), ...namedFds(fds) }, fds: [...fds.values()] };
  }

  /** The state of the devices `pick` selects and their fds (still ours), plus the control listener. */
  #collect(pick: (name: string) => boolean): { state: StateExport; fds: Map<string, number> } {
    const fds = new Map<string, number>();
    const devices: DeviceExport[] = [];
    for (const p of this.#host.ports) {
      if (!pick(p.name)) continue;
      const x = p.exportState();
      devices.push(x.device);
      for (const [n, fd] of x.fds) fds.set(n, fd);
    }
    for (const t of this.#host.taps) {
      if (!pick(t.spec.name)) continue;
      devices.push({ kind: 'tap', name: t.spec.name, ifname: t.spec.ifname });
      fds.set(fdName(t.spec.name, 'tap'), t.fd);
    }
    const control = this.#host.control();
    fds.set(CONTROL_LISTENER_FD, control.listenerFd);
    return { state: { control: control.path, devices }, fds };
  }

  #freeze(req: Record<string, unknown>): { body: Record<string, unknown>; fds: number[] } {
    this.#expectRole('freeze', ['exporting']);
    const ex = this.#exported!;
    const dm = req['deadManMs'];
    const deadManMs = typeof dm === 'number' && Number.isInteger(dm) && dm > 0 ? Math.min(dm, MAX_DEAD_MAN_MS) : DEFAULT_DEAD_MAN_MS;
    // Sockets first: a message read after the engine froze could not be applied to it.
    for (const p of this.#host.ports) p.freeze();
    // Devices whose state changed since export must be re-sent: the new side
    // must not take over on its own with what it imported, so no go signal then.
    const changed = this.#host.ports.filter((p) => ex.generations.get(p.name) !== p.generation).map((p) => p.name);
    // FROZEN a few microseconds before the engine is: only our own go signal
    // (sent once frozen) or a resume the orchestrator sends after our reply
    // can act on it, so nobody takes the rings while we still poll them.
    check(native.casWord(this.#baton!, BATON_ACTIVE, BATON_FROZEN), 'baton compare-and-swap', { fd: this.#baton! });
    let frozenNs: bigint;
    try {
      frozenNs = this.#host.engine.freeze(changed.length === 0 ? this.#go! : -1);
    } catch (err) {
      native.casWord(this.#baton!, BATON_FROZEN, BATON_ACTIVE);
      for (const p of this.#host.ports) p.thaw();
      throw err;
    }
    this.role = 'frozen';
    this.#deadMan = setTimeout(() => this.#deadManFired(deadManMs), deadManMs);
    const rings: Record<string, unknown> = {};
    for (const p of this.#host.ports) {
      rings[p.name] = this.#host.engine.rings(p.enginePort).map((r) => ({ q: r.q, lastAvail: r.lastAvail, usedIdx: r.usedIdx, started: r.started }));
    }
    let fds: number[] = [];
    let changes: Record<string, unknown> | null = null;
    if (changed.length > 0) {
      const c = this.#collect((n) => changed.includes(n));
      c.fds.delete(CONTROL_LISTENER_FD);
      changes = { format: ex.format, state: encodeState(ex.format, c.state), ...namedFds(c.fds) };
      fds = [...c.fds.values()];
    }
    this.#last = { frozenNs };
    this.#log.info({ frozenNs, changed, deadManMs }, 'frozen for handover');
    return { body: { frozenNs, rings, changed: changes, signalled: changed.length === 0 }, fds };
  }

  #deadManFired(ms: number): void {
    this.#deadMan = null;
    if (this.role !== 'frozen' || this.#baton === null) return;
    const prev = check(native.casWord(this.#baton, BATON_FROZEN, BATON_OLD), 'baton compare-and-swap', { fd: this.#baton });
    if (prev === BATON_FROZEN) {
      this.#log.warn({ deadManMs: ms }, 'dead-man switch: no resume, commit or thaw in time; thawing');
      this.#thawNow();
    } else if (prev === BATON_NEW) {
      this.#log.warn({ deadManMs: ms }, 'dead-man switch: the new instance holds the baton; staying frozen');
      this.role = 'handed-over';
      for (const p of this.#host.ports) p.detach();
    }
  }

  #thaw(req: Record<string, unknown>): { body: Record<string, unknown> } {
    if (this.role === 'active') return { body: { thawed: false, role: this.role } };
    this.#expectRole('thaw', ['exporting', 'frozen', 'handed-over']);
    if (this.role === 'exporting') {
      this.#forgetExport();
      this.role = 'active';
      return { body: { thawed: false, role: this.role } };
    }
    const baton = this.#baton!;
    let prev = check(native.casWord(baton, BATON_FROZEN, BATON_OLD), 'baton compare-and-swap', { fd: baton });
    if (prev === BATON_NEW) {
      // The new instance resumed: only the orchestrator, having stopped it, may take the rings back.
      if (req['force'] !== true) {
        throw new ZiuError('ERR_ZIU_BATON', 'the new instance has resumed and holds the rings; stop it, then thaw with force');
      }
      prev = check(native.casWord(baton, BATON_NEW, BATON_OLD), 'baton compare-and-swap', { fd: baton });
    }
    const thawedNs = this.#thawNow();
    return { body: { thawed: true, thawedNs, role: this.role } };
  }

  #thawNow(): bigint {
    if (this.#deadMan) clearTimeout(this.#deadMan);
    this.#deadMan = null;
    const thawedNs = this.#host.engine.thaw();
    for (const p of this.#host.ports) {
      p.thaw();
      p.signalCalls();
    }
    this.#forgetExport();
    this.role = 'active';
    this.#last = { ...this.#last, thawedNs };
    this.#log.info({ thawedNs }, 'thawed: forwarding again');
    void this.#host.notify({ STATUS: 'forwarding (handover undone)' });
    return thawedNs;
  }

  #forgetExport(): void {
    this.#exported = null;
    // A new instance still holding the baton must never resume now.
    if (this.#baton !== null) native.casWord(this.#baton, BATON_ACTIVE, BATON_OLD);
    if (this.#baton !== null) native.close(this.#baton);
    this.#baton = null;
    if (this.#go !== null) native.close(this.#go);
    this.#go = null;
  }

  // ---- new side ----

  #import(req: Record<string, unknown>, fds: number[]): { body: Record<string, unknown> } {
    const byName = takeNamed(req, fds);
    try {
      this.#expectRole('import', ['standby']);
    } catch (err) {
      for (const fd of byName.values()) native.close(fd);
      throw err;
    }
    try {
      const format = req['format'];
      if (!isStateFormat(format) || !this.#host.stateFormats.includes(format)) {
        throw new ZiuError('ERR_ZIU_STATE_FORMAT', `this instance imports state formats ${this.#host.stateFormats.join(', ')}, not ${String(format)}`);
      }
      const state = decodeState(format, req['state']);
      this.#checkDevices(state);
      // The predecessor's worker placement, unless we were started with our own: applied
      // before any ring is ours, so the rings never run on a worse-placed thread.
      if (req['worker'] !== undefined && req['worker'] !== null && this.#host.worker() === null) {
        this.#host.placeWorker(checkPlacement(req['worker'], 'import: worker'));
      }
      this.#adoptAll(state.devices, byName);
      this.#controlFd = byName.get(CONTROL_LISTENER_FD) ?? null;
      byName.delete(CONTROL_LISTENER_FD);
      this.#controlPath = state.control;
      this.#baton = byName.get(BATON_FD) ?? null;
      byName.delete(BATON_FD);
      if (this.#baton === null) throw new ZiuError('ERR_ZIU_IMPORT', `fd '${BATON_FD}' is missing from the handover`);
      this.#go = byName.get(GO_FD) ?? null;
      byName.delete(GO_FD);
      if (this.#go !== null && !this.#host.faults.has('no-forward')) this.#arm(this.#go);
      this.#upgradeId = typeof req['upgradeId'] === 'string' ? req['upgradeId'] : null;
      this.role = 'imported';
      this.#log.info({ devices: state.devices.map((d) => d.name), format }, 'imported device state');
      return { body: { devices: state.devices.map((d) => d.name) } };
    } catch (err) {
      this.#dropImported();
      throw err;
    } finally {
      for (const fd of byName.values()) native.close(fd);
    }
  }

  /** Every device the old instance has must be one we are configured for (or we take whatever comes). */
  #checkDevices(state: StateExport): void {
    const c = this.#host.config;
    if (c.vhostUser.length === 0 && c.taps.length === 0) return;
    for (const d of state.devices) {
      const want =
        d.kind === 'tap' ? c.taps.find((t) => t.name === d.name) : c.vhostUser.find((v) => v.name === d.name);
      if (!want) {
        throw new ZiuError('ERR_ZIU_IMPORT', `device '${d.name}' (${d.kind}) of the old instance is not configured in the new one`);
      }
      const same = d.kind === 'tap' ? (want as TapSpec).ifname === d.ifname : 'path' in want && want.path === d.path && want.mode === d.mode;
      if (!same) throw new ZiuError('ERR_ZIU_IMPORT', `device '${d.name}' is configured differently in the new instance (${describe(d)})`);
    }
  }

  #adoptAll(devices: DeviceExport[], fds: Map<string, number>): void {
    for (const d of devices) {
      if (this.#host.faults.has('import-fail')) {
        throw new ZiuError('ERR_ZIU_IMPORT', `device '${d.name}': injected fault (ZIU_FAULT=import-fail)`);
      }
      try {
        if (d.kind === 'tap') this.#adoptTap(d, fds);
        else this.#host.ports.push(VhostPort.adopt(this.#host.portOptions(d), d, fds));
      } catch (err) {
        if (err instanceof ZiuError && err.code === 'ERR_ZIU_IMPORT') throw err;
        throw new ZiuError('ERR_ZIU_IMPORT', `device '${d.name}': ${(err as Error).message}`, { cause: err });
      }
    }
  }

  #adoptTap(t: TapExport, fds: Map<string, number>): void {
    const name = fdName(t.name, 'tap');
    const fd = fds.get(name);
    if (fd === undefined) throw new ZiuError('ERR_ZIU_IMPORT', `device '${t.name}': fd '${name}' is missing from the handover`);
    fds.delete(name);
    try {
      this.#host.taps.push({ spec: { name: t.name, ifname: t.ifname }, fd, enginePort: this.#host.engine.addPort('tap', fd) });
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** Drop whatever was imported, without a word to any frontend. */
  #dropImported(): void {
    for (const p of this.#host.ports.splice(0)) p.discard();
    for (const t of this.#host.taps.splice(0)) {
      this.#host.engine.removePort(t.enginePort);
      native.close(t.fd);
    }
    if (this.#controlFd !== null) native.close(this.#controlFd);
    this.#controlFd = null;
    this.#disarm();
    if (this.#baton !== null) native.close(this.#baton);
    this.#baton = null;
    if (this.#go !== null) native.close(this.#go);
    this.#go = null;
  }

  /** Let our worker take the rings the moment the old side freezes (docs/handover-protocol.md, direct takeover). */
  #arm(go: number): void {
    const done = check(native.eventfd(0, false), 'eventfd', {});
    try {
      this.#host.engine.armTakeover(go, this.#baton!, done);
      const poll = check(native.pollStart(done, native.POLL_READABLE, () => this.#onTakeover()), 'uv_poll_start', { fd: done });
      this.#done = { fd: done, poll };
    } catch (err) {
      this.#host.engine.disarmTakeover();
      native.close(done);
      throw err;
    }
  }

  #disarm(): void {
    if (this.#done === null) return;
    this.#host.engine.disarmTakeover();
    native.pollClose(this.#done.poll);
    native.close(this.#done.fd);
    this.#done = null;
  }

  /** Our worker acted on the go signal: if it won the baton, the devices are ours to serve now. */
  #onTakeover(): void {
    if (this.#done) native.eventfdRead(this.#done.fd);
    if (this.role !== 'imported') return;
    const t = this.#host.engine.times();
    if (t.takenOver) {
      this.#activate();
      this.#log.info({ thawedNs: t.thawedNs }, 'took over directly on the old instance\'s freeze');
    } else {
      this.#log.warn('the old instance signalled its freeze but kept the rings (baton lost)');
    }
  }

  /** The rings are ours (resume or direct takeover): read the sockets, wake the guests. */
  #activate(): void {
    this.#disarm();
    this.role = 'resumed';
    for (const p of this.#host.ports) {
      p.activate();
      p.signalCalls();
    }
    if (this.#host.faults.has('crash-after-resume')) setTimeout(() => process.kill(process.pid, 'SIGKILL'), 5);
    void this.#host.notify({ STATUS: 'forwarding (handover not yet committed)' });
  }

  async #resume(req: Record<string, unknown>, fds: number[]): Promise<{ body: Record<string, unknown> }> {
    const byName = takeNamed(req, fds);
    try {
      this.#expectRole('resume', ['imported', 'resumed']);
      const changed = req['changed'];
      if (changed !== null && changed !== undefined && this.role === 'resumed') {
        throw new ZiuError('ERR_ZIU_HANDOVER_STATE', 'resume: changed devices can only be re-imported before this instance serves');
      }
      if (changed !== null && changed !== undefined) {
        // Our worker was never signalled (the old side saw changes); make sure it cannot act on stale state.
        this.#disarm();
        this.#reimport(changed as Record<string, unknown>, byName);
      }
    } finally {
      for (const fd of byName.values()) native.close(fd);
    }
    const faults = this.#host.faults;
    let thawedNs = 0n;
    if (this.role === 'imported') {
      const prev = check(native.casWord(this.#baton!, BATON_FROZEN, BATON_NEW), 'baton compare-and-swap', { fd: this.#baton! });
      if (prev === BATON_FROZEN) {
        this.#disarm();
        if (!faults.has('no-forward')) this.#host.engine.thaw();
      } else if (!(prev === BATON_NEW && this.#host.engine.times().takenOver)) {
        throw new ZiuError(
          'ERR_ZIU_BATON',
          prev === BATON_ACTIVE ? 'the old instance has not frozen; not resuming' : 'the old instance has taken the rings back (dead-man switch or thaw); not resuming',
        );
      }
      // (prev NEW and taken over: our worker won on the go signal; its event is still queued.)
      this.#activate();
    }
    thawedNs = this.#host.engine.times().thawedNs;
    // The first pass is stamped by the worker; it is due within microseconds.
    let firstPassNs = 0n;
    const deadline = performance.now() + 200;
    while (thawedNs !== 0n && performance.now() < deadline) {
      firstPassNs = this.#host.engine.times().firstPassNs;
      if (firstPassNs !== 0n) break;
      // A loaded host may not schedule the worker at once: yield, then sleep a little.
      await new Promise((r) => (performance.now() + 190 < deadline ? setImmediate(r) : setTimeout(r, 1)));
    }
    this.#last = { thawedNs, firstPassNs };
    const takenOver = this.#host.engine.times().takenOver;
    this.#log.info({ thawedNs, firstPassNs, takenOver }, 'resumed: forwarding');
    return { body: { thawedNs, firstPassNs, takenOver } };
  }

  /** Devices that changed between export and freeze: replace what was imported for them. */
  #reimport(changed: Record<string, unknown>, fds: Map<string, number>): void {
    const format = changed['format'];
    if (!isStateFormat(format)) throw new ZiuError('ERR_ZIU_STATE_FORMAT', `changed devices in state format ${String(format)}`);
    const state = decodeState(format, changed['state']);
    for (const d of state.devices) {
      const ports = this.#host.ports;
      const i = ports.findIndex((p) => p.name === d.name);
      if (i >= 0) ports.splice(i, 1)[0]!.discard();
    }
    this.#adoptAll(state.devices, fds);
    this.#log.info({ devices: state.devices.map((d) => d.name) }, 're-imported devices that changed after export');
  }

  async #commit(): Promise<{ body: Record<string, unknown> }> {
    if (this.role === 'frozen' || this.role === 'handed-over') {
      // Old side: the successor serves; never thaw again, let go of everything on exit.
      // A compare-and-swap that changes nothing: a read of the baton.
      const now = check(native.casWord(this.#baton!, BATON_NEW, BATON_NEW), 'baton read', { fd: this.#baton! });
      if (now !== BATON_NEW) {
        throw new ZiuError('ERR_ZIU_BATON', now === BATON_OLD ? 'this instance already took the rings back; nothing to commit' : 'the new instance has not resumed; commit it first');
      }
      if (this.#deadMan) clearTimeout(this.#deadMan);
      this.#deadMan = null;
      this.role = 'handed-over';
      for (const p of this.#host.ports) p.detach();
      return { body: { role: this.role } };
    }
    this.#expectRole('commit', ['resumed']);
    const fd = this.#controlFd;
    this.#controlFd = null;
    await this.#host.takeOverControl(this.#controlPath === this.#host.config.control ? fd : null);
    if (fd !== null && this.#controlPath !== this.#host.config.control) native.close(fd);
    await this.#host.openMissingPorts();
    // Last: until here a failed commit is rolled back by stopping us, which must leave the frontends alone.
    for (const p of this.#host.ports) p.claim();
    if (this.#baton !== null) native.close(this.#baton);
    this.#baton = null;
    if (this.#go !== null) native.close(this.#go);
    this.#go = null;
    this.role = 'active';
    this.#log.info({ control: this.#host.config.control }, 'handover committed: this instance is the datapath now');
    void this.#host.notify({ STATUS: `forwarding between ${this.#host.ports.length + this.#host.taps.length} ports` });
    return { body: { role: this.role, control: this.#host.config.control } };
  }

  #abort(): { body: Record<string, unknown> } {
    if (this.role === 'standby' || this.role === 'active') return { body: { role: this.role } };
    if (this.role === 'imported' && this.#host.engine.times().takenOver) {
      // Our worker already serves (its event is still queued): too late to drop anything.
      throw new ZiuError('ERR_ZIU_HANDOVER_STATE', 'abort: this instance has taken over the rings; stop it instead');
    }
    if (this.role === 'imported') {
      this.#dropImported();
      this.role = 'standby';
      return { body: { role: this.role } };
    }
    if (this.role === 'exporting') {
      this.#forgetExport();
      this.role = 'active';
      return { body: { role: this.role } };
    }
    throw new ZiuError('ERR_ZIU_HANDOVER_STATE', `abort: not possible while ${this.role}; use thaw (old side) or stop the instance (new side)`);
  }

  #expectRole(op: string, roles: Role[]): void {
    if (!roles.includes(this.role)) {
      throw new ZiuError('ERR_ZIU_HANDOVER_STATE', `${op}: this instance is ${this.role}; ${op} needs ${roles.join(' or ')}`);
    }
  }
}

function describe(d: DeviceExport): string {
  return d.kind === 'tap' ? `tap ${d.ifname}` : `${d.path},${d.mode}`;
}

function namedFds(fds: Map<string, number>): { fds: string[] } {
  return { fds: [...fds.keys()] };
}

/** Pair the names a message gives its fds with the fds; a mismatch closes them all and fails. */
function takeNamed(req: Record<string, unknown>, fds: number[]): Map<string, number> {
  const names = req['fds'] ?? [];
  if (!Array.isArray(names) || names.length !== fds.length || !names.every((n) => typeof n === 'string') || new Set(names).size !== names.length) {
    for (const fd of fds) native.close(fd);
    throw new ZiuError('ERR_ZIU_FD_NAMES', `the message names ${Array.isArray(names) ? names.length : 0} fds but carries ${fds.length} (names must be unique strings)`);
  }
  return new Map(names.map((n: string, i) => [n, fds[i]!]));
}

export type { VhostExport };
