import { ZiuError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Baton } from '../../handover/baton.js';
import {
  DEAD_MAN_MS,
  type AbortReply,
  type ChangedDevices,
  type CommitReply,
  type ExportReply,
  type ExportRequest,
  type FreezeReply,
  type FreezeRequest,
  type RingReport,
  type ThawReply,
  type ThawRequest,
} from '../../handover/messages/index.js';
import { BATON_FD, CONTROL_LISTENER_FD, decodeState, encodeState, fdName, GO_FD, type DeviceExport, type StateExport, type StateFormat } from '../../handover/state.js';
import { check, native } from '../../native/index.js';
import { NamedFds } from '../../native/fds.js';
import { stopProcess } from '../../process/index.js';
import { VhostPort } from '../vhost/port.js';
import { expectRole, type HandoverHost, type Session } from './host.js';
import type { Answer } from './serve.js';

interface Exported {
  format: StateFormat;
  generations: Map<string, number>;
  /** the devices in export order: bit i of the baton page's bitmap is order[i] */
  order: string[];
}

/**
 * A new instance's control thread may stall (a GC pause, a loaded host)
 * longer than its worker thread: its heartbeat gets this much more slack
 * than the dead-man bound before the old side takes it for hung.
 */
const CONTROL_BOUND = { factor: 5, minMs: 1000 } as const;

/**
 * The old side of a handover (docs/handover-protocol.md): export the device
 * state and its fds while still serving, freeze, then either let go (commit)
 * or serve again (thaw, abort, or the dead-man switch).
 */
export class OldSide {
  #s: Session;
  #host: HandoverHost;
  #log: Logger;
  #baton: Baton | null = null;
  /** the go eventfd: our engine writes it as it freezes, the new side's worker waits on it */
  #go: number | null = null;
  #exported: Exported | null = null;
  #deadMan: NodeJS.Timeout | null = null;
  /** handed over before commit: watching the new instance's heartbeat (docs/handover-protocol.md, section 8) */
  #watchTimer: NodeJS.Timeout | null = null;

  constructor(session: Session, host: HandoverHost, log: Logger) {
    this.#s = session;
    this.#host = host;
    this.#log = log;
  }

  export(req: ExportRequest): Answer<'export'> {
    expectRole(this.#s, 'export', ['active', 'exporting']);
    const formats = this.#host.stateFormats;
    const format = req.format ?? formats.at(-1)!;
    if (!formats.includes(format)) {
      throw new ZiuError('ERR_ZIU_STATE_FORMAT', `this instance exports state formats ${formats.join(', ')}, not ${String(format)}`);
    }
    const upgradeId = req.upgradeId ?? 'unnamed';
    if (this.#baton === null) {
      this.#baton = Baton.create();
      this.#go = check(native.eventfd(0, false), 'eventfd', {});
    }
    const { state, fds } = this.#collect(() => true);
    fds.set(BATON_FD, this.#baton.fd);
    fds.set(GO_FD, this.#go!);
    // The tables travel as the files themselves: the new instance maps them (read-only until it holds the rings).
    const tables = this.#host.tables.exportTables(this.#host.engine);
    for (const [name, fd] of tables?.fds ?? []) fds.set(name, fd);
    this.#exported = { format, generations: new Map(this.#host.ports.map((p) => [p.name, p.generation])), order: state.devices.map((d) => d.name) };
    this.#s.upgradeId = upgradeId;
    this.#s.role = 'exporting';
    this.#log.info({ upgradeId, format, devices: state.devices.length, fds: fds.size }, 'exported device state');
    void this.#host.notify({ STATUS: `handing over to a new instance (upgrade ${upgradeId})` });
    const body: ExportReply = { format, state: encodeState(format, state), tables: tables?.wire ?? null, fds: fds.toWire().names };
    return { body, fds };
  }

  /** The state of the devices `pick` selects and their fds (still ours: borrowed), plus the control listener. */
  #collect(pick: (name: string) => boolean): { state: StateExport; fds: NamedFds } {
    const fds = new NamedFds();
    const devices: DeviceExport[] = [];
    for (const p of this.#host.ports) {
      if (!pick(p.name)) continue;
      const x = p.exportState();
      devices.push(x.device);
      fds.merge(x.fds);
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

  freeze(req: FreezeRequest): Answer<'freeze'> {
    expectRole(this.#s, 'freeze', ['exporting']);
    const ex = this.#exported!;
    const baton = this.#baton!;
    const deadManMs = Math.min(req.deadManMs ?? DEAD_MAN_MS.default, DEAD_MAN_MS.max);
    // Sockets first: a message read after the engine froze could not be applied to it.
    for (const p of this.#host.ports) p.freeze();
    // Devices whose state changed since export must be re-sent: the new side
    // must not take over on its own with what it imported, so no go signal then.
    const changed = this.#host.ports.filter((p) => ex.generations.get(p.name) !== p.generation).map((p) => p.name);
    // Frozen a few microseconds before the engine is: only our own go signal
    // (sent once frozen) or a resume the orchestrator sends after our reply
    // can act on it, so nobody takes the rings while we still poll them.
    baton.freeze();
    let frozenNs: bigint;
    try {
      frozenNs = this.#host.engine.freeze(changed.length === 0 ? this.#go! : -1);
    } catch (err) {
      baton.unfreeze();
      for (const p of this.#host.ports) p.thaw();
      throw err;
    }
    this.#s.role = 'frozen';
    this.#deadMan = setTimeout(() => this.#deadManFired(deadManMs), deadManMs);
    const rings: Record<string, RingReport[]> = {};
    for (const p of this.#host.ports) {
      rings[p.name] = this.#host.engine.rings(p.enginePort).map((r) => ({ q: r.q, lastAvail: r.lastAvail, usedIdx: r.usedIdx, started: r.started }));
    }
    let body: FreezeReply = { frozenNs, rings, changed: null, signalled: changed.length === 0 };
    let fds: NamedFds | undefined;
    if (changed.length > 0) {
      const c = this.#collect((n) => changed.includes(n));
      c.fds.take(CONTROL_LISTENER_FD);
      fds = c.fds;
      body = { ...body, changed: { format: ex.format, state: encodeState(ex.format, c.state), fds: fds.toWire().names } };
    }
    this.#s.last = { frozenNs };
    this.#log.info({ frozenNs, changed, deadManMs }, 'frozen for handover');
    return fds ? { body, fds } : { body };
  }

  #deadManFired(ms: number): void {
    this.#deadMan = null;
    if (this.#s.role !== 'frozen' || this.#baton === null) return;
    const prev = this.#baton.takeForOld();
    if (prev === 'frozen') {
      this.#log.warn({ deadManMs: ms }, 'dead-man switch: no resume, commit or thaw in time; thawing');
      this.#thawNow();
    } else if (prev === 'new') {
      // The usual case of a direct takeover whose verify outlasts the bound: not a fault.
      this.#log.info({ deadManMs: ms }, 'dead-man bound passed with the new instance serving: staying frozen, watching it through the baton page until commit');
      this.#s.role = 'handed-over';
      for (const p of this.#host.ports) p.detach();
      this.#watch(ms);
    }
  }

  /**
   * Handed over, not committed: watch the new instance through the baton
   * page, without the orchestrator. If its worker's heartbeat is older than
   * the dead-man bound, or its control thread's older than CONTROL_BOUND,
   * it hung with the rings: stop that very process (pid and start time from
   * the page), then take them back. If it gave the rings back (handback:
   * word 0) and nobody thawed us within the bound, take them ourselves.
   */
  #watch(deadManMs: number): void {
    const since = process.hrtime.bigint();
    const controlBound = Math.max(CONTROL_BOUND.factor * deadManMs, CONTROL_BOUND.minMs);
    let frozenAt: number | null = null;
    this.#watchTimer = setInterval(() => {
      const baton = this.#baton;
      if (baton === null || this.#s.role !== 'handed-over' || baton.committed()) return this.#unwatch();
      const state = baton.read();
      if (state === 'new') {
        frozenAt = null;
        const now = process.hrtime.bigint();
        const ageMs = (beat: bigint): number => Number(now - (beat > since ? beat : since)) / 1e6;
        const b = baton.beats();
        const worker = ageMs(b.worker);
        const control = ageMs(b.control);
        if (worker > deadManMs || control > controlBound) void this.#takeBack({ workerBeatMs: Math.round(worker), controlBeatMs: Math.round(control), deadManMs, controlBound });
      } else if (state === 'frozen') {
        // Handed back, and nobody thaws us: the orchestrator is gone with the devices it carried.
        frozenAt ??= performance.now();
        if (performance.now() - frozenAt > deadManMs && baton.takeForOld() === 'frozen') {
          this.#log.warn({ deadManMs }, 'the new instance handed the rings back and nobody thawed us within the dead-man bound; thawing');
          this.#thawNow({ reset: this.#stale() });
        }
      } else {
        this.#unwatch();
      }
    }, Math.max(5, Math.floor(deadManMs / 4)));
  }

  #unwatch(): void {
    if (this.#watchTimer !== null) clearInterval(this.#watchTimer);
    this.#watchTimer = null;
  }

  /** The new instance hung with the rings: it must be gone before we serve again. */
  async #takeBack(why: Record<string, number>): Promise<void> {
    this.#unwatch();
    const baton = this.#baton!;
    const ref = baton.successor();
    this.#log.error({ ...why, successor: ref }, 'the new instance stopped beating while it held the rings: stopping it and taking them back');
    if (ref === null) {
      this.#log.error('the new instance never said who it is (baton page): cannot stop it, so the rings stay with it');
      return;
    }
    try {
      await stopProcess(ref, 0);
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, 'could not stop the new instance: the rings stay with it');
      return;
    }
    if (this.#baton !== baton || this.#s.role !== 'handed-over') return; // a thaw or commit came meanwhile
    const prev = baton.takeForOld();
    if (prev === 'new') baton.forceToOld();
    else if (prev !== 'frozen') return;
    this.#thawNow({ reset: this.#stale() });
  }

  /** Devices a successor that is gone had consumed vhost-user bytes of: our state of them is stale. */
  #stale(): string[] {
    const order = this.#exported?.order ?? [];
    return this.#baton === null ? [] : this.#baton.dirty().flatMap((i) => (order[i] === undefined ? [] : [order[i]]));
  }

  thaw(req: ThawRequest, fds: NamedFds): Answer<'thaw'> {
    if (this.#s.role === 'active') return { body: { thawed: false, role: this.#s.role } };
    expectRole(this.#s, 'thaw', ['exporting', 'frozen', 'handed-over']);
    if (this.#s.role === 'exporting') {
      this.#forget();
      this.#s.role = 'active';
      return { body: { thawed: false, role: this.#s.role } };
    }
    const baton = this.#baton!;
    if (baton.takeForOld() === 'new') {
      // The new instance resumed: only the orchestrator, having stopped it, may take the rings back.
      if (req.force !== true) {
        throw new ZiuError('ERR_ZIU_BATON', 'the new instance has resumed and holds the rings; hand them back (handback) or stop it, then thaw with force');
      }
      baton.forceToOld();
    }
    // Handed back: the new instance's state of what it consumed replaces ours. Else, if it is gone
    // having consumed something, those devices start over (a reset, never a stale device).
    let readopted: string[] = [];
    let reset: string[] = [];
    if (req.changed) {
      try {
        readopted = this.#readopt(req.changed, fds);
      } catch (err) {
        // The rings are ours now (the word says so): serve, with the devices we could not take back reset.
        this.#log.error({ err: (err as Error).message }, 'could not take back the handed-back devices; resetting the ones the new instance consumed');
        reset = this.#stale();
      }
    } else {
      reset = this.#stale();
    }
    const thawedNs = this.#thawNow({ readopted, reset });
    const body: ThawReply = { thawed: true, thawedNs, role: this.#s.role, readopted, reset };
    return { body };
  }

  /** Adopt the devices a handback carried in place of ours, all or none. */
  #readopt(changed: ChangedDevices, fds: NamedFds): string[] {
    const ports = this.#host.ports;
    const state = decodeState(changed.format, changed.state);
    const adopted: VhostPort[] = [];
    try {
      for (const d of state.devices) {
        if (d.kind !== 'vhost-user' || !ports.some((p) => p.name === d.name)) {
          throw new ZiuError('ERR_ZIU_IMPORT', `thaw: handed-back device '${d.name}' (${d.kind}) is not a vhost-user port of this instance`);
        }
        // Inside the traffic gap (the thaw of a rollback): nothing faulted in ahead.
        adopted.push(VhostPort.adopt(this.#host.portOptions(d), d, fds, { prefault: false }));
      }
    } catch (err) {
      for (const a of adopted) a.discard();
      throw err;
    }
    for (const a of adopted) {
      const i = ports.findIndex((p) => p.name === a.name);
      // Our copy goes without a word to the frontend: the adopted one holds the same connection.
      ports.splice(i, 1, a)[0]!.discard();
    }
    this.#log.info({ devices: adopted.map((a) => a.name) }, 'took back the devices the new instance handed back');
    return adopted.map((a) => a.name);
  }

  #thawNow(o: { readopted?: string[]; reset?: string[] } = {}): bigint {
    if (this.#deadMan) clearTimeout(this.#deadMan);
    this.#deadMan = null;
    this.#unwatch();
    const readopted = new Set(o.readopted ?? []);
    const reset = new Set(o.reset ?? []);
    for (const p of this.#host.ports) {
      if (!reset.has(p.name)) continue;
      const reason = 'a rollback: the new instance had consumed vhost-user messages of this device and is gone; the device starts over';
      this.#log.warn({ port: p.name }, reason);
      p.reset(reason);
    }
    const thawedNs = this.#host.engine.thaw();
    for (const p of this.#host.ports) {
      if (readopted.has(p.name)) {
        p.activate();
        p.claim();
      } else {
        p.thaw();
      }
      p.signalCalls();
    }
    this.#forget();
    this.#s.role = 'active';
    this.#s.last = { ...this.#s.last, thawedNs };
    this.#log.info({ thawedNs }, 'thawed: forwarding again');
    // Still (or again) the service's main process: a successor never became it before its commit.
    void this.#host.notify({ MAINPID: process.pid, STATUS: 'forwarding (handover undone)' });
    return thawedNs;
  }

  /** Drop the export: a new instance still holding the baton must never resume now. */
  #forget(): void {
    this.#unwatch();
    this.#exported = null;
    this.#baton?.retire();
    this.#baton?.close();
    this.#baton = null;
    if (this.#go !== null) native.close(this.#go);
    this.#go = null;
  }

  /** The successor serves: never thaw again, let go of everything on exit. */
  commit(): Answer<'commit'> {
    const now = this.#baton!.read();
    if (now !== 'new') {
      throw new ZiuError('ERR_ZIU_BATON', now === 'old' ? 'this instance already took the rings back; nothing to commit' : 'the new instance has not resumed; commit it first');
    }
    if (this.#deadMan) clearTimeout(this.#deadMan);
    this.#deadMan = null;
    this.#unwatch();
    this.#s.role = 'handed-over';
    for (const p of this.#host.ports) p.detach();
    // The successor accepts on the control listener now: exactly one instance does.
    this.#host.stopAccepting();
    // The successor is the service's main process now: a STOPPING=1 from us would stop the service.
    this.#host.leaveService();
    this.#host.offload?.release();
    const body: CommitReply = { role: this.#s.role };
    return { body };
  }

  /** exporting -> active: nothing was switched. */
  abort(): Answer<'abort'> {
    this.#forget();
    this.#s.role = 'active';
    const body: AbortReply = { role: this.#s.role };
    return { body };
  }
}
