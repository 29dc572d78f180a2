/**
 * One vhost-user device of the probe: its guest memory (a memfd), its kick and
 * call eventfds, and its connection to the back-end.
 *
 * Client mode connects (retrying until a deadline) and, like virtio-user,
 * stays down if the back-end goes away. Server mode listens and survives a
 * back-end restart: rings and memory stay, the loops keep running, and the
 * next back-end to connect gets the whole sequence again with each ring's
 * base resynced to its used->idx (as QEMU does).
 */
import { ZiuError, hasCode } from '../errors.js';
import { logger, type Logger } from '../log.js';
import { check, native } from '../native/index.js';
import type { ProbeHandle, ProbePortLayout } from '../native/probe-native.js';
import { UnixListener, UnixSocket } from '../net/socket.js';
import { formatMac, type Mac } from './addr.js';
import { FrontendConnection } from './connection.js';
import { negotiate, type Negotiated } from './frontend.js';
import { closeFds } from '../native/fds.js';

export type PortMode = 'client' | 'server';

export interface PortOptions {
  /** 'tx', 'rx', 'txrx' or 'echo': for logs and errors */
  name: string;
  path: string;
  mode: PortMode;
  mac: Mac;
  connectTimeoutMs: number;
  replyTimeoutMs: number;
}

const RETRY_CONNECT_MS = 50;

export class ProbePort {
  readonly name: string;
  readonly path: string;
  readonly mode: PortMode;
  readonly mac: Mac;
  readonly layout: ProbePortLayout;
  readonly #h: ProbeHandle;
  readonly #opts: PortOptions;
  readonly #log: Logger;
  readonly #memFd: number;
  readonly #kick: number[];
  readonly #call: number[];
  readonly queues: number;
  #listener: UnixListener | null = null;
  #conn: FrontendConnection | null = null;
  #closing = false;
  #fdsOpen = true;
  #everUp = false;
  #firstUp: { resolve: () => void; reject: (e: Error) => void } | null = null;
  connected = false;
  reconnects = 0;
  disconnects = 0;
  negotiated: Negotiated | null = null;

  private constructor(h: ProbeHandle, opts: PortOptions, memFd: number, kick: number[], call: number[], layout: ProbePortLayout) {
    this.#h = h;
    this.#opts = opts;
    this.name = opts.name;
    this.path = opts.path;
    this.mode = opts.mode;
    this.mac = opts.mac;
    this.#memFd = memFd;
    this.#kick = kick;
    this.#call = call;
    this.layout = layout;
    this.queues = layout.rings.length / 2;
    this.#log = logger('probe', { port: opts.name, path: opts.path, mode: opts.mode });
  }

  /** Allocate the port's memory and eventfds and hand them to the C loops (which lay out the rings). */
  static create(h: ProbeHandle, ringSize: number, queues: number, opts: PortOptions): ProbePort {
    const made: number[] = [];
    try {
      const size = check(native.probeMemSize(ringSize, queues), 'probeMemSize');
      const memFd = check(native.memfdCreate(`ziu-probe-${opts.name}`, 0), 'memfd_create');
      made.push(memFd);
      check(native.ftruncate(memFd, size), 'ftruncate', { fd: memFd });
      check(native.fallocate(memFd, 0, 0, size), 'fallocate', { fd: memFd });
      const efd = (): number => {
        const fd = check(native.eventfd(0, false), 'eventfd');
        made.push(fd);
        return fd;
      };
      const kick = Array.from({ length: 2 * queues }, efd);
      const call = Array.from({ length: 2 * queues }, efd);
      const layout = check(native.probeAddPort(h, memFd, size, kick, call), 'probeAddPort', { fd: memFd });
      return new ProbePort(h, opts, memFd, kick, call, layout);
    } catch (err) {
      closeFds(made);
      throw err;
    }
  }

  /** Connect (client) or wait for the back-end (server), then negotiate; within connectTimeoutMs. */
  async open(): Promise<void> {
    const deadline = Date.now() + this.#opts.connectTimeoutMs;
    if (this.mode === 'server') {
      this.#listener = await UnixListener.listen(this.path);
      this.#listener.on('connection', (sock) => void this.#attach(sock));
      this.#listener.on('error', (err) => this.#log.error({ err }, 'listening socket failed'));
      this.#log.info('waiting for a vhost-user back-end to connect');
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#firstUp = null;
          reject(new ZiuError('ERR_ZIU_PROBE_CONNECT', `probe ${this.name} port: no back-end connected to '${this.path}' within ${this.#opts.connectTimeoutMs} ms`));
        }, Math.max(0, deadline - Date.now()));
        this.#firstUp = {
          resolve: () => (clearTimeout(timer), resolve()),
          reject: (e) => (clearTimeout(timer), reject(e)),
        };
      });
      return;
    }
    let sock: UnixSocket;
    for (;;) {
      try {
        sock = await UnixSocket.connect(this.path);
        break;
      } catch (err) {
        const retry = hasCode(err, 'ENOENT') || hasCode(err, 'ECONNREFUSED') || hasCode(err, 'EAGAIN');
        if (!retry || this.#closing) throw err;
        if (Date.now() + RETRY_CONNECT_MS > deadline) {
          throw new ZiuError('ERR_ZIU_PROBE_CONNECT', `probe ${this.name} port: cannot connect to '${this.path}' within ${this.#opts.connectTimeoutMs} ms: ${(err as Error).message}`, { cause: err });
        }
        await new Promise((r) => setTimeout(r, RETRY_CONNECT_MS));
      }
    }
    await new Promise<void>((resolve, reject) => {
      this.#firstUp = { resolve, reject };
      void this.#attach(sock);
    });
  }

  /** Run the whole sequence on a new connection. */
  async #attach(sock: UnixSocket): Promise<void> {
    if (this.#closing || this.#conn !== null) {
      this.#log.warn('refusing a second back-end connection while one is active');
      sock.close();
      return;
    }
    const conn = new FrontendConnection(sock, this.path, this.#opts.replyTimeoutMs);
    this.#conn = conn;
    conn.on('close', (err) => {
      if (this.#conn === conn) this.#conn = null;
      if (this.connected) {
        this.connected = false;
        this.disconnects++;
        if (!this.#closing) {
          const next = this.mode === 'server' ? 'waiting for the next back-end' : 'link down (client mode does not reconnect)';
          this.#log.warn({ err: err?.message }, `vhost-user back-end disconnected; ${next}`);
        }
      }
    });
    // A back-end that takes over resumes where the last one stopped: next avail = used->idx.
    const bases = this.layout.rings.map((_, r) => (this.#everUp ? check(native.probeRingState(this.#h, this.layout.port, r), 'probeRingState').usedIdx : 0));
    try {
      const n = await negotiate(conn, { layout: this.layout, memFd: this.#memFd, kickFds: this.#kick, callFds: this.#call, bases });
      if (conn.closed) throw new ZiuError('ERR_ZIU_PEER_CLOSED', `vhost-user '${this.path}': the back-end closed the connection during setup`);
      this.negotiated = n;
      this.connected = true;
      if (this.#everUp) this.reconnects++;
      this.#everUp = true;
      // Rings start when the back-end has the kick fd; a kick makes it look at once (spurious kicks are harmless).
      for (const fd of this.#kick) native.eventfdWrite(fd, 1n);
      this.#log.info({ features: `0x${n.features.toString(16)}`, protocolFeatures: n.protocolFeatures === null ? null : `0x${n.protocolFeatures.toString(16)}`, bases, mac: formatMac(this.mac), reconnects: this.reconnects }, 'vhost-user back-end connected');
      const up = this.#firstUp;
      this.#firstUp = null;
      up?.resolve();
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, 'vhost-user setup failed');
      conn.close(err as Error);
      const up = this.#firstUp;
      this.#firstUp = null;
      up?.reject(err as Error);
    }
  }

  /** Test hook: SET_VRING_ENABLE for one ring, as a driver that stops using a queue (acknowledged when REPLY_ACK was negotiated). */
  async setRingEnabled(index: number, enable: boolean): Promise<void> {
    if (this.#conn === null) throw new ZiuError('ERR_ZIU_PROBE_CONNECT', `probe ${this.name} port: not connected`);
    await this.#conn.request({ type: 'SET_VRING_ENABLE', needReply: this.negotiated?.replyAck ?? false, index, enable });
  }

  /** No more connections: close the listener (server) and the connection. */
  closeConnection(): void {
    this.#closing = true;
    this.#listener?.close();
    this.#listener = null;
    this.#conn?.close();
    this.#conn = null;
    this.connected = false;
    const up = this.#firstUp;
    this.#firstUp = null;
    up?.reject(new ZiuError('ERR_ZIU_PROBE_STOPPED', `probe ${this.name} port: stopped before a back-end connected`));
  }

  /** Close memory and eventfds; only after probeDestroy (the C loops borrow them). */
  releaseFds(): void {
    if (!this.#fdsOpen) return;
    this.#fdsOpen = false;
    closeFds([this.#memFd, ...this.#kick, ...this.#call]);
  }
}
