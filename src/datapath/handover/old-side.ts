import { ZiuError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { Baton } from '../../handover/baton.js';
import {
  DEAD_MAN_MS,
  type AbortReply,
  type CommitReply,
  type ExportReply,
  type ExportRequest,
  type FreezeReply,
  type FreezeRequest,
  type RingReport,
  type ThawReply,
  type ThawRequest,
} from '../../handover/messages/index.js';
import { BATON_FD, CONTROL_LISTENER_FD, encodeState, fdName, GO_FD, type DeviceExport, type StateExport, type StateFormat } from '../../handover/state.js';
import { check, native } from '../../native/index.js';
import { NamedFds } from '../../native/fds.js';
import { MAX_FDS_PER_MESSAGE } from '../../net/socket.js';
import { expectRole, type HandoverHost, type Session } from './host.js';
import type { Answer } from './serve.js';

interface Exported {
  format: StateFormat;
  generations: Map<string, number>;
}

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
    if (fds.size > MAX_FDS_PER_MESSAGE) {
      // One message carries them all (SCM_RIGHTS: at most 253); splitting the export is not done yet.
      this.#forget();
      throw new ZiuError(
        'ERR_ZIU_TOO_MANY_FDS',
        `export needs ${fds.size} fds (${state.devices.length} devices) but one message carries at most ${MAX_FDS_PER_MESSAGE}; this version hands over about 40 vhost-user ports per instance`,
      );
    }
    this.#exported = { format, generations: new Map(this.#host.ports.map((p) => [p.name, p.generation])) };
    this.#s.upgradeId = upgradeId;
    this.#s.role = 'exporting';
    this.#log.info({ upgradeId, format, devices: state.devices.length, fds: fds.size }, 'exported device state');
    const body: ExportReply = { format, state: encodeState(format, state), fds: fds.toWire().names };
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
      this.#log.warn({ deadManMs: ms }, 'dead-man switch: the new instance holds the baton; staying frozen');
      this.#s.role = 'handed-over';
      for (const p of this.#host.ports) p.detach();
    }
  }

  thaw(req: ThawRequest): Answer<'thaw'> {
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
        throw new ZiuError('ERR_ZIU_BATON', 'the new instance has resumed and holds the rings; stop it, then thaw with force');
      }
      baton.forceToOld();
    }
    const thawedNs = this.#thawNow();
    const body: ThawReply = { thawed: true, thawedNs, role: this.#s.role };
    return { body };
  }

  #thawNow(): bigint {
    if (this.#deadMan) clearTimeout(this.#deadMan);
    this.#deadMan = null;
    const thawedNs = this.#host.engine.thaw();
    for (const p of this.#host.ports) {
      p.thaw();
      p.signalCalls();
    }
    this.#forget();
    this.#s.role = 'active';
    this.#s.last = { ...this.#s.last, thawedNs };
    this.#log.info({ thawedNs }, 'thawed: forwarding again');
    void this.#host.notify({ STATUS: 'forwarding (handover undone)' });
    return thawedNs;
  }

  /** Drop the export: a new instance still holding the baton must never resume now. */
  #forget(): void {
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
    this.#s.role = 'handed-over';
    for (const p of this.#host.ports) p.detach();
    // The successor accepts on the control listener now: exactly one instance does.
    this.#host.stopAccepting();
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
