import { ZiuError } from '../errors.js';
import type { Logger } from '../log.js';
import { check, native } from '../native/index.js';
import { LENGTH_PREFIXED, readFrames } from '../net/framing.js';
import { UnixListener, type UnixSocket } from '../net/socket.js';
import { decodeControl, encodeControl, FD_BATCH, MAX_PUSHED_FDS, PULL_FDS, PUSH_FDS, type ControlReply, type ControlRequest } from './protocol.js';
import { closeFds } from '../native/fds.js';

export interface HandlerResult {
  body: Record<string, unknown>;
  /** fds to attach to the reply; borrowed (the kernel copies them) */
  fds?: number[];
}

/** One connection's fd batches: pushed ahead of its next request, and announced with its last reply. */
interface Batches {
  pushed: number[];
  pending: number[];
}

/** pushFds: hold the attached fds for the connection's next request; returns how many are held. */
function pushFds(req: ControlRequest, attached: number[], batches: Batches): number {
  const count = req['count'];
  if (count !== attached.length) {
    closeFds(attached);
    throw new ZiuError('ERR_ZIU_FD_NAMES', `pushFds: count ${String(count)} but ${attached.length} fds attached`);
  }
  if (batches.pushed.length + attached.length > MAX_PUSHED_FDS) {
    closeFds([...attached, ...batches.pushed.splice(0)]);
    throw new ZiuError('ERR_ZIU_TOO_MANY_FDS', `pushFds: more than ${MAX_PUSHED_FDS} fds pushed ahead of one request; all of them were closed`);
  }
  batches.pushed.push(...attached);
  return batches.pushed.length;
}

function dupAll(fds: number[]): number[] {
  const out: number[] = [];
  try {
    for (const fd of fds) out.push(check(native.dup(fd), 'dup', { fd }));
  } catch (err) {
    closeFds(out);
    throw err;
  }
  return out;
}

/** Handles one op. `fds` came with the request and are now the handler's to keep or close. */
export type Handler = (req: ControlRequest, fds: number[]) => Promise<HandlerResult> | HandlerResult;

/**
 * The server side of a control socket: mode 0600, and only root or our own
 * uid may talk to it (SO_PEERCRED), since it can stop the datapath and hand
 * out its fds.
 */
export class ControlServer {
  #listener: UnixListener;
  #handlers: Map<string, Handler>;
  #log: Logger;
  #conns = new Set<UnixSocket>();

  private constructor(listener: UnixListener, handlers: Map<string, Handler>, log: Logger) {
    this.#listener = listener;
    this.#handlers = handlers;
    this.#log = log;
    listener.on('connection', (sock) => this.#accept(sock));
  }

  static async listen(path: string, handlers: Record<string, Handler>, log: Logger): Promise<ControlServer> {
    const l = await UnixListener.listen(path, { mode: 0o600 });
    return new ControlServer(l, new Map(Object.entries(handlers)), log.child({ control: path }));
  }

  /** Serve on a listening socket handed over by a predecessor (same path, same clients). */
  static adopt(fd: number, path: string, handlers: Record<string, Handler>, log: Logger): ControlServer {
    return new ControlServer(UnixListener.adopt(fd, path, 'stream'), new Map(Object.entries(handlers)), log.child({ control: path }));
  }

  get path(): string {
    return this.#listener.path;
  }

  /** The listening fd (a handover passes it on; it stays ours). */
  get listenerFd(): number {
    return this.#listener.fd;
  }

  #accept(sock: UnixSocket): void {
    const cred = native.peercred(sock.fd);
    const me = process.getuid?.() ?? 0;
    if (typeof cred === 'number' || (cred.uid !== 0 && cred.uid !== me)) {
      this.#log.warn({ peer: typeof cred === 'number' ? null : cred }, 'control connection refused: not root or our uid');
      sock.close();
      return;
    }
    this.#conns.add(sock);
    const batches: Batches = { pushed: [], pending: [] };
    // one request at a time per connection, in order
    let chain = Promise.resolve();
    readFrames(sock, LENGTH_PREFIXED, {
      onFrame: (frame) => {
        chain = chain.then(() => this.#serve(sock, frame.body, frame.fds, batches));
      },
      onClose: (err) => {
        this.#conns.delete(sock);
        // Whatever was pushed for a request that never came, or announced and never pulled.
        void chain.then(() => closeFds([...batches.pushed.splice(0), ...batches.pending.splice(0)]));
        // A peer that broke the framing (an oversized frame, fds dribbled without a message) is dropped: say who and why.
        if (err) this.#log.warn({ peer: cred, code: (err as { code?: string }).code, reason: err.message }, `control connection dropped: ${err.message}`);
      },
    });
  }

  async #serve(sock: UnixSocket, body: Buffer, attached: number[], batches: Batches): Promise<void> {
    let reply: ControlReply;
    let out: number[] = [];
    /** dups of ours sent with this reply (a pulled batch), closed once sent */
    let owned: number[] = [];
    let fds = attached;
    // The fds are ours until a handler takes them: any refusal before that closes them.
    let taken = false;
    try {
      const req = decodeControl<unknown>({ header: Buffer.alloc(0), body, fds }, 'control request');
      const op = typeof req === 'object' && req !== null && !Array.isArray(req) ? (req as { op?: unknown }).op : undefined;
      if (op === PUSH_FDS) {
        taken = true; // pushFds keeps them or closes them
        reply = { ok: true, held: pushFds(req as ControlRequest, attached, batches) };
      } else if (op === PULL_FDS) {
        owned = batches.pending.splice(0, FD_BATCH);
        out = owned;
        reply = { ok: true, moreFds: batches.pending.length };
        closeFds(attached);
        taken = true;
      } else {
        // A batch announced and never pulled: the client moved on, so it goes.
        closeFds(batches.pending.splice(0));
        fds = [...batches.pushed.splice(0), ...attached];
        const h = typeof op === 'string' ? this.#handlers.get(op) : undefined;
        if (!h) {
          const what = op === undefined ? 'a control request is a JSON object with an "op"' : `unknown control op '${String(op)}'`;
          throw new ZiuError('ERR_ZIU_CONTROL_UNKNOWN_OP', what);
        }
        taken = true;
        const r = await h(req as ControlRequest, fds);
        out = r.fds ?? [];
        reply = { ok: true, ...r.body };
        if (out.length > FD_BATCH) {
          // The rest waits for pullFds as dups of ours: the handler's fds are only borrowed until we reply.
          batches.pending = dupAll(out.slice(FD_BATCH));
          out = out.slice(0, FD_BATCH);
          reply = { ...reply, moreFds: batches.pending.length };
        }
      }
    } catch (err) {
      if (!taken) closeFds(fds);
      const e = err as { code?: string; message?: string };
      reply = { ok: false, error: { code: e.code ?? 'ERR_ZIU_INTERNAL', message: e.message ?? String(err) } };
      out = [];
    }
    try {
      if (sock.closed) return;
      await sock.send(encodeControl(reply), out).catch((err) => this.#log.warn({ err }, 'could not send a control reply'));
    } finally {
      closeFds(owned);
    }
  }

  /**
   * Stop accepting; connections already open are still served. The path is
   * removed unless keepPath (a successor accepts on the same listener).
   */
  stopListening(options: { keepPath?: boolean } = {}): void {
    this.#listener.close(options);
  }

  /** Stop serving; keepPath leaves the socket file to a successor that holds the listener too. */
  close(options: { keepPath?: boolean } = {}): void {
    this.#listener.close(options);
    for (const c of this.#conns) c.close();
    this.#conns.clear();
  }
}
