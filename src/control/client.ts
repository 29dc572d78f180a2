import { relayedCode, ZiuError } from '../errors.js';
import { Framer, LENGTH_PREFIXED } from '../net/framing.js';
import { UnixSocket } from '../net/socket.js';
import { decodeControl, encodeControl, type ControlMessage, type ControlReply, type ControlRequest } from './protocol.js';
import { closeFds } from '../native/fds.js';

/** The client side of a datapath control socket: one request at a time, in order. */
export class ControlClient {
  readonly path: string;
  #sock: UnixSocket;
  #framer = new Framer(LENGTH_PREFIXED);
  #waiting: Array<{ resolve: (m: ControlMessage<ControlReply>) => void; reject: (e: Error) => void }> = [];
  #closedErr: Error | null = null;

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

  /** Send a request; resolves with the reply and any fds it carried (now the caller's). */
  request(req: ControlRequest, fds: number[] = []): Promise<ControlMessage<ControlReply>> {
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
