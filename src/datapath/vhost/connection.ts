import { setTimeout as sleep } from 'node:timers/promises';
import { hasCode } from '../../errors.js';
import type { Logger } from '../../log.js';
import { closeFds } from '../../native/fds.js';
import { readFrames, type Frame, type Framer } from '../../net/framing.js';
import { UnixListener, UnixSocket, type Chunk } from '../../net/socket.js';
import { VHOST_USER_FRAME } from '../../vhost/index.js';

export type PortMode = 'server' | 'client';

/** What a connection tells its port. */
export interface ConnectionEvents {
  /** a whole vhost-user message; `reply` and `drop` act on the connection it came on */
  frame(frame: Frame, reply: (msg: Buffer) => void, drop: (reason: string) => void): void;
  /** anything that changes what a handover must carry: bytes arrived, a frontend came or went */
  changed(): void;
  /** the frontend went away: the device starts from scratch */
  disconnected(err?: Error): void;
}

/** The sockets a handover hands over for one port, and the bytes of a message half read. */
export interface ConnectionFds {
  listenerFd: number | null;
  connFd: number | null;
  pending: Chunk | null;
}

/**
 * The bytes-and-fds side of a vhost-user port: one frontend connection at a
 * time, framed into messages.
 *
 * server mode: we listen on `path` and serve one frontend at a time; a second
 * connection is refused while one is up. client mode: we connect to a
 * frontend listening on `path` (virtio-user server=1, ziu probe --server),
 * and connect again whenever the connection drops.
 */
export class VhostConnection {
  readonly path: string;
  readonly mode: PortMode;
  #log: Logger;
  #events: ConnectionEvents;
  #listener: UnixListener | null = null;
  #conn: UnixSocket | null = null;
  #framer: Framer | null = null;
  #closed = false;
  /** frozen for a handover: neither the socket nor the listener is read */
  #frozen = false;
  /** handed over: the frontend is someone else's; close() must not touch it */
  #detached = false;
  /** adopted in a handover, not yet activated: the fds to take over on activate() */
  #adopted: ConnectionFds | null = null;
  /** told before anything is read or accepted (a new instance before commit: docs/handover-protocol.md, section 8) */
  #onConsume: (() => void) | null = null;
  connections = 0;
  disconnects = 0;

  constructor(path: string, mode: PortMode, log: Logger, events: ConnectionEvents) {
    this.path = path;
    this.mode = mode;
    this.#log = log;
    this.#events = events;
  }

  /** Listen (server) or connect (client). Resolves once listening, or once the first connection is up (client). */
  async open(options: { connectTimeoutMs?: number } = {}): Promise<void> {
    if (this.mode === 'server') {
      this.#listen(await UnixListener.listen(this.path, { mode: 0o600 }));
      this.#log.info({ path: this.path }, 'listening for a vhost-user frontend');
      return;
    }
    await this.#connect(options.connectTimeoutMs ?? 10_000);
  }

  get connected(): boolean {
    return this.#conn !== null;
  }

  #listen(listener: UnixListener): void {
    this.#listener = listener;
    listener.beforeAccept = this.#onConsume;
    listener.on('connection', (sock) => this.#accept(sock));
    listener.on('error', (err) => this.#log.error({ err }, 'vhost-user listener error'));
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

  #reconnect(): void {
    void this.#connect(Number.POSITIVE_INFINITY).catch((e) => this.#log.error({ err: e }, 'reconnecting to the frontend failed'));
  }

  #accept(sock: UnixSocket): void {
    if (this.#conn !== null || this.#closed) {
      this.#log.warn('refusing a second vhost-user connection while one is up');
      sock.close();
      return;
    }
    this.#conn = sock;
    this.connections++;
    this.#events.changed();
    this.#log.info({ connection: this.connections }, 'vhost-user frontend connected');
    this.#read(sock);
  }

  #read(sock: UnixSocket, initial?: Chunk): void {
    sock.beforeRead = this.#onConsume;
    if (initial) this.#onConsume?.();
    // Any bytes at all change what a handover must carry (a partial message is state too).
    sock.on('data', () => this.#events.changed());
    const reply = (msg: Buffer): void => void sock.send(msg).catch((err) => this.#log.warn({ err }, 'could not send a vhost-user reply'));
    const drop = (reason: string): void => {
      this.#log.warn({ reason }, 'closing the vhost-user connection');
      sock.close();
    };
    this.#framer = readFrames(
      sock,
      VHOST_USER_FRAME,
      {
        onFrame: (frame) => {
          if (this.#conn !== sock) {
            closeFds(frame.fds);
            return;
          }
          this.#events.frame(frame, reply, drop);
        },
        onClose: (err) => this.#onDisconnect(sock, err),
      },
      initial ? { initial } : {},
    );
    if (this.#frozen) sock.pause();
  }

  #onDisconnect(sock: UnixSocket, err?: Error): void {
    if (this.#conn !== sock) return;
    this.#conn = null;
    this.#framer = null;
    this.disconnects++;
    this.#log.info({ err: err?.message }, 'vhost-user frontend disconnected');
    this.#events.disconnected(err);
    if (this.mode === 'client' && !this.#closed && !this.#frozen) this.#reconnect();
  }

  /**
   * Close the current connection for something the frontend did outside a
   * message (its memory faulted, or the engine gave up on its rings), as a
   * bad message would. Not while frozen or
   * handed over: the connection may be a successor's by then.
   */
  drop(reason: string): void {
    const sock = this.#conn;
    if (sock === null || this.#frozen || this.#detached) return;
    this.#log.warn({ reason }, 'closing the vhost-user connection');
    sock.close();
  }

  // ---- handover ----

  /** The fds a handover sends (still ours: borrowed), and the message half read. */
  exportFds(): ConnectionFds {
    const p = this.#conn ? this.#framer?.pending() : undefined;
    return {
      listenerFd: this.#listener?.fd ?? null,
      connFd: this.#conn?.fd ?? null,
      pending: p && (p.data.length > 0 || p.fds.length > 0) ? p : null,
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
    else if (this.mode === 'client' && !this.#closed) this.#reconnect();
  }

  /**
   * Call `fn` before anything is read from the socket or accepted on the
   * listener, from now on (null: stop). A new instance that has not
   * committed marks so what its predecessor's copy no longer knows.
   */
  watchConsumption(fn: (() => void) | null): void {
    this.#onConsume = fn;
    if (this.#conn) this.#conn.beforeRead = fn;
    if (this.#listener) this.#listener.beforeAccept = fn;
  }

  /**
   * Close the frontend's connection while frozen (a rollback whose successor
   * consumed messages from it and is gone: our state of the device is stale).
   * The frontend reconnects (server mode) or we do at thaw (client mode).
   */
  reset(reason: string): void {
    const sock = this.#conn;
    if (sock === null) return;
    this.#log.warn({ reason }, 'closing the vhost-user connection');
    this.#conn = null;
    this.#framer?.discard();
    this.#framer = null;
    this.disconnects++;
    sock.close();
  }

  /** The frontend now belongs to a successor: on close, let go without touching it. */
  detach(): void {
    this.#detached = true;
  }

  /** Commit of a handover: ours alone now (closing removes the socket path again). */
  claim(): void {
    this.#detached = false;
  }

  /** Sockets adopted in a handover: frozen and detached (the predecessor holds them too) until activate(). */
  adopt(fds: ConnectionFds): void {
    this.#adopted = fds;
    this.#frozen = true;
    this.#detached = true;
  }

  /** After the engine thawed: take the socket and the listener and read them (pending bytes first). */
  activate(): void {
    const a = this.#adopted;
    this.#frozen = false;
    if (!a) return;
    this.#adopted = null;
    if (a.listenerFd !== null) this.#listen(UnixListener.adopt(a.listenerFd, this.path, 'stream'));
    if (a.connFd !== null) {
      const sock = UnixSocket.adopt(a.connFd);
      this.#conn = sock;
      this.#read(sock, a.pending ?? undefined);
    } else if (this.mode === 'client') {
      this.#reconnect();
    }
  }

  /** Drop adopted sockets without touching the frontend (a handover aborted): close our copies only. */
  discard(): void {
    this.#detached = true;
    const a = this.#adopted;
    this.#adopted = null;
    if (a) closeFds([a.listenerFd, a.connFd, ...(a.pending?.fds ?? [])]);
    this.close();
  }

  /**
   * Close the connection and the listener. A detached connection lets go of
   * its fds without a word to the frontend and leaves the socket path to
   * its successor.
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
      if (this.#detached) closeFds([c.release()]);
      else c.close();
    }
  }
}
