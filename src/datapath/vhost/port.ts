import type { Logger } from '../../log.js';
import type { VhostExport } from '../../handover/state.js';
import { closeFds, type NamedFds } from '../../native/fds.js';
import type { Frame } from '../../net/framing.js';
import { DecodeError, decodeRequest, encodeReply, hasOwnReply } from '../../vhost/index.js';
import type { Engine } from '../engine.js';
import { describeFault } from '../guest-memory.js';
import { VhostConnection, type PortMode } from './connection.js';
import { ProtocolViolation, RINGS, VhostDevice, type DeviceState } from './device.js';
import { adoptDevice, exportPort, takeConnectionFds } from './handover.js';

export type { PortMode } from './connection.js';
export { OFFERED_FEATURES, OFFERED_PROTOCOL_FEATURES, RINGS, type DeviceState, type RingState } from './device.js';

export interface VhostPortOptions {
  name: string;
  path: string;
  mode: PortMode;
  engine: Engine;
  log: Logger;
}

/**
 * A vhost-user backend port: a connection (bytes and fds, src/datapath/vhost/
 * connection.ts), a device that handles the frontend's requests and programs
 * the engine port that forwards its frames (device.ts), and its part in a
 * handover (handover.ts).
 *
 * Anything a frontend gets wrong closes that connection with a log line
 * naming the port and the reason; the datapath and the other ports go on.
 */
export class VhostPort {
  readonly name: string;
  readonly path: string;
  readonly mode: PortMode;
  #engine: Engine;
  #log: Logger;
  #conn: VhostConnection;
  #dev: VhostDevice;
  #closed = false;
  #lastError: string | null = null;
  /** bumped on every change to the device or connection: tells a handover what changed since export */
  #generation = 0;

  constructor(opts: VhostPortOptions) {
    this.name = opts.name;
    this.path = opts.path;
    this.mode = opts.mode;
    this.#engine = opts.engine;
    this.#log = opts.log.child({ port: opts.name });
    this.#dev = new VhostDevice(this.#engine, this.name, (ring, base, lastAvail) => this.#log.info({ ring, base, lastAvail }, 'ring base resynced to used->idx'));
    this.#conn = new VhostConnection(this.path, this.mode, this.#log, {
      frame: (frame, reply, drop) => this.#onFrame(frame, reply, drop),
      changed: () => this.#generation++,
      disconnected: (err) => {
        if (err) this.#lastError = err.message;
        this.#dev.reset();
      },
    });
    // The engine already stopped the rings; the frontend loses its connection, as for a bad message.
    this.#engine.onMemFault(this.#dev.enginePort, (f) => {
      const reason = describeFault(f, this.#dev.state.regions[f.region]);
      this.#lastError = reason;
      this.#log.error({ region: f.region, code: f.code, offset: `0x${f.offset.toString(16)}` }, reason);
      this.#conn.drop(reason);
    });
  }

  get enginePort(): number {
    return this.#dev.enginePort;
  }

  /** Listen (server) or connect (client). Resolves once listening, or once the first connection is up (client). */
  open(options: { connectTimeoutMs?: number } = {}): Promise<void> {
    return this.#conn.open(options);
  }

  get connected(): boolean {
    return this.#conn.connected;
  }

  get device(): Readonly<DeviceState> {
    return this.#dev.state;
  }

  status(): { name: string; path: string; mode: PortMode; connected: boolean; connections: number; disconnects: number; lastError: string | null; [more: string]: unknown } {
    const d = this.#dev.state;
    return {
      name: this.name,
      path: this.path,
      mode: this.mode,
      connected: this.connected,
      connections: this.#conn.connections,
      disconnects: this.#conn.disconnects,
      lastError: this.#lastError,
      features: d.features === null ? null : `0x${d.features.toString(16)}`,
      protocolFeatures: `0x${d.protocolFeatures.toString(16)}`,
      regions: d.regions.length,
      rings: this.#engine.rings(this.enginePort).map((r, i) => ({ ...r, kick: d.rings[i]?.kickNoFd ? 'poll' : d.rings[i]?.kickFd === null ? 'none' : 'eventfd' })),
    };
  }

  #onFrame(frame: Frame, reply: (msg: Buffer) => void, drop: (reason: string) => void): void {
    this.#generation++;
    const dropFor = (reason: string): void => {
      this.#lastError = reason;
      drop(reason);
    };
    const req = decodeRequest(frame, { maxQueues: RINGS });
    if (req instanceof DecodeError) {
      closeFds(req.fds);
      dropFor(req.message);
      return;
    }
    try {
      const out = this.#dev.handle(req);
      if (out !== null) reply(out);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof ProtocolViolation || !req.needReply || hasOwnReply(req.type)) {
        dropFor(`vhost-user ${req.type}: ${message}`);
        return;
      }
      // REPLY_ACK: tell the frontend it failed, keep the connection.
      this.#log.warn({ request: req.type, err: message }, 'vhost-user request failed');
      this.#lastError = `${req.type}: ${message}`;
      reply(encodeReply(req, { ok: false }));
    }
  }

  // ---- handover (docs/handover-protocol.md) ----

  get generation(): number {
    return this.#generation;
  }

  /** The device as a handover carries it, and its fds by name (borrowed: this port goes on forwarding). */
  exportState(): { device: VhostExport; fds: NamedFds } {
    return exportPort(this, this.#conn, this.#dev, this.#engine);
  }

  /** Stop reading the socket and accepting: messages wait in the kernel for whoever runs the port next. */
  freeze(): void {
    this.#conn.freeze();
  }

  /** Read and accept again (a handover was undone), or reconnect if the frontend went away meanwhile. */
  thaw(): void {
    this.#conn.thaw();
  }

  /** The port now belongs to a successor: on close, let go of everything without touching the frontend. */
  detach(): void {
    this.#conn.detach();
  }

  /** Commit of a handover: the port is ours alone now (closing it removes the socket path again). */
  claim(): void {
    this.#conn.claim();
  }

  /** See VhostConnection.watchConsumption. */
  watchConsumption(fn: (() => void) | null): void {
    this.#conn.watchConsumption(fn);
  }

  /**
   * Start the device from scratch and close its frontend connection, while
   * frozen: a successor that is gone consumed messages from it, so what we
   * hold of it is stale. The frontend sets it up again when it reconnects.
   */
  reset(reason: string): void {
    this.#lastError = reason;
    this.#dev.reset();
    this.#conn.reset(reason);
  }

  /**
   * Build a port from a handover export: the device and the engine are set
   * up (nothing is served: the engine is frozen), the sockets are taken on by
   * activate(). Every fd named for the device is taken from `fds` and owned
   * from here on. `prefault`: fault in what the worker touches first (at
   * import, before the freeze); not inside a traffic gap (a device re-taken
   * at resume or thaw), where it would hold up every port's first pass.
   */
  static adopt(opts: VhostPortOptions, x: VhostExport, fds: NamedFds, o: { prefault: boolean }): VhostPort {
    const port = new VhostPort(opts);
    try {
      port.#conn.adopt(takeConnectionFds(x, fds));
      adoptDevice(port.#dev, x, fds, port.#engine, o);
      port.#generation = x.generation;
    } catch (err) {
      port.discard();
      throw err;
    }
    return port;
  }

  /** After the engine thawed: take the socket and the listener and read them (pending bytes first). */
  activate(): void {
    this.#conn.activate();
  }

  /** The engine gave up on this device (a ring broke the rules, a guest fd blocked): drop the frontend, say why. */
  fault(reason: string): void {
    this.#lastError = reason;
    if (this.connected) this.#conn.drop(reason);
    else this.#log.warn({ reason }, 'vhost-user device fault');
  }

  /** Signal every call fd once: the guest looks at what was completed across the gap. */
  signalCalls(): void {
    this.#dev.signalCalls();
  }

  /** Drop an adopted port without touching the frontend (a handover aborted): close our copies only. */
  discard(): void {
    this.#conn.discard();
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
    this.#engine.onMemFault(this.#dev.enginePort, null);
    this.#conn.close();
    this.#dev.close();
  }
}
