import fs from 'node:fs';
import { ControlClient } from '../control/client.js';
import { hasCode, relayedCode, ZiuError } from '../errors.js';
import { OPS, type Hello, type Op, type ReplyOf, type RequestOf, type Status } from '../handover/messages/index.js';
import { closeFds } from '../native/fds.js';

export type { Hello, PortStatus, Status } from '../handover/messages/index.js';

/** One datapath as the orchestrator sees it: its control socket, spoken to in the handover protocol. */
export class Peer {
  readonly label: string;
  readonly path: string;
  #client: ControlClient;

  private constructor(label: string, path: string, client: ControlClient) {
    this.label = label;
    this.path = path;
    this.#client = client;
  }

  /** Connect; an absent or dead socket is a refusal that names it. */
  static async connect(label: string, path: string): Promise<Peer> {
    let st: fs.Stats;
    try {
      st = fs.statSync(path);
    } catch (cause) {
      throw new ZiuError('ERR_ZIU_NO_CONTROL', `no control socket at ${path} (${label} instance): ${(cause as Error).message}`, { cause });
    }
    if (!st.isSocket()) throw new ZiuError('ERR_ZIU_NO_CONTROL', `${path} is not a unix socket (${label} instance's --control)`);
    try {
      return new Peer(label, path, await ControlClient.connect(path));
    } catch (cause) {
      const why = hasCode(cause, 'ECONNREFUSED') ? 'nothing is listening (the datapath is not running?)' : (cause as Error).message;
      throw new ZiuError('ERR_ZIU_NO_CONTROL', `cannot connect to the ${label} instance's control socket ${path}: ${why}`, { cause });
    }
  }

  /**
   * One op of the handover protocol, typed both ways: the request is encoded
   * by its codec, the reply validated by its own. A failure is an error
   * naming the instance and the op; fds of the reply are the caller's.
   */
  async call<K extends Op>(op: K, req?: RequestOf<K>, fds: number[] = [], timeoutMs = 5000): Promise<{ body: ReplyOf<K>; fds: number[] }> {
    const codec = OPS[op];
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // A late reply must not leak its fds: the connection goes, and with it anything in flight.
        this.#client.close();
        reject(new ZiuError('ERR_ZIU_CONTROL_TIMEOUT', `${op} on the ${this.label} instance (${this.path}): no answer within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    let r;
    try {
      const encoded = (codec.request.encode as (v: RequestOf<K>) => Record<string, unknown>)(req ?? ({} as RequestOf<K>));
      r = await Promise.race([this.#client.request({ op, ...encoded }, fds), timeout]);
    } finally {
      clearTimeout(timer);
    }
    if (!r.body.ok) {
      closeFds(r.fds);
      throw new ZiuError(relayedCode(r.body.error.code), `${op} on the ${this.label} instance (${this.path}): ${r.body.error.message}`);
    }
    try {
      return { body: codec.reply.decode(r.body) as ReplyOf<K>, fds: r.fds };
    } catch (err) {
      closeFds(r.fds);
      const e = err as ZiuError;
      throw new ZiuError(e.code, `${op} on the ${this.label} instance (${this.path}): ${e.message}`, { cause: err });
    }
  }

  /** hello, with a clear refusal for a peer that is not a handover datapath. */
  async hello(): Promise<Hello> {
    try {
      return (await this.call('hello')).body;
    } catch (cause) {
      const code = (cause as { code?: string }).code;
      const why =
        code === 'ERR_ZIU_CONTROL_UNKNOWN_OP'
          ? 'it does not know the handover protocol (no hello)'
          : code === 'ERR_ZIU_CONTROL_BAD_MESSAGE'
            ? `it answered hello without a valid protocol, pid and stateFormats (${(cause as Error).message})`
            : (cause as Error).message;
      throw new ZiuError('ERR_ZIU_NOT_A_DATAPATH', `${this.path} is not a datapath speaking the ziu handover protocol: ${why}`, { cause });
    }
  }

  async status(): Promise<Status> {
    return (await this.call('status')).body.status;
  }

  close(): void {
    this.#client.close();
  }
}
