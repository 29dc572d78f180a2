// An in-process vhost-user frontend that does what a test tells it, from the request
// encoders (src/vhost) and a real unix socket with fds (src/net): the hostile
// side of test/hostile. Every request it sends asks for a REPLY_ACK once that
// is negotiated, so the test knows when the datapath has handled it.
import { readFrames, type Frame } from '../../src/net/framing.js';
import { UnixSocket } from '../../src/net/socket.js';
import { encodeRequest, hasOwnReply, ProtocolFeature, VHOST_USER_FRAME, VhostUserRequest, VirtioFeature, type MappedRegion, type Request } from '../../src/vhost/index.js';
import { closeFds } from '../../src/native/fds.js';

/** The frontend's user address of its memory: ring addresses are in this space. */
export const UA = 0x7f3c_0000_0000n;
const RING_AREA = 0x40000n;
export const RING_NUM = 256;

/** Ring q's structures, RING_AREA apart from the start of the region. */
export function ringAddr(q: number): { desc: bigint; avail: bigint; used: bigint } {
  const base = UA + BigInt(q) * RING_AREA;
  return { desc: base, avail: base + 0x20000n, used: base + 0x30000n };
}

export class HostileFrontend {
  readonly sock: UnixSocket;
  closed = false;
  #frames: Frame[] = [];
  #wake: (() => void) | null = null;
  #acks = false;

  private constructor(sock: UnixSocket) {
    this.sock = sock;
    readFrames(sock, VHOST_USER_FRAME, {
      onFrame: (f) => {
        closeFds(f.fds);
        this.#frames.push(f);
        this.#wake?.();
      },
      onClose: () => {
        this.closed = true;
        this.#wake?.();
      },
    });
  }

  static async connect(path: string): Promise<HostileFrontend> {
    return new HostileFrontend(await UnixSocket.connect(path));
  }

  /**
   * Send one request (its fds are duplicated into the datapath; ours stay
   * ours) and wait for its reply or ack: the u64 it carries, or null if the
   * datapath closed the connection instead.
   */
  async call(req: Request, timeoutMs = 3000): Promise<bigint | null> {
    const own = hasOwnReply(req.type);
    const r = own ? req : { ...req, needReply: this.#acks };
    const { bytes, fds } = encodeRequest(r);
    try {
      await this.sock.send(bytes, fds);
    } catch {
      return null;
    }
    if (!own && !this.#acks) return 0n;
    const id = VhostUserRequest[req.type];
    const f = await this.#next(id, timeoutMs);
    return f === null ? null : f.body.length >= 8 ? f.body.readBigUInt64LE(0) : 0n;
  }

  /** The next reply to a request of this type, or null if the datapath closed the connection first. */
  reply(type: Request['type'], timeoutMs = 3000): Promise<Frame | null> {
    return this.#next(VhostUserRequest[type], timeoutMs);
  }

  async #next(id: number, timeoutMs: number): Promise<Frame | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#frames.findIndex((f) => f.header.readUInt32LE(0) === id);
      if (i >= 0) return this.#frames.splice(i, 1)[0]!;
      if (this.closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply to vhost-user request ${id} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  /** Features and protocol features (REPLY_ACK from here on, and `more`, e.g. MQ); no memory, no rings. */
  async negotiate(more = 0n): Promise<void> {
    await this.call({ type: 'SET_OWNER', needReply: false });
    await this.call({ type: 'GET_FEATURES', needReply: false });
    await this.call({ type: 'GET_PROTOCOL_FEATURES', needReply: false });
    await this.call({ type: 'SET_PROTOCOL_FEATURES', needReply: false, features: ProtocolFeature.REPLY_ACK | more });
    this.#acks = true;
    const ok = await this.call({ type: 'SET_FEATURES', needReply: true, features: VirtioFeature.VERSION_1 | VirtioFeature.F_PROTOCOL_FEATURES });
    if (ok !== 0n) throw new Error(`SET_FEATURES refused (${ok})`);
  }

  /** The memory table: the REPLY_ACK value (0 ok), or null if the datapath closed the connection. */
  setMemTable(regions: MappedRegion[]): Promise<bigint | null> {
    return this.call({ type: 'SET_MEM_TABLE', needReply: true, regions });
  }

  /** Both rings at ringAddr(q), started by their kick fds and enabled. */
  async startRings(kick: [number, number], call: [number, number]): Promise<void> {
    for (const q of [0, 1]) {
      const steps: Request[] = [
        { type: 'SET_VRING_CALL', needReply: true, index: q, fd: call[q]! },
        { type: 'SET_VRING_NUM', needReply: true, index: q, num: RING_NUM },
        { type: 'SET_VRING_BASE', needReply: true, index: q, num: 0 },
        { type: 'SET_VRING_ADDR', needReply: true, index: q, flags: 0, ...ringAddr(q), log: 0n },
        { type: 'SET_VRING_KICK', needReply: true, index: q, fd: kick[q]! },
        { type: 'SET_VRING_ENABLE', needReply: true, index: q, enable: true },
      ];
      for (const s of steps) {
        const r = await this.call(s);
        if (r !== 0n) throw new Error(`${s.type} ring ${q}: ${r === null ? 'connection closed' : `refused (${r})`}`);
      }
    }
  }

  /** Resolves true once the datapath has closed the connection, false after ms. */
  async closedWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.closed;
  }

  close(): void {
    if (!this.sock.closed) this.sock.close();
    this.closed = true;
  }
}
