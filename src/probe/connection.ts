/**
 * A front-end's vhost-user connection: one request at a time, each reply
 * checked with decodeReply against the request it answers. The back-end
 * never speaks first on this socket (ziu never negotiates BACKEND_REQ), so a
 * message nobody waits for breaks the connection.
 */
import { EventEmitter } from 'node:events';
import { ZiuError } from '../errors.js';
import { readFrames, type Frame } from '../net/framing.js';
import type { UnixSocket } from '../net/socket.js';
import { DecodeError, decodeReply, encodeRequest, expectsReply, VHOST_USER_FRAME, type Reply, type Request } from '../vhost/index.js';
import { closeFds } from '../native/fds.js';

interface Pending {
  req: Request;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface FrontendConnectionEvents {
  /** the connection is gone: err says why when it was not a clean close by the peer */
  close: [err?: Error];
}

export class FrontendConnection extends EventEmitter<FrontendConnectionEvents> {
  readonly path: string;
  readonly #sock: UnixSocket;
  readonly #replyTimeoutMs: number;
  #pending: Pending | null = null;
  #closed = false;

  constructor(sock: UnixSocket, path: string, replyTimeoutMs: number) {
    super();
    this.#sock = sock;
    this.path = path;
    this.#replyTimeoutMs = replyTimeoutMs;
    readFrames(sock, VHOST_USER_FRAME, {
      onFrame: (f) => this.#onFrame(f),
      onClose: (err) => this.#onClose(err),
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Send one request; resolves with the reply when it has one (its own or an ack), else once sent. */
  async request(req: Request): Promise<Reply | undefined> {
    if (this.#closed) throw this.#gone(req);
    if (this.#pending !== null) throw new ZiuError('ERR_ZIU_VHOST_BUSY', `vhost-user ${req.type}: a reply to ${this.#pending.req.type} is still outstanding`);
    const { bytes, fds } = encodeRequest(req);
    if (!expectsReply(req)) {
      await this.#sock.send(bytes, fds);
      return undefined;
    }
    const reply = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending = null;
        const err = new ZiuError('ERR_ZIU_VHOST_TIMEOUT', `vhost-user ${req.type} to '${this.path}': no reply within ${this.#replyTimeoutMs} ms`);
        reject(err);
        this.close(err);
      }, this.#replyTimeoutMs);
      this.#pending = { req, resolve, reject, timer };
    });
    try {
      await this.#sock.send(bytes, fds);
    } catch (err) {
      this.#settle()?.reject(err as Error);
    }
    return reply;
  }

  close(err?: Error): void {
    if (this.#closed) return;
    this.#onClose(err);
    if (!this.#sock.closed) this.#sock.close();
  }

  #settle(): Pending | null {
    const p = this.#pending;
    this.#pending = null;
    if (p !== null) clearTimeout(p.timer);
    return p;
  }

  #onFrame(f: Frame): void {
    const p = this.#settle();
    if (p === null) {
      closeFds(f.fds);
      this.close(new ZiuError('ERR_ZIU_VHOST_UNEXPECTED', `vhost-user '${this.path}': the back-end sent request ${f.header.readUInt32LE(0)} unasked`));
      return;
    }
    const reply = decodeReply(f, p.req);
    if (reply instanceof DecodeError) {
      closeFds(reply.fds);
      p.reject(reply);
      this.close(reply);
      return;
    }
    p.resolve(reply);
  }

  #onClose(err?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    const p = this.#settle();
    if (p !== null) p.reject(err ?? this.#gone(p.req));
    this.emit('close', err);
  }

  #gone(req: Request): ZiuError {
    return new ZiuError('ERR_ZIU_PEER_CLOSED', `vhost-user ${req.type} to '${this.path}': the back-end closed the connection`);
  }
}
