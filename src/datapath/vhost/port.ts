import { setTimeout as sleep } from 'node:timers/promises';
import { hasCode } from '../errors.js';
import type { Logger } from '../log.js';
import { native } from '../native/index.js';
import { ZiuError } from '../errors.js';
import { fdName, type RingExport, type VhostExport } from '../handover/state.js';
import { readFrames, type Frame, type Framer } from '../net/framing.js';
import { UnixListener, UnixSocket } from '../net/socket.js';
import {
  DecodeError,
  decodeRequest,
  encodeReply,
  hasOwnReply,
  ProtocolFeature,
  requestFds,
  VHOST_USER_FRAME,
  VirtioFeature,
  type Request,
  type RequestOf,
} from '../vhost/index.js';
import type { Engine, EngineRegion } from './engine.js';

/** One queue pair: ring 0 carries frames to the guest (RX), ring 1 from it (TX). */
export const RINGS = 2;

/**
 * What we offer, and nothing we do not implement: VERSION_1, protocol
 * features (bit 30), MRG_RXBUF (we always fill one chain per frame and say so
 * in num_buffers = 1). No EVENT_IDX, IN_ORDER, packed rings or dirty logging.
 */
export const OFFERED_FEATURES = VirtioFeature.VERSION_1 | VirtioFeature.F_PROTOCOL_FEATURES | VirtioFeature.MRG_RXBUF;
export const OFFERED_PROTOCOL_FEATURES = ProtocolFeature.MQ | ProtocolFeature.REPLY_ACK | ProtocolFeature.STATUS;

export type PortMode = 'server' | 'client';

/** The vhost-user state of one ring, as received from the frontend. */
export interface RingState {
  num: number | null;
  addr: { desc: bigint; avail: bigint; used: bigint } | null;
  /** SET_VRING_BASE, or where GET_VRING_BASE stopped it */
  base: number;
  kickFd: number | null;
  /** the frontend said "no fd" for kick: the engine polls the ring */
  kickNoFd: boolean;
  callFd: number | null;
  errFd: number | null;
  enabled: boolean;
  started: boolean;
}

export interface DeviceState {
  owner: boolean;
  features: bigint | null;
  protocolFeatures: bigint;
  status: number;
  mtu: number | null;
  regions: Array<EngineRegion>;
  rings: RingState[];
}

function freshRing(): RingState {
  return { num: null, addr: null, base: 0, kickFd: null, kickNoFd: false, callFd: null, errFd: null, enabled: false, started: false };
}

function freshDevice(): DeviceState {
  return { owner: false, features: null, protocolFeatures: 0n, status: 0, mtu: null, regions: [], rings: [freshRing(), freshRing()] };
}

/** Why a connection was closed: the frontend broke the protocol. */
class ProtocolViolation extends Error {}

export interface VhostPortOptions {
  name: string;
  path: string;
  mode: PortMode;
  engine: Engine;
  log: Logger;
}

/**
 * A vhost-user backend port: one frontend connection at a time, its device
 * state, and the engine port that forwards its frames.
 *
 * server mode: we listen on `path` and serve one frontend at a time; a second
 * connection is refused while one is up. client mode: we connect to a
 * frontend listening on `path` (virtio-user server=1, ziu probe --server),
 * and connect again whenever the connection drops.
 *
 * Anything a frontend gets wrong closes that connection with a log line
 * naming the port and the reason; the datapath and the other ports go on.
 */
export class VhostPort {
  readonly name: string;
  readonly path: string;
  readonly mode: PortMode;
  readonly enginePort: number;
  #engine: Engine;
  #log: Logger;
  #listener: UnixListener | null = null;
  #conn: UnixSocket | null = null;
  #device: DeviceState = freshDevice();
  #closed = false;
  #framer: Framer | null = null;
  #connections = 0;
  #disconnects = 0;
  #lastError: string | null = null;
  /** bumped on every change to the device or connection: tells a handover what changed since export */
  #generation = 0;
  /** frozen for a handover: neither the socket nor the listener is read */
  #frozen = false;
  /** handed over: the frontend is someone else's; close() must not touch it */
  #detached = false;
  /** adopted in a handover, not yet activated: the fds to take over on activate() */
  #adopted: { listenerFd: number | null; connFd: number | null; pending: { data: Buffer; fds: number[] } | null } | null = null;

  constructor(opts: VhostPortOptions) {
    this.name = opts.name;
    this.path = opts.path;
    this.mode = opts.mode;
    this.#engine = opts.engine;
    this.#log = opts.log.child({ port: opts.name });
    this.enginePort = this.#engine.addPort('vhost');
  }

  /** Listen (server) or connect (client). Resolves once listening, or once the first connection is up (client). */
  async open(options: { connectTimeoutMs?: number } = {}): Promise<void> {
    if (this.mode === 'server') {
      this.#listener = await UnixListener.listen(this.path, { mode: 0o600 });
      this.#listener.on('connection', (sock) => this.#accept(sock));
      this.#listener.on('error', (err) => this.#log.error({ err }, 'vhost-user listener error'));
      this.#log.info({ path: this.path }, 'listening for a vhost-user frontend');
      return;
    }
    await this.#connect(options.connectTimeoutMs ?? 10_000);
  }

  get connected(): boolean {
    return this.#conn !== null;
  }

  get device(): Readonly<DeviceState> {
    return this.#device;
  }

  status(): Record<string, unknown> {
    const d = this.#device;
    return {
      name: this.name,
      path: this.path,
      mode: this.mode,
      connected: this.connected,
      connections: this.#connections,
      disconnects: this.#disconnects,
      lastError: this.#lastError,
      features: d.features === null ? null : `0x${d.features.toString(16)}`,
      protocolFeatures: `0x${d.protocolFeatures.toString(16)}`,
      regions: d.regions.length,
      rings: this.#engine.rings(this.enginePort).map((r, i) => ({ ...r, kick: d.rings[i]?.kickNoFd ? 'poll' : d.rings[i]?.kickFd === null ? 'none' : 'eventfd' })),
    };
  }

  async #connect(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 10; ; delay = Math.min(delay * 2, 500)) {
      try {
        const sock = await UnixSocket.connect(this.path);
        this.#accept(sock);
        return;
      } catch (err) {
        if (this.#closed) return;
        if (!(hasCode(err, 'ENOENT') || hasCode(err, 'ECONNREFUSED')) || Date.now() > deadline) throw err;
        await sleep(delay);
      }
    }
  }

  #accept(sock: UnixSocket): void {
    if (this.#conn !== null || this.#closed) {
      this.#log.warn('refusing a second vhost-user connection while one is up');
      sock.close();
      return;
    }
    this.#conn = sock;
    this.#connections++;
    this.#generation++;
    this.#log.info({ connection: this.#connections }, 'vhost-user frontend connected');
    this.#read(sock);
  }

  #read(sock: UnixSocket, initial?: { data: Buffer; fds: number[] }): void {
    // Any bytes at all change what a handover must carry (a partial message is state too).
    sock.on('data', () => this.#generation++);
    this.#framer = readFrames(
      sock,
      VHOST_USER_FRAME,
      {
        onFrame: (frame) => this.#onFrame(sock, frame),
        onClose: (err) => this.#onDisconnect(sock, err),
      },
      initial ? { initial } : {},
    );
    if (this.#frozen) sock.pause();
  }

  #onFrame(sock: UnixSocket, frame: Frame): void {
    if (this.#conn !== sock) {
      for (const fd of frame.fds) native.close(fd);
      return;
    }
    this.#generation++;
    const req = decodeRequest(frame, { maxQueues: RINGS });
    if (req instanceof DecodeError) {
      for (const fd of req.fds) native.close(fd);
      this.#drop(sock, req.message);
      return;
    }
    try {
      const reply = this.#handle(req);
      if (reply !== null) void sock.send(reply).catch((err) => this.#log.warn({ err }, 'could not send a vhost-user reply'));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof ProtocolViolation || !req.needReply || hasOwnReply(req.type)) {
        this.#drop(sock, `vhost-user ${req.type}: ${message}`);
        return;
      }
      // REPLY_ACK: tell the frontend it failed, keep the connection.
      this.#log.warn({ request: req.type, err: message }, 'vhost-user request failed');
      this.#lastError = `${req.type}: ${message}`;
      void sock.send(encodeReply(req, { ok: false })).catch(() => {});
    }
  }

  #drop(sock: UnixSocket, reason: string): void {
    this.#lastError = reason;
    this.#log.warn({ reason }, 'closing the vhost-user connection');
    sock.close();
  }

  #onDisconnect(sock: UnixSocket, err?: Error): void {
    if (this.#conn !== sock) return;
    this.#conn = null;
    this.#framer = null;
    this.#disconnects++;
    this.#generation++;
    if (err) this.#lastError = err.message;
    this.#log.info({ err: err?.message }, 'vhost-user frontend disconnected');
    this.#reset();
    if (this.mode === 'client' && !this.#closed && !this.#frozen) {
      void this.#connect(Number.POSITIVE_INFINITY).catch((e) => this.#log.error({ err: e }, 'reconnecting to the frontend failed'));
    }
  }

  /** Stop every ring and forget the device: the next frontend starts from scratch. */
  #reset(): void {
    const d = this.#device;
    for (const [q, r] of d.rings.entries()) {
      if (r.started) this.#engine.stop(this.enginePort, q);
      this.#engine.setKick(this.enginePort, q, -1);
      this.#engine.setCall(this.enginePort, q, -1);
      this.#engine.setEnabled(this.enginePort, q, false);
      for (const fd of [r.kickFd, r.callFd, r.errFd]) if (fd !== null) native.close(fd);
    }
    this.#engine.setMemTable(this.enginePort, []);
    for (const reg of d.regions) native.close(reg.fd);
    this.#device = freshDevice();
  }

  /** Handle one request; returns the reply to send, or null. Throws to refuse it. */
  #handle(req: Request): Buffer | null {
    const d = this.#device;
    const ack = (): Buffer | null =>
      req.needReply && !hasOwnReply(req.type) && (d.protocolFeatures & ProtocolFeature.REPLY_ACK) !== 0n
        ? encodeReply(req, { ok: true })
        : null;
    switch (req.type) {
      case 'GET_FEATURES':
        return encodeReply(req, { features: OFFERED_FEATURES });
      case 'SET_FEATURES': {
        const extra = req.features & ~OFFERED_FEATURES;
        if (extra !== 0n) throw new ProtocolViolation(`features 0x${req.features.toString(16)} include 0x${extra.toString(16)}, never offered`);
        d.features = req.features;
        this.#applyFeatures(req.features);
        // Without protocol features there is no SET_VRING_ENABLE: rings are enabled now.
        if ((req.features & VirtioFeature.F_PROTOCOL_FEATURES) === 0n) {
          for (const [q, r] of d.rings.entries()) {
            r.enabled = true;
            this.#engine.setEnabled(this.enginePort, q, true);
          }
        }
        return ack();
      }
      case 'GET_PROTOCOL_FEATURES':
        return encodeReply(req, { features: OFFERED_PROTOCOL_FEATURES });
      case 'SET_PROTOCOL_FEATURES': {
        const extra = req.features & ~OFFERED_PROTOCOL_FEATURES;
        if (extra !== 0n) throw new ProtocolViolation(`protocol features include 0x${extra.toString(16)}, never offered`);
        d.protocolFeatures = req.features;
        return ack();
      }
      case 'GET_QUEUE_NUM':
        return encodeReply(req, { queues: 1 });
      case 'SET_OWNER':
        d.owner = true;
        return ack();
      case 'RESET_OWNER':
        // Deprecated; QEMU sends it on stop. Stop the rings, keep the connection.
        for (const [q, r] of d.rings.entries()) this.#stopRing(q, r);
        return ack();
      case 'SET_MEM_TABLE':
        this.#setMemTable(req);
        return ack();
      case 'SET_VRING_NUM':
        d.rings[req.index]!.num = req.num;
        return ack();
      case 'SET_VRING_ADDR':
        d.rings[req.index]!.addr = { desc: req.desc, avail: req.avail, used: req.used };
        return ack();
      case 'SET_VRING_BASE':
        d.rings[req.index]!.base = req.num & 0xffff;
        return ack();
      case 'GET_VRING_BASE': {
        const r = d.rings[req.index]!;
        this.#stopRing(req.index, r);
        return encodeReply(req, { num: r.base });
      }
      case 'SET_VRING_KICK':
        this.#setKick(req);
        return ack();
      case 'SET_VRING_CALL': {
        const r = d.rings[req.index]!;
        if (r.callFd !== null) native.close(r.callFd);
        r.callFd = req.fd;
        this.#engine.setCall(this.enginePort, req.index, req.fd ?? -1);
        return ack();
      }
      case 'SET_VRING_ERR': {
        const r = d.rings[req.index]!;
        if (r.errFd !== null) native.close(r.errFd);
        r.errFd = req.fd;
        return ack();
      }
      case 'SET_VRING_ENABLE': {
        d.rings[req.index]!.enabled = req.enable;
        this.#engine.setEnabled(this.enginePort, req.index, req.enable);
        return ack();
      }
      case 'SEND_RARP':
        // A migrated guest announcing itself; the bridge learns from its traffic anyway.
        return ack();
      case 'NET_SET_MTU':
        d.mtu = req.mtu;
        return ack();
      case 'SET_STATUS':
        d.status = req.status;
        return ack();
      case 'GET_STATUS':
        return encodeReply(req, { status: d.status });
      case 'GET_CONFIG':
        // CONFIG is not offered: an empty payload reports failure.
        return encodeReply(req, { data: null });
      case 'SET_CONFIG':
      case 'SET_LOG_BASE':
      case 'SET_LOG_FD':
      case 'GET_MAX_MEM_SLOTS':
      case 'ADD_MEM_REG':
      case 'REM_MEM_REG':
        for (const fd of requestFds(req)) native.close(fd);
        throw new ProtocolViolation('needs a protocol feature this backend never offered');
    }
  }

  #applyFeatures(features: bigint): void {
    const modern = (features & (VirtioFeature.VERSION_1 | VirtioFeature.MRG_RXBUF)) !== 0n;
    this.#engine.setFeatures(this.enginePort, modern ? 12 : 10, (features & VirtioFeature.MRG_RXBUF) !== 0n);
  }

  #setMemTable(req: RequestOf<'SET_MEM_TABLE'>): void {
    const d = this.#device;
    // The engine re-translates ring addresses against the new table: stop the
    // started rings first (completing what they consumed), restart them after.
    const restart: number[] = [];
    for (const [q, r] of d.rings.entries()) {
      if (r.started) {
        this.#stopRing(q, r);
        restart.push(q);
      }
    }
    const regions = req.regions.map((r) => ({ gpa: r.guestPhysAddr, size: r.memorySize, uaddr: r.userspaceAddr, offset: r.mmapOffset, fd: r.fd }));
    try {
      this.#engine.setMemTable(this.enginePort, regions);
    } catch (err) {
      for (const r of regions) native.close(r.fd);
      throw err;
    }
    for (const old of d.regions) native.close(old.fd);
    d.regions = regions;
    for (const q of restart) this.#startRing(q, d.rings[q]!);
  }

  #setKick(req: RequestOf<'SET_VRING_KICK'>): void {
    const r = this.#device.rings[req.index]!;
    if (r.kickFd !== null) native.close(r.kickFd);
    r.kickFd = req.fd;
    r.kickNoFd = req.fd === null;
    this.#engine.setKick(this.enginePort, req.index, req.fd ?? -1);
    // A ring starts on kick (VHOST-USER.md): its size and addresses must be known by now.
    if (r.started) this.#stopRing(req.index, r);
    this.#startRing(req.index, r);
  }

  #startRing(q: number, r: RingState): void {
    if (r.num === null || r.addr === null) {
      throw new ProtocolViolation(`ring ${q} kicked before SET_VRING_NUM and SET_VRING_ADDR`);
    }
    if (this.#device.regions.length === 0) throw new ProtocolViolation(`ring ${q} kicked before SET_MEM_TABLE`);
    this.#engine.setVring(this.enginePort, q, { num: r.num, ...r.addr, lastAvail: r.base });
    this.#engine.start(this.enginePort, q);
    // dpStart takes last_avail from used->idx: a frontend reconnecting to a new
    // backend sends base 0 (virtio-user), and once every consumed chain is
    // completed the two are equal.
    const now = this.#engine.rings(this.enginePort)[q]?.lastAvail;
    if (now !== undefined && now !== r.base) {
      this.#log.info({ ring: q, base: r.base, lastAvail: now }, 'ring base resynced to used->idx');
      r.base = now;
    }
    r.started = true;
  }

  #stopRing(q: number, r: RingState): void {
    if (!r.started) return;
    r.base = this.#engine.stop(this.enginePort, q);
    r.started = false;
  }

  // ---- handover (docs/handover-protocol.md) ----

  get generation(): number {
    return this.#generation;
  }

  /**
   * The device as a handover carries it, and its fds by name. The fds stay
   * ours (sending them duplicates them): this port goes on forwarding.
   */
  exportState(): { device: VhostExport; fds: Map<string, number> } {
    const d = this.#device;
    const fds = new Map<string, number>();
    if (this.#listener) fds.set(fdName(this.name, 'listener'), this.#listener.fd);
    if (this.#conn) fds.set(fdName(this.name, 'socket'), this.#conn.fd);
    d.regions.forEach((r, i) => fds.set(fdName(this.name, 'region', i), r.fd));
    const rings = d.rings.map((r, q): RingExport => {
      if (r.kickFd !== null) fds.set(fdName(this.name, 'kick', q), r.kickFd);
      if (r.callFd !== null) fds.set(fdName(this.name, 'call', q), r.callFd);
      if (r.errFd !== null) fds.set(fdName(this.name, 'err', q), r.errFd);
      return {
        q: q as 0 | 1,
        num: r.num,
        addr: r.addr,
        base: r.started ? (this.#engine.rings(this.enginePort)[q]?.lastAvail ?? r.base) : r.base,
        kick: r.kickFd !== null ? 'fd' : r.kickNoFd ? 'poll' : 'none',
        call: r.callFd !== null,
        err: r.errFd !== null,
        enabled: r.enabled,
        started: r.started,
      };
    });
    let pending: VhostExport['pending'] = null;
    const p = this.#conn ? this.#framer?.pending() : undefined;
    if (p && (p.data.length > 0 || p.fds.length > 0)) {
      p.fds.forEach((fd, i) => fds.set(fdName(this.name, 'pending', i), fd));
      pending = { data: p.data.toString('base64'), fds: p.fds.length };
    }
    return {
      device: {
        kind: 'vhost-user',
        name: this.name,
        path: this.path,
        mode: this.mode,
        listening: this.#listener !== null,
        connected: this.#conn !== null,
        generation: this.#generation,
        owner: d.owner,
        features: d.features,
        protocolFeatures: d.protocolFeatures,
        status: d.status,
        mtu: d.mtu,
        regions: d.regions.map(({ gpa, size, uaddr, offset }) => ({ gpa, size, uaddr, offset })),
        rings,
        pending,
      },
      fds,
    };
  }

  /** Stop reading the socket and accepting: messages wait in the kernel for whoever runs the port next. */
  freeze(): void {
    this.#frozen = true;
    this.#conn?.pause();
    this.#listener?.pause();
  }

  /** Read and accept again (a handover was undone), or reconnect if the frontend went away meanwhile. */
  thaw(): void {
    if (!this.#frozen) return;
    this.#frozen = false;
    this.#detached = false;
    this.#listener?.resume();
    if (this.#conn) this.#conn.resume();
    else if (this.mode === 'client' && !this.#closed) {
      void this.#connect(Number.POSITIVE_INFINITY).catch((e) => this.#log.error({ err: e }, 'reconnecting to the frontend failed'));
    }
  }

  /** The port now belongs to a successor: on close, let go of everything without touching the frontend. */
  detach(): void {
    this.#detached = true;
  }

  /** Commit of a handover: the port is ours alone now (closing it removes the socket path again). */
  claim(): void {
    this.#detached = false;
  }

  /**
   * Build a port from a handover export: the engine gets the memory table,
   * the rings and their fds (the engine is frozen, so nothing is polled and
   * guest memory is not written); the sockets are taken on by activate().
   * Every fd named for the device is taken from `fds` and owned from here on.
   */
  static adopt(opts: VhostPortOptions, x: VhostExport, fds: Map<string, number>): VhostPort {
    const take = (name: string): number | null => {
      const fd = fds.get(name);
      if (fd === undefined) return null;
      fds.delete(name);
      return fd;
    };
    const need = (name: string): number => {
      const fd = take(name);
      if (fd === null) throw new ZiuError('ERR_ZIU_IMPORT', `device '${x.name}': fd '${name}' is missing from the handover`);
      return fd;
    };
    const port = new VhostPort(opts);
    const d = port.#device;
    try {
      port.#adopted = {
        listenerFd: x.listening ? need(fdName(x.name, 'listener')) : null,
        connFd: x.connected ? need(fdName(x.name, 'socket')) : null,
        pending: null,
      };
      if (x.pending) {
        const pfds: number[] = [];
        for (let i = 0; i < x.pending.fds; i++) pfds.push(need(fdName(x.name, 'pending', i)));
        port.#adopted.pending = { data: Buffer.from(x.pending.data, 'base64'), fds: pfds };
      }
      d.owner = x.owner;
      d.features = x.features;
      d.protocolFeatures = x.protocolFeatures;
      d.status = x.status;
      d.mtu = x.mtu;
      d.regions = x.regions.map((r, i) => ({ ...r, fd: need(fdName(x.name, 'region', i)) }));
      x.rings.forEach((rx, q) => {
        const r = d.rings[q]!;
        r.num = rx.num;
        r.addr = rx.addr;
        r.base = rx.base;
        r.kickFd = rx.kick === 'fd' ? need(fdName(x.name, 'kick', q)) : null;
        r.kickNoFd = rx.kick === 'poll';
        r.callFd = rx.call ? need(fdName(x.name, 'call', q)) : null;
        r.errFd = rx.err ? need(fdName(x.name, 'err', q)) : null;
      });
      port.#frozen = true;
      // The predecessor still holds the same sockets until commit.
      port.#detached = true;
      port.#generation = x.generation;
      const e = port.#engine;
      if (d.features !== null) port.#applyFeatures(d.features);
      if (d.regions.length > 0) e.setMemTable(port.enginePort, d.regions);
      x.rings.forEach((rx, q) => {
        const r = d.rings[q]!;
        if (r.kickFd !== null || r.kickNoFd) e.setKick(port.enginePort, q, r.kickFd ?? -1);
        if (r.callFd !== null) e.setCall(port.enginePort, q, r.callFd);
        if (rx.enabled) {
          r.enabled = true;
          e.setEnabled(port.enginePort, q, true);
        }
        if (rx.started) {
          if (r.num === null || r.addr === null) throw new ZiuError('ERR_ZIU_IMPORT', `device '${x.name}' ring ${q}: started without size or addresses`);
          e.setVring(port.enginePort, q, { num: r.num, ...r.addr, lastAvail: r.base });
          e.start(port.enginePort, q);
          r.started = true;
        }
      });
    } catch (err) {
      port.discard();
      throw err;
    }
    return port;
  }

  /** After the engine thawed: take the socket and the listener and read them (pending bytes first). */
  activate(): void {
    const a = this.#adopted;
    this.#frozen = false;
    if (!a) return;
    this.#adopted = null;
    if (a.listenerFd !== null) {
      this.#listener = UnixListener.adopt(a.listenerFd, this.path, 'stream');
      this.#listener.on('connection', (sock) => this.#accept(sock));
      this.#listener.on('error', (err) => this.#log.error({ err }, 'vhost-user listener error'));
    }
    if (a.connFd !== null) {
      const sock = UnixSocket.adopt(a.connFd);
      this.#conn = sock;
      this.#read(sock, a.pending ?? undefined);
    } else if (this.mode === 'client') {
      void this.#connect(Number.POSITIVE_INFINITY).catch((e) => this.#log.error({ err: e }, 'reconnecting to the frontend failed'));
    }
  }

  /** Signal every call fd once: the guest looks at what was completed across the gap. */
  signalCalls(): void {
    for (const r of this.#device.rings) if (r.callFd !== null) native.eventfdWrite(r.callFd, 1n);
  }

  /** Drop an adopted port without touching the frontend (a handover aborted): close our copies only. */
  discard(): void {
    this.#detached = true;
    const a = this.#adopted;
    this.#adopted = null;
    if (a) {
      for (const fd of [a.listenerFd, a.connFd, ...(a.pending?.fds ?? [])]) if (fd !== null) native.close(fd);
    }
    this.close();
  }

  /**
   * Close the connection and the listener, stop the rings; the engine port
   * goes too. A detached port lets go of its fds without a word to the
   * frontend and leaves the socket path to its successor.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener?.close({ keepPath: this.#detached });
    this.#listener = null;
    if (this.#conn) {
      const c = this.#conn;
      this.#conn = null;
      this.#framer?.discard();
      if (this.#detached) native.close(c.release());
      else c.close();
    }
    this.#reset();
    this.#engine.removePort(this.enginePort);
  }
}
