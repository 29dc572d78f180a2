import { ControlClient } from '../control/client.js';
import { UsageError, ZiuError } from '../errors.js';
import type { Logger } from '../log.js';
import { check, native, type PollHandle } from '../native/index.js';
import type { DpFlowKey, DpOffloadEvent, DpOffloadStatus } from '../native/offload-native.js';
import { closeFds } from '../native/fds.js';
import type { Engine, PortStats } from './engine.js';
import { addrBytes, flowId, formatAddr, parseFlowKey, parseFlowSpec, type FlowSpec } from './offload-flows.js';

/** --offload <module>=<device>: the acceleration module and the device it drives (today: fake=<ziu-fakenic control socket>). */
export interface OffloadSpec {
  module: 'fake';
  nic: string;
}

export const OFFLOAD_MODULES = ['fake'] as const;

/** How long a new instance waits at commit for its claim and reconcile before it reports them as pending. */
const ADOPT_WAIT_MS = 3000;
/** A flow_del the module failed is tried this often before the flow is reported as stuck in the module. */
const DEL_TRIES = 3;

/** A representor: a port of the engine that stands for one VF of the NIC (frames the NIC did not forward itself). */
interface Rep {
  name: string;
  vf: number;
  fd: number;
  enginePort: number;
  down: string | null;
}

type FlowState = 'pending' | 'offloaded' | 'host' | 'deleting' | 'stuck';

interface HostFlow {
  spec: FlowSpec;
  /** the cookie of the last request for it: older events are ignored */
  cookie: bigint;
  state: FlowState;
  /** why it is on the host, or why it is stuck */
  reason: string | null;
  delTries: number;
}

type Registration = 'none' | 'standby' | 'registering' | 'registered' | 'failed' | 'released';

function errnoText(rc: number): string {
  switch (-rc) {
    case 95:
      return 'the module cannot offload it (EOPNOTSUPP): a port the NIC does not have';
    case 28:
      return 'the module table is full (ENOSPC)';
    case 5:
      return 'the module failed (EIO)';
    case 116:
      return 'another datapath owns the NIC now (ESTALE)';
    case 107:
      return 'no module registered (ENOTCONN)';
    case 16:
      return 'another live datapath owns the NIC (EBUSY)';
    case 71:
      return 'the NIC state is not one this module knows (EPROTO: a foreign or corrupted header)';
    case 2:
      return 'the module has no such entry (ENOENT)';
    default:
      return `errno ${-rc}`;
  }
}

/**
 * The datapath's side of hardware offload (docs/offload.md): attaches to the
 * NIC the module drives, serves its representors as engine ports, registers
 * the module with the engine's hook API (native/dp_offload.c), keeps the
 * host's flow state (the `flow` control op, the stand-in for the flow table
 * until it lands) and follows what the module did with each flow. A flow is
 * "offloaded" once the module took it, "host" if it refused or failed: then
 * the NIC passes its frames up the representor and the bridge forwards them.
 */
export class Offload {
  readonly spec: OffloadSpec;
  readonly reps: Rep[] = [];
  #engine: Engine;
  #log: Logger;
  #instance: string;
  #shmFd = -1;
  #flows = new Map<string, HostFlow>();
  #state: Registration = 'none';
  /** dpOffloadRegister succeeded: the engine holds the module until dpOffloadUnregister */
  #native = false;
  #error: string | null = null;
  #adopted = false;
  #softResets = 0;
  #reconcile: Omit<Extract<DpOffloadEvent, { kind: 'reconcile' }>, 'kind'> | null = null;
  #poll: PollHandle | null = null;
  #cookie = 0n;
  #waiters: Array<() => void> = [];
  #portOf: (name: string) => number | null;
  #portName: (port: number) => string | null;
  #ports: () => ReadonlySet<string>;

  constructor(o: {
    spec: OffloadSpec;
    engine: Engine;
    log: Logger;
    instance: string;
    portOf: (name: string) => number | null;
    portName: (port: number) => string | null;
    ports: () => ReadonlySet<string>;
  }) {
    this.spec = o.spec;
    this.#engine = o.engine;
    this.#log = o.log.child({ component: 'offload', module: o.spec.module });
    this.#instance = o.instance;
    this.#portOf = o.portOf;
    this.#portName = o.portName;
    this.#ports = o.ports;
  }

  /** Open the device: the NIC's shared state and one representor per VF, each an engine port bound to its VF. */
  async attach(): Promise<void> {
    let c: ControlClient;
    try {
      c = await ControlClient.connect(this.spec.nic);
    } catch (cause) {
      throw new ZiuError('ERR_ZIU_OFFLOAD', `--offload ${this.spec.module}: cannot reach the NIC at ${this.spec.nic}: ${(cause as Error).message}`, { cause });
    }
    let fds: number[] = [];
    try {
      const r = await c.call<{ vfs: number; fds: string[] }>({ op: 'attach' });
      fds = r.fds;
      const vfs = r.body.vfs;
      if (!Number.isInteger(vfs) || vfs < 1 || fds.length !== vfs + 1) throw new ZiuError('ERR_ZIU_OFFLOAD', `--offload ${this.spec.module}: the NIC at ${this.spec.nic} sent ${fds.length} fds for ${String(vfs)} VFs`);
      this.#shmFd = fds[0]!;
      for (let vf = 0; vf < vfs; vf++) {
        const fd = fds[vf + 1]!;
        this.reps.push({ name: `rep${vf}`, vf, fd, enginePort: this.#engine.addPort('tap', fd, `rep${vf}`, vf), down: null });
      }
      fds = [];
    } catch (err) {
      closeFds(fds);
      throw err instanceof ZiuError ? err : new ZiuError('ERR_ZIU_OFFLOAD', `--offload ${this.spec.module}: attach to ${this.spec.nic} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      c.close();
    }
    this.#log.info({ nic: this.spec.nic, reps: this.reps.map((r) => r.name) }, 'attached to the NIC');
  }

  /**
   * Register the module with the engine. fresh: this instance programs the
   * NIC from scratch (a soft reset wipes what a crashed predecessor left);
   * none: a standby instance binds its representors and reads counters
   * only, until it adopts at commit. A failure is reported (status, log):
   * the host datapath then forwards everything, as without a module.
   */
  register(claim: 'fresh' | 'none'): void {
    const h = this.#engine.nativeHandle;
    const rc = native.dpOffloadRegister(h, this.spec.module, this.#shmFd, this.#instance, claim === 'fresh' ? 1 : 0, process.pid);
    if (rc < 0) {
      this.#fail(`registering module '${this.spec.module}' failed: ${errnoText(rc)}`);
      return;
    }
    this.#native = true;
    const fd = check(native.dpOffloadEventFd(h), 'dpOffloadEventFd');
    this.#poll = check(native.pollStart(fd, native.POLL_READABLE, () => this.#onEvents()), 'uv_poll_start', { fd });
    this.#state = claim === 'fresh' ? 'registering' : 'standby';
    this.#log.info({ claim }, claim === 'fresh' ? 'module registered: claiming the NIC (fresh: soft reset)' : 'module registered without claiming the NIC (standby)');
  }

  #fail(msg: string): void {
    this.#state = 'failed';
    this.#error = msg;
    this.#log.error({ nic: this.spec.nic }, `offload: ${msg}; the host datapath forwards everything`);
    for (const f of this.#flows.values()) if (f.state === 'pending') this.#toHost(f, msg);
  }

  #toHost(f: HostFlow, reason: string): void {
    f.state = 'host';
    f.reason = reason;
  }

  #onEvents(): void {
    const r = native.dpOffloadEvents(this.#engine.nativeHandle);
    if (typeof r === 'number') return;
    for (const e of r) this.#onEvent(e);
    for (const w of this.#waiters.splice(0)) w();
  }

  #onEvent(e: DpOffloadEvent): void {
    switch (e.kind) {
      case 'claim':
        if (e.rc === 0) {
          this.#state = 'registered';
          this.#adopted = e.adopt;
          this.#log.info({ adopt: e.adopt }, e.adopt ? 'took over the NIC from the predecessor: nothing wiped' : 'the NIC is ours');
        } else {
          this.#fail(`claiming the NIC failed: ${errnoText(e.rc)}`);
        }
        return;
      case 'reset':
        if (e.rc === 0) this.#softResets++;
        this.#log[e.rc === 0 ? 'info' : 'error']({ rc: e.rc }, e.rc === 0 ? 'soft reset: the NIC holds nothing' : `soft reset failed: ${errnoText(e.rc)}`);
        return;
      case 'reconcile': {
        const { kind: _k, ...counts } = e;
        this.#reconcile = counts;
        this.#log[e.failed > 0 || e.rc < 0 ? 'warn' : 'info'](counts, 'reconciled the NIC with our flows');
        return;
      }
      case 'flow':
        this.#onFlowEvent(e);
    }
  }

  #onFlowEvent(e: Extract<DpOffloadEvent, { kind: 'flow' }>): void {
    const f = [...this.#flows.values()].find((x) => x.cookie === e.cookie);
    if (!f) return;
    const id = flowId(f.spec);
    if (e.op === 'flow_set') {
      if (e.rc === 0) {
        f.state = 'offloaded';
        f.reason = null;
      } else {
        this.#toHost(f, errnoText(e.rc));
        // EOPNOTSUPP is the normal answer for a flow the NIC has no port for: not worth a warning.
        if (e.rc !== -95) this.#log.warn({ flow: id, rc: e.rc }, `flow stays on the host: ${errnoText(e.rc)}`);
      }
      return;
    }
    // flow_del: gone from the module (or it never held it); a failure is retried, then reported.
    if (e.rc === 0 || e.rc === -2 || e.rc === -95 || e.rc === -107 || e.rc === -116) {
      this.#flows.delete(id);
      return;
    }
    if (++f.delTries < DEL_TRIES && this.#post('del', f)) return;
    f.state = 'stuck';
    f.reason = `the module did not delete it (${errnoText(e.rc)}): its frames may still be forwarded by the NIC until the next reconcile`;
    this.#log.error({ flow: id, rc: e.rc }, f.reason);
  }

  #key(spec: FlowSpec): DpFlowKey | null {
    const inPort = this.#portOf(spec.in);
    if (inPort === null) return null;
    return { inPort, ipver: spec.ipver, proto: spec.proto, sport: spec.sport, dport: spec.dport, src: addrBytes(spec.ipver, spec.src), dst: addrBytes(spec.ipver, spec.dst) };
  }

  #action(spec: FlowSpec): { kind: number; outPort: number } | null {
    if (spec.forward === null) return { kind: native.DP_OFFLOAD_DROP, outPort: 0 };
    const out = this.#portOf(spec.forward);
    return out === null ? null : { kind: native.DP_OFFLOAD_FORWARD, outPort: out };
  }

  /** Pin (or unpin) the flow in the engine's flow table, which then enforces its action whatever the module does. */
  #pin(op: 'pin' | 'unpin', spec: FlowSpec): void {
    const key = this.#key(spec);
    const act = this.#action(spec);
    if (key === null || act === null) throw new ZiuError('ERR_ZIU_FLOW', `flow: a port of ${flowId(spec)} is not one of ours`);
    const h = this.#engine.nativeHandle;
    const rc = op === 'pin' ? native.dpFlowPin(h, key, act) : native.dpFlowUnpin(h, key);
    if (rc === 0 || (op === 'unpin' && rc === -2)) return;
    const why =
      rc === -28
        ? `the flow table has no room for it (ENOSPC: its probe window for this key holds only flows set by this op); delete some, or give a larger --flow-table`
        : rc === -30
          ? 'the flow table is not ours to write yet (EROFS): retry once this instance serves'
          : `errno ${-rc}`;
    throw new ZiuError('ERR_ZIU_FLOW', `flow ${op === 'pin' ? 'set' : 'del'} ${flowId(spec)}: ${why}`);
  }

  /** Post a set or delete; false (the flow then stays with the host) if there is no module or its queue is full. */
  #post(op: 'set' | 'del', f: HostFlow): boolean {
    const key = this.#key(f.spec);
    const act = this.#action(f.spec);
    if (key === null || act === null) return false;
    f.cookie = ++this.#cookie;
    const h = this.#engine.nativeHandle;
    const rc = op === 'set' ? native.dpOffloadFlowSet(h, key, act, f.cookie) : native.dpOffloadFlowDel(h, key, f.cookie);
    if (rc < 0) {
      if (op === 'set') this.#toHost(f, rc === -11 ? 'the offload queue is full (EAGAIN)' : errnoText(rc));
      return false;
    }
    return true;
  }

  #active(): boolean {
    return this.#state === 'registering' || this.#state === 'registered';
  }

  /** The `flow` control op: set, del, list. Set and del are refused unless `mayChange` (an instance in a handover). */
  flowOp(req: Record<string, unknown>, mayChange: () => string | null): Record<string, unknown> {
    const action = req['action'];
    if (action === 'list') return { flows: this.flows() };
    if (action !== 'set' && action !== 'del') throw new ZiuError('ERR_ZIU_FLOW', `flow: action must be set, del or list, not '${String(action)}'`);
    const refused = mayChange();
    if (refused !== null) throw new ZiuError('ERR_ZIU_HANDOVER_STATE', `flow ${action}: ${refused}`);
    if (action === 'set') {
      const spec = parseFlowSpec(req['flow'], this.#ports());
      const id = flowId(spec);
      this.#pin('pin', spec);
      const f: HostFlow = this.#flows.get(id) ?? { spec, cookie: 0n, state: 'pending', reason: null, delTries: 0 };
      f.spec = spec;
      f.state = 'pending';
      f.reason = null;
      this.#flows.set(id, f);
      if (!this.#active()) this.#toHost(f, this.#error ?? 'no offload module registered');
      else this.#post('set', f);
      return { flow: this.#describe(f) };
    }
    const key = parseFlowKey(req['flow'], this.#ports());
    const id = flowId(key);
    const f = this.#flows.get(id);
    if (!f) throw new ZiuError('ERR_ZIU_FLOW', `flow del: no flow ${id}`);
    this.#pin('unpin', f.spec);
    if (f.state === 'host' || !this.#active()) {
      this.#flows.delete(id);
      return { deleted: id };
    }
    f.state = 'deleting';
    f.delTries = 0;
    if (!this.#post('del', f)) {
      f.state = 'stuck';
      f.reason = 'the delete could not be queued: the NIC may still forward it until the next reconcile';
    }
    return { deleting: id };
  }

  #describe(f: HostFlow): Record<string, unknown> {
    return { ...f.spec, ...(f.spec.forward === null ? { drop: true } : {}), state: f.state, reason: f.reason };
  }

  /** The host's flows with what the module did with each, and the module's own counters for it. */
  flows(): Array<Record<string, unknown>> {
    const st = this.#status();
    return [...this.#flows.values()].map((f) => {
      const key = this.#key(f.spec);
      const m = key && st ? st.flows.find((x) => sameKey(x.key, key)) : undefined;
      return { ...this.#describe(f), offloaded: m ? { packets: m.packets, bytes: m.bytes } : null };
    });
  }

  #status(): DpOffloadStatus | null {
    if (!this.#native) return null;
    const r = native.dpOffloadStatus(this.#engine.nativeHandle);
    return typeof r === 'number' ? null : r;
  }

  /** For the datapath's status: registration, its errors, the queue, per-op counters, flows. */
  status(): Record<string, unknown> {
    const st = this.#status();
    return {
      module: this.spec.module,
      nic: this.spec.nic,
      registration: this.#state,
      adopted: this.#adopted,
      error: this.#error,
      softResets: this.#softResets,
      reconcile: this.#reconcile,
      queue: st ? { queued: st.queued, full: st.queueFull, eventsLost: st.eventsLost } : null,
      ops: st?.ops ?? null,
      statsRounds: st?.statsRounds ?? 0,
      flows: this.flows(),
    };
  }

  /** The representors as ports in the datapath's status: host counters plus what the NIC forwarded for them itself. */
  portStatus(host: PortStats[]): Array<{ kind: string; name: string; counters: PortStats | null; [more: string]: unknown }> {
    const st = this.#status();
    return this.reps.map((r) => {
      const h = host.find((s) => s.port === r.enginePort) ?? null;
      const o = st?.ports.find((p) => p.port === r.enginePort) ?? null;
      const counters =
        h === null
          ? null
          : { ...h, rxPackets: h.rxPackets + (o?.rxPackets ?? 0), rxBytes: h.rxBytes + (o?.rxBytes ?? 0), txPackets: h.txPackets + (o?.txPackets ?? 0), txBytes: h.txBytes + (o?.txBytes ?? 0) };
      return { kind: 'representor', name: r.name, vf: r.vf, state: r.down ? 'down' : 'up', lastError: r.down, counters, host: h, offloaded: o };
    });
  }

  /** The engine gave up on a representor (the NIC went away): it is down. */
  fault(port: number, reason: string): boolean {
    const r = this.reps.find((x) => x.enginePort === port);
    if (!r) return false;
    r.down = `representor of VF ${r.vf} ${reason.replace(/^its device /, '')}`;
    this.#log.error({ port: r.name }, r.down);
    return true;
  }

  /** Read the module's counters now (else within ~100 ms). */
  refresh(): void {
    if (this.#status() !== null) native.dpOffloadRefresh(this.#engine.nativeHandle);
  }

  #wait(done: () => boolean, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const deadline = setTimeout(resolve, ms);
      const check = (): void => {
        if (done()) {
          clearTimeout(deadline);
          resolve();
        } else this.#waiters.push(check);
      };
      check();
    });
  }

  // ---- the handover (docs/offload.md, "Upgrade") ----

  /**
   * New side, at commit: take over the module's registration without a soft
   * reset (its flows keep forwarding; nothing is wiped or set twice), then
   * reconcile the NIC's table with the flow table we adopted: its learnt
   * flows and the flow op's pinned ones. The predecessor is not asked: the
   * table is its final flow state (it changes nothing from export on).
   */
  async adopt(): Promise<void> {
    if (this.#state !== 'standby') return;
    const rc = native.dpOffloadClaim(this.#engine.nativeHandle, true, process.pid);
    if (rc < 0) return this.#fail(`adopting the NIC failed: ${errnoText(rc)}`);
    this.#state = 'registering';
    await this.#wait(() => this.#state !== 'registering', ADOPT_WAIT_MS);
    if ((this.#state as Registration) !== 'registered') return;
    await this.#reconcileWithTable();
  }

  /** The pinned flows of the adopted table become ours; the NIC is made to hold exactly the table's offloadable flows. */
  async #reconcileWithTable(): Promise<void> {
    const h = this.#engine.nativeHandle;
    const entries = native.dpFlowEntries(h);
    if (typeof entries === 'number') return this.#fail(`reading the adopted flow table failed: ${errnoText(entries)}`);
    const desired: Array<{ key: DpFlowKey; action: { kind: number; outPort: number }; cookie: bigint }> = [];
    for (const e of entries) {
      let cookie = 0n;
      if (e.pinned) {
        const spec = this.#tableSpec(e.key, e.action);
        if (spec === null) continue;
        const f: HostFlow = { spec, cookie: e.offloadable ? ++this.#cookie : 0n, state: e.offloadable ? 'pending' : 'host', reason: e.offloadable ? null : errnoText(-95), delTries: 0 };
        this.#flows.set(flowId(spec), f);
        cookie = f.cookie;
      }
      if (e.offloadable) desired.push({ key: e.key, action: e.action, cookie });
    }
    const before = this.#reconcile;
    const r = native.dpOffloadReconcile(h, desired);
    if (r < 0) {
      for (const f of this.#flows.values()) if (f.state === 'pending') this.#toHost(f, `reconcile not queued: ${errnoText(r)}`);
      return;
    }
    this.#log.info({ flows: desired.length, pinned: this.#flows.size }, 'reconciling the NIC with the flow table we adopted');
    await this.#wait(() => this.#reconcile !== before, ADOPT_WAIT_MS);
  }

  #tableSpec(key: DpFlowKey, action: { kind: number; outPort: number }): FlowSpec | null {
    const inName = this.#portName(key.inPort);
    const out = action.kind === native.DP_OFFLOAD_DROP ? null : this.#portName(action.outPort);
    if (inName === null || (action.kind !== native.DP_OFFLOAD_DROP && out === null)) return null;
    return { in: inName, forward: out, ipver: key.ipver, proto: key.proto, sport: key.sport, dport: key.dport, src: formatAddr(key.ipver, key.src), dst: formatAddr(key.ipver, key.dst) };
  }

  /** Old side, at commit: the successor programs the NIC now. Unregister; nothing is wiped. */
  release(): void {
    if (this.#state === 'none' || this.#state === 'released') return;
    this.#unregister();
    this.#state = 'released';
    this.#log.info('released the NIC to the successor: its flows stay');
  }

  #unregister(): void {
    if (this.#poll !== null) native.pollClose(this.#poll);
    this.#poll = null;
    if (this.#native) native.dpOffloadUnregister(this.#engine.nativeHandle);
    this.#native = false;
  }

  /** Stop: unregister (the NIC keeps its flows: a datapath restart is not a wipe), before the engine goes. */
  close(): void {
    if (this.#state !== 'none' && this.#state !== 'released') this.#unregister();
    this.#state = 'released';
    for (const f of this.#waiters.splice(0)) f();
  }

  /** After the engine is destroyed: our fds of the NIC. */
  closeFds(): void {
    closeFds([...this.reps.map((r) => r.fd), ...(this.#shmFd >= 0 ? [this.#shmFd] : [])]);
    this.#shmFd = -1;
  }
}

function sameKey(a: DpOffloadStatus['flows'][number]['key'], b: DpFlowKey): boolean {
  return a.inPort === b.inPort && a.ipver === b.ipver && a.proto === b.proto && a.sport === b.sport && a.dport === b.dport && Buffer.from(a.src).equals(Buffer.from(b.src)) && Buffer.from(a.dst).equals(Buffer.from(b.dst));
}

/** "fake=<path>" */
export function parseOffload(text: string): OffloadSpec {
  const eq = text.indexOf('=');
  const module = eq > 0 ? text.slice(0, eq) : text;
  const nic = eq > 0 ? text.slice(eq + 1) : '';
  if (!(OFFLOAD_MODULES as readonly string[]).includes(module) || nic === '') {
    throw new UsageError(`--offload '${text}': use <module>=<device>, module one of ${OFFLOAD_MODULES.join(', ')} (fake=<ziu-fakenic control socket>)`);
  }
  return { module: module as 'fake', nic };
}
