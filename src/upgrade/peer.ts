import fs from 'node:fs';
import { ControlClient } from '../control/client.js';
import { hasCode, relayedCode, ZiuError } from '../errors.js';
import { native } from '../native/index.js';
import type { Applied, Placement } from '../sched/placement.js';

export interface Hello {
  protocol: number;
  datapath: string;
  version: string;
  instance: string;
  pid: number;
  role: string;
  stateFormats: { export: number[]; import: number[] };
  control: string;
  /** the worker placement the instance was started with or inherited (absent from older datapaths) */
  worker?: Placement | null;
}

export interface PortStatus {
  name: string;
  kind: string;
  connected?: boolean;
  disconnects?: number;
  counters: { rxPackets: number; txPackets: number; dropsNoBuffer: number; dropsInvalid: number } | null;
}

export interface Status {
  version: string;
  instance: string;
  pid: number;
  role: string;
  memFiles: Array<{ path: string; bytes: number }>;
  ports: PortStatus[];
  handover: { firstPassNs?: string; frozenNs?: string } | null;
  /** the packet worker's placement, as asked and as the kernel has it */
  worker?: { requested: Placement | null; applied: Applied; fallback: string | null } | null;
}

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

  /** A call whose failure is an error naming the instance and the op; fds of the reply are the caller's. */
  async call<T = Record<string, unknown>>(op: string, body: Record<string, unknown> = {}, fds: number[] = [], timeoutMs = 5000): Promise<{ body: T; fds: number[] }> {
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
      r = await Promise.race([this.#client.request({ op, ...body }, fds), timeout]);
    } finally {
      clearTimeout(timer);
    }
    if (!r.body.ok) {
      for (const fd of r.fds) native.close(fd);
      throw new ZiuError(relayedCode(r.body.error.code), `${op} on the ${this.label} instance (${this.path}): ${r.body.error.message}`);
    }
    return { body: r.body as unknown as T, fds: r.fds };
  }

  /** hello, with a clear refusal for a peer that is not a handover datapath. */
  async hello(): Promise<Hello> {
    let h: Hello;
    try {
      h = (await this.call<Hello>('hello')).body;
    } catch (cause) {
      const code = (cause as { code?: string }).code;
      const why = code === 'ERR_ZIU_CONTROL_UNKNOWN_OP' ? 'it does not know the handover protocol (no hello)' : (cause as Error).message;
      throw new ZiuError('ERR_ZIU_NOT_A_DATAPATH', `${this.path} is not a datapath speaking the ziu handover protocol: ${why}`, { cause });
    }
    if (typeof h.protocol !== 'number' || typeof h.pid !== 'number' || !h.stateFormats) {
      throw new ZiuError('ERR_ZIU_NOT_A_DATAPATH', `${this.path} answered hello without protocol, pid and stateFormats`);
    }
    return h;
  }

  async status(): Promise<Status> {
    return (await this.call<{ status: Status }>('status')).body.status;
  }

  close(): void {
    this.#client.close();
  }
}
