import { ZiuError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Baton, BATON_MAX_DEVICES } from '../../handover/baton.js';
import type { ChangedDevices, CommitReply, HandbackReply, ImportRequest, ResumeReply, ResumeRequest } from '../../handover/messages/index.js';
import { BATON_FD, CONTROL_LISTENER_FD, decodeState, encodeState, fdName, GO_FD, type DeviceExport, type StateExport, type StateFormat, type TapExport } from '../../handover/state.js';
import { check, native, type PollHandle } from '../../native/index.js';
import { NamedFds } from '../../native/fds.js';
import { processRef } from '../../process/index.js';
import type { TapSpec } from '../config.js';
import { VhostPort } from '../vhost/port.js';
import { TABLE_FD } from '../tables.js';
import { expectRole, type HandoverHost, type Session } from './host.js';
import type { Answer } from './serve.js';

/** How often the control thread beats while we serve before commit (the worker: native/dp.h, DP_BEAT_MS). */
const BEAT_MS = 10;

/**
 * The new side of a handover (docs/handover-protocol.md): adopt what the
 * old instance exported without serving it, take the rings (its worker on
 * the go signal, or resume), then own everything at commit.
 */
export class NewSide {
  #s: Session;
  #host: HandoverHost;
  #log: Logger;
  #baton: Baton | null = null;
  /** the go eventfd: written by the old side's engine as it freezes, waited on by ours */
  #go: number | null = null;
  /** the eventfd our worker writes after it acted on go, and its poll handle */
  #done: { fd: number; poll: PollHandle } | null = null;
  /** the predecessor's control listener, taken at commit */
  #controlFd: number | null = null;
  #controlPath: string | null = null;
  /** the state format of the import, and each device's index in it (its bit in the baton page) */
  #format: StateFormat = 1;
  #index = new Map<string, number>();
  /** the control thread's heartbeat into the baton page while we serve before commit */
  #beat: NodeJS.Timeout | null = null;

  constructor(session: Session, host: HandoverHost, log: Logger) {
    this.#s = session;
    this.#host = host;
    this.#log = log;
  }

  import(req: ImportRequest, fds: NamedFds): Answer<'import'> {
    expectRole(this.#s, 'import', ['standby']);
    try {
      const formats = this.#host.stateFormats;
      if (!formats.includes(req.format)) {
        throw new ZiuError('ERR_ZIU_STATE_FORMAT', `this instance imports state formats ${formats.join(', ')}, not ${String(req.format)}`);
      }
      const state = decodeState(req.format, req.state);
      this.#checkDevices(state);
      // The predecessor's worker placement, unless we were started with our own: applied
      // before any ring is ours, so the rings never run on a worse-placed thread.
      if (req.worker && this.#host.worker() === null) this.#host.placeWorker(req.worker);
      // Tables first: the ports find their table ids by name in the bridge file's directory.
      this.#host.tables.adopt(this.#host.engine, req.tables ?? null, fds.take(TABLE_FD.bridge), fds.take(TABLE_FD.flow));
      this.#adoptAll(state.devices, fds, { prefault: true });
      this.#controlFd = fds.take(CONTROL_LISTENER_FD);
      this.#controlPath = state.control;
      this.#baton = Baton.adopt(fds.need(BATON_FD, 'import'));
      this.#format = req.format;
      this.#index = new Map(state.devices.map((d, i) => [d.name, i]));
      if (state.devices.length > BATON_MAX_DEVICES) throw new ZiuError('ERR_ZIU_IMPORT', `${state.devices.length} devices: a handover marks at most ${BATON_MAX_DEVICES}`);
      // Who holds the rings once they are taken: the old side stops exactly this process if it hangs.
      const me = processRef(process.pid);
      if (me === null) throw new ZiuError('ERR_ZIU_IMPORT', 'cannot read our own start time from /proc/self/stat');
      this.#baton.setSuccessor(me);
      for (const p of this.#host.ports) this.#watch(p);
      this.#go = fds.take(GO_FD);
      if (this.#go !== null && !this.#host.faults.has('no-forward')) this.#arm(this.#go);
      this.#s.upgradeId = req.upgradeId ?? null;
      this.#s.role = 'imported';
      this.#log.info({ devices: state.devices.map((d) => d.name), format: req.format }, 'imported device state');
      return { body: { devices: state.devices.map((d) => d.name) } };
    } catch (err) {
      this.#dropImported();
      throw err;
    }
  }

  /** Every device the old instance has must be one we are configured for (or we take whatever comes). */
  #checkDevices(state: StateExport): void {
    const c = this.#host.config;
    if (c.vhostUser.length === 0 && c.taps.length === 0) return;
    for (const d of state.devices) {
      const want = d.kind === 'tap' ? c.taps.find((t) => t.name === d.name) : c.vhostUser.find((v) => v.name === d.name);
      if (!want) {
        throw new ZiuError('ERR_ZIU_IMPORT', `device '${d.name}' (${d.kind}) of the old instance is not configured in the new one`);
      }
      const same = d.kind === 'tap' ? (want as TapSpec).ifname === d.ifname : 'path' in want && want.path === d.path && want.mode === d.mode;
      if (!same) throw new ZiuError('ERR_ZIU_IMPORT', `device '${d.name}' is configured differently in the new instance (${describe(d)})`);
    }
  }

  #adoptAll(devices: DeviceExport[], fds: NamedFds, o: { prefault: boolean }): void {
    for (const d of devices) {
      if (this.#host.faults.has('import-fail')) {
        throw new ZiuError('ERR_ZIU_IMPORT', `device '${d.name}': injected fault (ZIU_FAULT=import-fail)`);
      }
      try {
        if (d.kind === 'tap') this.#adoptTap(d, fds);
        else this.#host.ports.push(VhostPort.adopt(this.#host.portOptions(d), d, fds, o));
      } catch (err) {
        if (err instanceof ZiuError && err.code === 'ERR_ZIU_IMPORT') throw err;
        throw new ZiuError('ERR_ZIU_IMPORT', `device '${d.name}': ${(err as Error).message}`, { cause: err });
      }
    }
  }

  #adoptTap(t: TapExport, fds: NamedFds): void {
    const fd = fds.need(fdName(t.name, 'tap'), `device '${t.name}'`);
    try {
      this.#host.taps.push({ spec: { name: t.name, ifname: t.ifname }, fd, enginePort: this.#host.engine.addPort('tap', fd, t.name) });
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** Mark a device in the baton page before we consume anything of it: the old side's copy is stale from then on. */
  #watch(p: VhostPort): void {
    const i = this.#index.get(p.name);
    const baton = this.#baton;
    if (i === undefined || baton === null) return;
    let marked = false;
    p.watchConsumption(() => {
      if (marked) return;
      baton.markDirty(i);
      marked = true;
    });
  }

  /** Beat into the baton page (worker and control thread) while we serve before commit. */
  #startBeating(): void {
    const baton = this.#baton;
    if (baton === null || this.#beat !== null) return;
    baton.beat(process.hrtime.bigint());
    this.#host.engine.setBeat(baton.fd);
    this.#beat = setInterval(() => baton.beat(process.hrtime.bigint()), BEAT_MS);
    this.#beat.unref();
  }

  #stopBeating(): void {
    if (this.#beat !== null) clearInterval(this.#beat);
    this.#beat = null;
    this.#host.engine.setBeat(null);
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
    this.#release();
  }

  #release(): void {
    this.#stopBeating();
    this.#baton?.close();
    this.#baton = null;
    if (this.#go !== null) native.close(this.#go);
    this.#go = null;
  }

  /** Let our worker take the rings the moment the old side freezes (docs/handover-protocol.md, direct takeover). */
  #arm(go: number): void {
    const done = check(native.eventfd(0, false), 'eventfd', {});
    try {
      this.#host.engine.armTakeover(go, this.#baton!.fd, done);
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
    if (this.#s.role !== 'imported') return;
    const t = this.#host.engine.times();
    if (t.takenOver) {
      this.#activate();
      this.#log.info({ thawedNs: t.thawedNs }, "took over directly on the old instance's freeze");
    } else {
      this.#log.warn('the old instance signalled its freeze but kept the rings (baton lost)');
    }
  }

  /** The rings are ours (resume or direct takeover): read the sockets, wake the guests. */
  #activate(): void {
    this.#disarm();
    this.#startBeating();
    this.#s.role = 'resumed';
    for (const p of this.#host.ports) {
      p.activate();
      p.signalCalls();
    }
    if (this.#host.faults.has('crash-after-resume')) setTimeout(() => process.kill(process.pid, 'SIGKILL'), 5);
    if (this.#host.faults.has('hang-after-resume')) {
      // The control thread stuck in a loop once resume has been answered; the worker goes on serving and beating.
      setTimeout(() => {
        for (const end = Date.now() + 30_000; Date.now() < end; );
      }, 300);
    }
    void this.#host.notify({ STATUS: 'forwarding (handover not yet committed)' });
  }

  async resume(req: ResumeRequest, fds: NamedFds): Promise<Answer<'resume'>> {
    expectRole(this.#s, 'resume', ['imported', 'resumed']);
    if (req.changed !== null && this.#s.role === 'resumed') {
      throw new ZiuError('ERR_ZIU_HANDOVER_STATE', 'resume: changed devices can only be re-imported before this instance serves');
    }
    if (req.changed !== null) {
      // Our worker was never signalled (the old side saw changes); make sure it cannot act on stale state.
      this.#disarm();
      this.#reimport(req.changed, fds);
    }
    const engine = this.#host.engine;
    if (this.#s.role === 'imported') {
      let prev = this.#baton!.takeForNew();
      if (prev === 'active' && req.predecessorGone === true) {
        // Nobody froze it: the old instance died while it still served. Its rings stopped with it.
        prev = this.#baton!.takeFromDead() === 'active' ? 'frozen' : prev;
        if (prev === 'frozen') this.#log.warn('taking the rings from a predecessor that died unfrozen');
      }
      if (prev === 'frozen') {
        this.#disarm();
        if (!this.#host.faults.has('no-forward')) engine.thaw();
      } else if (!(prev === 'new' && engine.times().takenOver)) {
        throw new ZiuError(
          'ERR_ZIU_BATON',
          prev === 'active' ? 'the old instance has not frozen; not resuming' : 'the old instance has taken the rings back (dead-man switch or thaw); not resuming',
        );
      }
      // (prev new and taken over: our worker won on the go signal; its event is still queued.)
      this.#activate();
    }
    const thawedNs = engine.times().thawedNs;
    // The first pass is stamped by the worker; it is due within microseconds.
    let firstPassNs = 0n;
    const deadline = performance.now() + 200;
    while (thawedNs !== 0n && performance.now() < deadline) {
      firstPassNs = engine.times().firstPassNs;
      if (firstPassNs !== 0n) break;
      // A loaded host may not schedule the worker at once: yield, then sleep a little.
      await new Promise((r) => (performance.now() + 190 < deadline ? setImmediate(r) : setTimeout(r, 1)));
    }
    this.#s.last = { thawedNs, firstPassNs };
    const takenOver = engine.times().takenOver;
    this.#log.info({ thawedNs, firstPassNs, takenOver }, 'resumed: forwarding');
    const body: ResumeReply = { thawedNs, firstPassNs, takenOver };
    return { body };
  }

  /** Devices that changed between export and freeze: replace what was imported for them. */
  #reimport(changed: ChangedDevices, fds: NamedFds): void {
    const state = decodeState(changed.format, changed.state);
    for (const d of state.devices) {
      const ports = this.#host.ports;
      const i = ports.findIndex((p) => p.name === d.name);
      if (i >= 0) ports.splice(i, 1)[0]!.discard();
    }
    // Inside the traffic gap (resume): nothing faulted in ahead, the changed devices' pages fault in as they are used.
    this.#adoptAll(state.devices, fds, { prefault: false });
    for (const p of this.#host.ports) if (state.devices.some((d) => d.name === p.name)) this.#watch(p);
    this.#log.info({ devices: state.devices.map((d) => d.name) }, 're-imported devices that changed after export');
  }

  /**
   * A rollback after we took the rings, while we still answer: stop serving
   * (sockets first, then the engine, every consumed chain completed), give
   * the baton back (1 -> 0) and send the state of every device we consumed
   * anything of, so that the old instance goes on from where we stopped:
   * the messages we read (a new call fd, a memory table, a ring stopped,
   * half a message) are not lost. We never serve again (`handed-back`).
   */
  handback(): Answer<'handback'> {
    expectRole(this.#s, 'handback', ['resumed']);
    const host = this.#host;
    for (const p of host.ports) p.freeze();
    const frozenNs = host.engine.freeze(-1);
    // A converted flow table: what we changed goes back into the old instance's, in its format.
    const flowsBack = host.engine.tablesHandback();
    if (flowsBack > 0) this.#log.info({ flows: flowsBack }, "flow changes converted back into the old instance's table");
    this.#s.role = 'handed-back';
    // A commit that failed half-way may have left us accepting on the production control
    // listener beside the old instance: from now on only the old one does.
    if (host.control().path === host.config.control) host.stopAccepting();
    // Frozen and no longer ours: the beat stops with the engine, and the old side now reads word 0.
    this.#stopBeating();
    const prev = this.#baton!.handBack();
    if (prev !== 'new') throw new ZiuError('ERR_ZIU_BATON', `handback: the baton is ${prev}, not new: the old instance took the rings back already`);
    const dirty = new Set(this.#baton!.dirty());
    const fds = new NamedFds();
    const devices: DeviceExport[] = [];
    for (const p of host.ports) {
      const i = this.#index.get(p.name);
      if (i === undefined || !dirty.has(i)) continue;
      const x = p.exportState();
      devices.push(x.device);
      fds.merge(x.fds);
    }
    const changed = devices.length === 0 ? null : { format: this.#format, state: encodeState(this.#format, { control: this.#controlPath ?? host.config.control, devices }), fds: fds.toWire().names };
    this.#s.last = { ...this.#s.last, frozenNs };
    this.#log.warn({ frozenNs, devices: devices.map((d) => d.name) }, 'handed the rings back to the old instance');
    const body: HandbackReply = { frozenNs, changed };
    return devices.length === 0 ? { body } : { body, fds };
  }

  async commit(): Promise<Answer<'commit'>> {
    expectRole(this.#s, 'commit', ['resumed']);
    const host = this.#host;
    const fd = this.#controlFd;
    this.#controlFd = null;
    const same = this.#controlPath === host.config.control;
    await host.takeOverControl(same ? fd : null);
    if (fd !== null && !same) native.close(fd);
    await host.openMissingPorts();
    if (host.faults.has('commit-fail')) throw new ZiuError('ERR_ZIU_FAULT', 'commit: injected fault after taking the control listener (ZIU_FAULT=commit-fail)');
    // Last: until here a failed commit is rolled back by stopping us, which must leave the frontends alone.
    for (const p of host.ports) {
      p.claim();
      p.watchConsumption(null);
    }
    // Before the beat stops: the old side must not take a silent successor for a hung one.
    this.#baton?.markCommitted();
    await host.offload?.adopt();
    this.#release();
    host.engine.releaseTables();
    this.#s.role = 'active';
    this.#log.info({ control: host.config.control }, 'handover committed: this instance is the datapath now');
    // The very last step: once the service manager watches us, nothing may fail and stop us.
    const mainPidNotified = await host.becomeMain(`forwarding between ${host.ports.length + host.taps.length} ports`);
    const body: CommitReply = { role: this.#s.role, control: host.config.control, mainPidNotified };
    return { body };
  }

  /** imported -> standby: drop what was imported, unless our worker already serves. */
  abort(): Answer<'abort'> {
    if (this.#host.engine.times().takenOver) {
      // Our worker already serves (its event is still queued): too late to drop anything.
      throw new ZiuError('ERR_ZIU_HANDOVER_STATE', 'abort: this instance has taken over the rings; stop it instead');
    }
    this.#dropImported();
    this.#s.role = 'standby';
    return { body: { role: this.#s.role } };
  }
}

function describe(d: DeviceExport): string {
  return d.kind === 'tap' ? `tap ${d.ifname}` : `${d.path},${d.mode}`;
}
