/**
 * A small but real vhost-user back-end for the probe's tests: it answers the
 * protocol on a real unix socket, maps the front-end's memory, and moves
 * frames from one device's TX ring into another device's RX ring (or its own,
 * or a capture list), signalling call fds as a vswitch does.
 *
 * It is driven by kicks and a 1 ms timer on the event loop. When the receiving
 * ring has no buffer it leaves frames in the TX ring (backpressure), so any
 * loss a test sees is loss the test asked for with `transform`.
 */
import { check, native, type PollHandle } from '../../src/native/index.js';
import { readFrames } from '../../src/net/framing.js';
import { UnixListener, UnixSocket } from '../../src/net/socket.js';
import {
  DecodeError,
  decodeRequest,
  encodeReply,
  expectsReply,
  hasOwnReply,
  ProtocolFeature,
  requestFds,
  VHOST_USER_FRAME,
  VirtioFeature,
  type Request,
  type RequestName,
} from '../../src/vhost/index.js';

const NET_HDR = 12;
const DESC_F_NEXT = 1;
const DESC_F_WRITE = 2;
const AVAIL_F_NO_INTERRUPT = 1;

interface Ring {
  num: number;
  desc: number;
  avail: number;
  used: number;
  addrSet: boolean;
  lastAvail: number;
  kickFd: number | null;
  kickPoll: PollHandle | null;
  callFd: number | null;
  enabled: boolean;
}

interface Memory {
  buf: ArrayBuffer;
  bytes: Uint8Array;
  view: DataView;
  u16: Uint16Array;
  gpa: bigint;
  uva: bigint;
  size: number;
  offset: number;
  fd: number;
}

export interface Device {
  path: string;
  /** request names in arrival order */
  requests: RequestName[];
  /** need_reply flag per SET_MEM_TABLE received */
  memTableNeedReply: boolean[];
  features: bigint | null;
  protocolFeatures: bigint | null;
  bases: [number | null, number | null];
  mem: Memory | null;
  rings: [Ring, Ring];
  /** frames taken from this device's TX ring when it has no route */
  captured: Buffer[];
  forwarded: number;
  closed: boolean;
}

export interface BackendOptions {
  features?: bigint;
  protocolFeatures?: bigint;
  /** per frame taken from a TX ring: the frames to deliver instead (none = drop, two = duplicate) */
  transform?: (frame: Buffer, index: number) => Buffer[];
}

const ring = (): Ring => ({ num: 0, desc: 0, avail: 0, used: 0, addrSet: false, lastAvail: 0, kickFd: null, kickPoll: null, callFd: null, enabled: false });

export class LoopbackBackend {
  readonly devices = new Map<string, Device>();
  readonly offered: bigint;
  readonly offeredProtocol: bigint;
  transform: BackendOptions['transform'];
  #socks = new Map<string, UnixSocket>();
  #listeners: UnixListener[] = [];
  #routes = new Map<string, string | 'capture'>();
  #timer: NodeJS.Timeout;
  #taken = 0;

  constructor(opts: BackendOptions = {}) {
    this.offered = opts.features ?? (VirtioFeature.VERSION_1 | VirtioFeature.F_PROTOCOL_FEATURES | VirtioFeature.MRG_RXBUF);
    this.offeredProtocol = opts.protocolFeatures ?? (ProtocolFeature.MQ | ProtocolFeature.REPLY_ACK | ProtocolFeature.STATUS);
    this.transform = opts.transform;
    this.#timer = setInterval(() => this.pumpAll(), 1);
  }

  /** Frames from `from`'s TX ring go to `to`'s RX ring ('capture': into from's captured list). */
  route(from: string, to: string | 'capture'): this {
    this.#routes.set(from, to);
    return this;
  }

  /** Listen at path for a client-mode probe. */
  async listen(path: string): Promise<void> {
    const l = await UnixListener.listen(path);
    l.on('connection', (sock) => this.#attach(path, sock));
    this.#listeners.push(l);
  }

  /** Connect to a server-mode probe at path (retrying until it listens). */
  async connect(path: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        this.#attach(path, await UnixSocket.connect(path));
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }

  /** Resolves when the device at path has memory and two started, enabled rings. */
  async ready(path: string, timeoutMs = 5000): Promise<Device> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = this.devices.get(path);
      if (d && !d.closed && d.rings.every((r) => this.#started(d, r))) return d;
      if (Date.now() > deadline) throw new Error(`device at ${path} not ready within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Put a frame into the device's RX ring (false when it has no buffer). */
  inject(path: string, frame: Uint8Array): boolean {
    const d = this.devices.get(path);
    if (!d || !this.#started(d, d.rings[0])) return false;
    const ok = this.#deliver(d, frame);
    this.#signal(d, d.rings[0]);
    return ok;
  }

  /** Drop the connection to path as a crashing back-end would. */
  disconnect(path: string): void {
    this.#socks.get(path)?.close();
  }

  close(): void {
    clearInterval(this.#timer);
    for (const l of this.#listeners) l.close();
    for (const s of this.#socks.values()) s.close();
    for (const d of this.devices.values()) this.#release(d);
  }

  pumpAll(): void {
    for (const d of this.devices.values()) if (!d.closed) this.#pump(d);
  }

  #attach(path: string, sock: UnixSocket): void {
    const old = this.devices.get(path);
    if (old && !old.closed) {
      sock.close();
      return;
    }
    const d: Device = {
      path,
      requests: [],
      memTableNeedReply: [],
      features: null,
      protocolFeatures: null,
      bases: [null, null],
      mem: null,
      rings: [ring(), ring()],
      captured: [],
      forwarded: 0,
      closed: false,
    };
    this.devices.set(path, d);
    this.#socks.set(path, sock);
    readFrames(sock, VHOST_USER_FRAME, {
      onFrame: (f) => {
        const req = decodeRequest(f, { maxQueues: 2 });
        if (req instanceof DecodeError) {
          for (const fd of req.fds) native.close(fd);
          sock.close();
          return;
        }
        this.#handle(d, sock, req);
      },
      onClose: () => {
        this.#release(d);
        if (this.#socks.get(path) === sock) this.#socks.delete(path);
      },
    });
  }

  #handle(d: Device, sock: UnixSocket, req: Request): void {
    d.requests.push(req.type);
    let ok = true;
    switch (req.type) {
      case 'GET_FEATURES':
        void sock.send(encodeReply(req, { features: this.offered }));
        return;
      case 'GET_PROTOCOL_FEATURES':
        void sock.send(encodeReply(req, { features: this.offeredProtocol }));
        return;
      case 'SET_FEATURES':
        d.features = req.features;
        break;
      case 'SET_PROTOCOL_FEATURES':
        d.protocolFeatures = req.features;
        break;
      case 'SET_MEM_TABLE': {
        d.memTableNeedReply.push(req.needReply);
        this.#unmap(d);
        const r = req.regions[0]!;
        for (const extra of req.regions.slice(1)) native.close(extra.fd);
        const size = Number(r.memorySize);
        const offset = Number(r.mmapOffset);
        const buf = native.mmap(r.fd, size + offset, 0, 0);
        if (typeof buf === 'number') {
          native.close(r.fd);
          ok = false;
          break;
        }
        d.mem = { buf, bytes: new Uint8Array(buf), view: new DataView(buf), u16: new Uint16Array(buf, 0, buf.byteLength >> 1), gpa: r.guestPhysAddr, uva: r.userspaceAddr, size, offset, fd: r.fd };
        break;
      }
      case 'SET_VRING_NUM':
        d.rings[req.index as 0 | 1].num = req.num;
        break;
      case 'SET_VRING_BASE':
        d.rings[req.index as 0 | 1].lastAvail = req.num & 0xffff;
        d.bases[req.index as 0 | 1] = req.num;
        break;
      case 'SET_VRING_ADDR': {
        const r = d.rings[req.index as 0 | 1];
        const desc = this.#uva(d, req.desc, 16 * r.num);
        const avail = this.#uva(d, req.avail, 6 + 2 * r.num);
        const used = this.#uva(d, req.used, 6 + 8 * r.num);
        if (desc === null || avail === null || used === null) {
          ok = false;
          break;
        }
        Object.assign(r, { desc, avail, used, addrSet: true });
        break;
      }
      case 'SET_VRING_KICK': {
        const r = d.rings[req.index as 0 | 1];
        this.#closeKick(r);
        r.kickFd = req.fd;
        if (req.fd !== null) {
          const fd = req.fd;
          r.kickPoll = check(
            native.pollStart(fd, native.POLL_READABLE, () => {
              native.eventfdRead(fd);
              this.#pump(d);
            }),
            'uv_poll_start',
          );
        }
        break;
      }
      case 'SET_VRING_CALL': {
        const r = d.rings[req.index as 0 | 1];
        if (r.callFd !== null) native.close(r.callFd);
        r.callFd = req.fd;
        break;
      }
      case 'SET_VRING_ENABLE':
        d.rings[req.index as 0 | 1].enabled = req.enable;
        break;
      case 'GET_VRING_BASE': {
        const r = d.rings[req.index as 0 | 1];
        r.addrSet = false;
        void sock.send(encodeReply(req, { num: r.lastAvail }));
        return;
      }
      default:
        for (const fd of requestFds(req)) native.close(fd);
        if (hasOwnReply(req.type)) {
          sock.close();
          return;
        }
    }
    if (expectsReply(req)) void sock.send(encodeReply(req, { ok } as never));
  }

  /** Offset of a user-address range in the mapping, or null when outside it. */
  #uva(d: Device, addr: bigint, len: number): number | null {
    const m = d.mem;
    if (!m || addr < m.uva || addr + BigInt(len) > m.uva + BigInt(m.size)) return null;
    return Number(addr - m.uva) + m.offset;
  }

  #gpa(d: Device, addr: bigint, len: number): number | null {
    const m = d.mem;
    if (!m || addr < m.gpa || addr + BigInt(len) > m.gpa + BigInt(m.size)) return null;
    return Number(addr - m.gpa) + m.offset;
  }

  #started(d: Device, r: Ring): boolean {
    return d.mem !== null && r.addrSet && r.num > 0 && r.kickFd !== null && (d.protocolFeatures === null || r.enabled);
  }

  #availIdx(m: Memory, r: Ring): number {
    return Atomics.load(m.u16, (r.avail + 2) >> 1);
  }

  /** Move every frame waiting in d's TX ring to its route. */
  #pump(d: Device): void {
    const m = d.mem;
    const tx = d.rings[1];
    if (!m || !this.#started(d, tx)) return;
    const to = this.#routes.get(d.path) ?? 'capture';
    const dst = to === 'capture' ? null : this.devices.get(to);
    if (to !== 'capture' && (!dst || dst.closed || !this.#started(dst, dst.rings[0]))) return;
    let moved = 0;
    const availIdx = this.#availIdx(m, tx);
    while (tx.lastAvail !== availIdx) {
      if (dst && !this.#hasBuffer(dst)) break;
      const head = m.view.getUint16(tx.avail + 4 + 2 * (tx.lastAvail & (tx.num - 1)), true);
      tx.lastAvail = (tx.lastAvail + 1) & 0xffff;
      const bytes = this.#readChain(d, tx, head);
      this.#pushUsed(m, tx, head, 0);
      moved++;
      if (bytes === null || bytes.length < NET_HDR) continue;
      const frame = bytes.subarray(NET_HDR);
      const out = this.transform ? this.transform(frame, this.#taken++) : [frame];
      for (const f of out) {
        if (dst) this.#deliver(dst, f);
        else d.captured.push(Buffer.from(f));
      }
      d.forwarded++;
    }
    if (moved > 0) {
      this.#signal(d, tx);
      if (dst) this.#signal(dst, dst.rings[0]);
    }
  }

  #hasBuffer(d: Device): boolean {
    const r = d.rings[0];
    return r.lastAvail !== this.#availIdx(d.mem!, r);
  }

  #readChain(d: Device, r: Ring, head: number): Buffer | null {
    const m = d.mem!;
    const parts: Buffer[] = [];
    let id = head;
    for (let hops = 0; hops < r.num; hops++) {
      if (id >= r.num) return null;
      const at = r.desc + 16 * id;
      const addr = m.view.getBigUint64(at, true);
      const len = m.view.getUint32(at + 8, true);
      const flags = m.view.getUint16(at + 12, true);
      const off = this.#gpa(d, addr, len);
      if (off === null || flags & DESC_F_WRITE) return null;
      parts.push(Buffer.from(m.buf, off, len));
      if (!(flags & DESC_F_NEXT)) return Buffer.concat(parts);
      id = m.view.getUint16(at + 14, true);
    }
    return null;
  }

  /** Write a frame into the next RX buffer of d; false when there is none (or it is too small). */
  #deliver(d: Device, frame: Uint8Array): boolean {
    const m = d.mem!;
    const r = d.rings[0];
    if (r.lastAvail === this.#availIdx(m, r)) return false;
    const head = m.view.getUint16(r.avail + 4 + 2 * (r.lastAvail & (r.num - 1)), true);
    r.lastAvail = (r.lastAvail + 1) & 0xffff;
    if (head >= r.num) return false;
    const at = r.desc + 16 * head;
    const addr = m.view.getBigUint64(at, true);
    const len = m.view.getUint32(at + 8, true);
    const flags = m.view.getUint16(at + 12, true);
    const off = this.#gpa(d, addr, len);
    if (off === null || !(flags & DESC_F_WRITE) || len < NET_HDR + frame.length) {
      this.#pushUsed(m, r, head, 0);
      return false;
    }
    m.bytes.fill(0, off, off + NET_HDR);
    m.view.setUint16(off + 10, 1, true); // num_buffers
    m.bytes.set(frame, off + NET_HDR);
    this.#pushUsed(m, r, head, NET_HDR + frame.length);
    return true;
  }

  #pushUsed(m: Memory, r: Ring, id: number, len: number): void {
    const idx = Atomics.load(m.u16, (r.used + 2) >> 1);
    const at = r.used + 4 + 8 * (idx & (r.num - 1));
    m.view.setUint32(at, id, true);
    m.view.setUint32(at + 4, len, true);
    Atomics.store(m.u16, (r.used + 2) >> 1, (idx + 1) & 0xffff);
  }

  #signal(d: Device, r: Ring): void {
    const m = d.mem;
    if (!m || r.callFd === null) return;
    if (Atomics.load(m.u16, r.avail >> 1) & AVAIL_F_NO_INTERRUPT) return;
    native.eventfdWrite(r.callFd, 1n);
  }

  #closeKick(r: Ring): void {
    if (r.kickPoll) native.pollClose(r.kickPoll);
    r.kickPoll = null;
    if (r.kickFd !== null) native.close(r.kickFd);
    r.kickFd = null;
  }

  #unmap(d: Device): void {
    if (!d.mem) return;
    native.munmap(d.mem.buf);
    native.close(d.mem.fd);
    d.mem = null;
  }

  #release(d: Device): void {
    if (d.closed) return;
    d.closed = true;
    for (const r of d.rings) {
      this.#closeKick(r);
      if (r.callFd !== null) native.close(r.callFd);
      r.callFd = null;
    }
    this.#unmap(d);
  }
}
