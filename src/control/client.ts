import { relayedCode, ZiuError } from '../errors.js';
import { Framer, LENGTH_PREFIXED } from '../net/framing.js';
import { UnixSocket } from '../net/socket.js';
import { decodeControl, encodeControl, FD_BATCH, PULL_FDS, PUSH_FDS, type ControlMessage, type ControlReply, type ControlRequest } from './protocol.js';
import { closeFds } from '../native/fds.js';

/** The client side of a datapath control socket: one request at a time, in order. */
export class ControlClient {
  readonly path: string;
  #sock: UnixSocket;
  #framer = new Framer(LENGTH_PREFIXED);
  #waiting: Array<{ resolve: (m: ControlMessage<ControlReply>) => void; reject: (e: Error) => void }> = [];
  #closedErr: Error | null = null;
  /** requests go one after the other: a request with many fds is several messages */
  #queue: Promise<void> = Promise.resolve();

  private constructor(path: string, sock: UnixSocket) {
    this.path = path;
    this.#sock = sock;
    sock.on('data', (chunk) => {
      let frames;
      try {
        frames = this.#framer.push(chunk);
      } catch (err) {
        this.#fail(err as Error);
        return;
      }
      for (const f of frames) {
        const w = this.#waiting.shift();
        if (!w) {
          closeFds(f.fds);
          continue;
        }
        try {
          w.resolve({ body: decodeControl<ControlReply>(f, `reply from ${path}`), fds: f.fds });
        } catch (err) {
          closeFds(f.fds);
          w.reject(err as Error);
        }
      }
    });
    sock.on('end', () => this.#fail(new ZiuError('ERR_ZIU_PEER_CLOSED', `control socket ${path}: the datapath closed the connection`)));
    sock.on('error', (err) => this.#fail(err));
    sock.resume();
  }

  static async connect(path: string): Promise<ControlClient> {
    return new ControlClient(path, await UnixSocket.connect(path));
  }

  /**
   * Send a request; resolves with the reply and any fds it carried (now the
   * caller's). Any number of fds either way: beyond FD_BATCH they travel in
   * acknowledged batches (pushFds before the request, pullFds after the
   * reply), so requests are sent one at a time.
   */
  request(req: ControlRequest, fds: number[] = []): Promise<ControlMessage<ControlReply>> {
    const r = this.#queue.then(() => this.#request(req, fds));
    this.#queue = r.then(
      () => undefined,
      () => undefined,
    );
    return r;
  }

  async #request(req: ControlRequest, fds: number[]): Promise<ControlMessage<ControlReply>> {
    let at = 0;
    for (; fds.length - at > FD_BATCH; at += FD_BATCH) {
      const batch = fds.slice(at, at + FD_BATCH);
      const p = await this.#exchange({ op: PUSH_FDS, count: batch.length }, batch);
      closeFds(p.fds);
      if (!p.body.ok) return p;
    }
    const r = await this.#exchange(req, fds.slice(at));
    const all = [...r.fds];
    let more = r.body.ok ? r.body['moreFds'] : undefined;
    try {
      while (typeof more === 'number' && more > 0) {
        const p = await this.#exchange({ op: PULL_FDS });
        all.push(...p.fds);
        if (!p.body.ok) throw new ZiuError(relayedCode(p.body.error.code), `${req.op} on ${this.path}: fetching its fds: ${p.body.error.message}`);
        if (p.fds.length === 0) throw new ZiuError('ERR_ZIU_CONTROL_BAD_MESSAGE', `${req.op} on ${this.path}: ${more} more fds announced, none came`);
        more = p.body['moreFds'];
      }
    } catch (err) {
      closeFds(all);
      throw err;
    }
    if (r.body.ok) delete (r.body as Record<string, unknown>)['moreFds'];
    return { body: r.body, fds: all };
  }

  /** One message out, its reply in. */
  #exchange(req: ControlRequest, fds: number[] = []): Promise<ControlMessage<ControlReply>> {
    if (this.#closedErr) return Promise.reject(this.#closedErr);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#sock.send(encodeControl(req), fds).catch((err: Error) => this.#fail(err));
    });
  }

  /** request() for ops whose failure is an error: throws the datapath's error, returns the body. */
  async call<T extends Record<string, unknown>>(req: ControlRequest, fds: number[] = []): Promise<ControlMessage<T>> {
    const r = await this.request(req, fds);
    if (!r.body.ok) {
      closeFds(r.fds);
      throw new ZiuError(relayedCode(r.body.error.code), `${req.op} on ${this.path}: ${r.body.error.message}`);
    }
    return r as unknown as ControlMessage<T>;
  }

  #fail(err: Error): void {
    if (!this.#closedErr) this.#closedErr = err;
    for (const w of this.#waiting.splice(0)) w.reject(err);
    if (!this.#sock.closed) this.#sock.close();
  }

  close(): void {
    this.#fail(new ZiuError('ERR_ZIU_SOCKET_CLOSED', `control socket ${this.path} closed`));
  }
}
