// A minimal virtio-net "guest" for tests: real shared memory (a memfd mapped
// here and by the backend), real eventfds, one queue pair of split rings laid
// out by hand. It plays the driver side: posts TX chains and RX buffers,
// publishes avail indices, kicks when the backend has not set NO_NOTIFY, and
// reads the used rings back.
//
// The memfd is [guard | region | guard]: the region is what the backend gets
// (mmap_offset = guard), the guards are filled with a pattern so a test can
// prove the backend never wrote outside the region.
import { check, native } from '../../src/native/index.js';
import type { DpHandle, DpMemLimits, DpMemRegion, DpVringConfig } from '../../src/native/datapath-native.js';

/** The datapath's default caps (ziu-datapath --guest-mem-max 64G --guest-regions-max 8). */
export const LIMITS: DpMemLimits = { maxBytes: 64n << 30n, maxRegions: 8 };

const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const GUARD_BYTE = 0xa5;

export type TxLayout =
  | 'single' // one descriptor: header + frame
  | 'hdr-separate' // the header alone, then the frame
  | 'chained' // header + frame cut into small pieces (the header straddles two)
  | 'indirect'; // an indirect table: header, then the frame in pieces

export type RxLayout = 'single' | 'hdr-separate';

export interface GuestOptions {
  /** ring size of both queues (default 256) */
  num?: number;
  /** region size (default 4 MiB) */
  regionSize?: number;
  /** pattern-filled bytes before and after the region in the memfd (default 64 KiB) */
  guard?: number;
  /** guest-physical address of the region (what descriptors carry) */
  gpa?: bigint;
  /** frontend user address of the region (what ring addresses carry); differs from gpa on purpose */
  uaddr?: bigint;
  /** virtio_net_hdr size (default 12) */
  hdrLen?: 10 | 12;
  /** size of one buffer of the pool (default 2048) */
  bufSize?: number;
  /** piece size for the 'chained' and 'indirect' layouts (default 7, so the header straddles) */
  chunk?: number;
  /** the memfd's name, as /proc/<pid>/maps shows it (default ziu-test-guest) */
  memfdName?: string;
}

export interface RawDesc {
  /** guest-physical address */
  addr: bigint;
  len: number;
  write?: boolean;
  /** exact flags (NEXT, WRITE, INDIRECT), replacing what write and the position give */
  flags?: number;
  /** exact next index (pushChain: of the ring; rawTable: of the table), replacing the natural one */
  next?: number;
}

export const DESC_F_NEXT = F_NEXT;
export const DESC_F_WRITE = F_WRITE;
export const DESC_F_INDIRECT = F_INDIRECT;

export interface RxFrame {
  /** the frame, without virtio_net_hdr */
  frame: Uint8Array;
  /** the virtio_net_hdr as written by the backend */
  hdr: Uint8Array;
  /** used entries this frame took (num_buffers) */
  buffers: number;
  /** used->ring[].len of the first entry */
  usedLen: number;
}

interface Chain {
  descs: number[];
  bufs: number[];
}

class Queue {
  readonly descOff: number;
  readonly availOff: number;
  readonly usedOff: number;
  readonly free: number[] = [];
  readonly chains = new Map<number, Chain>();
  availIdx = 0;
  lastUsed = 0;
  constructor(
    readonly num: number,
    alloc: (bytes: number, align: number) => number,
  ) {
    this.descOff = alloc(16 * num, 16);
    this.availOff = alloc(6 + 2 * num, 2);
    this.usedOff = alloc(6 + 8 * num, 4);
    for (let i = num - 1; i >= 0; i--) this.free.push(i);
  }
}

export class Guest {
  readonly memFd: number;
  readonly kick: [number, number];
  readonly call: [number, number];
  readonly hdrLen: 10 | 12;
  readonly gpa: bigint;
  readonly uaddr: bigint;
  readonly regionSize: number;
  readonly guard: number;
  /** the whole memfd, guards included */
  readonly bytes: Uint8Array;
  private readonly map: ArrayBuffer;
  private readonly view: DataView;
  private readonly u16: Uint16Array;
  private readonly q: [Queue, Queue];
  private readonly bufSize: number;
  private readonly bufBase: number;
  private readonly bufFree: number[] = [];
  private readonly chunk: number;
  private closed = false;

  constructor(opts: GuestOptions = {}) {
    const num = opts.num ?? 256;
    this.regionSize = opts.regionSize ?? 4 << 20;
    this.guard = opts.guard ?? 64 << 10;
    this.gpa = opts.gpa ?? 0x1_0000_0000n;
    this.uaddr = opts.uaddr ?? 0x7f3a_0000_0000n;
    this.hdrLen = opts.hdrLen ?? 12;
    this.bufSize = opts.bufSize ?? 2048;
    this.chunk = opts.chunk ?? 7;
    const fileSize = this.guard * 2 + this.regionSize;
    this.memFd = check(native.memfdCreate(opts.memfdName ?? 'ziu-test-guest', 0), 'memfd_create');
    const fds: number[] = [this.memFd];
    try {
      check(native.ftruncate(this.memFd, fileSize), 'ftruncate');
      this.map = check(native.mmap(this.memFd, fileSize, 0, 0), 'mmap');
      this.bytes = new Uint8Array(this.map);
      this.view = new DataView(this.map);
      this.u16 = new Uint16Array(this.map);
      this.bytes.fill(GUARD_BYTE, 0, this.guard);
      this.bytes.fill(GUARD_BYTE, this.guard + this.regionSize);
      const efd = (): number => {
        const fd = check(native.eventfd(0, false), 'eventfd');
        fds.push(fd);
        return fd;
      };
      this.kick = [efd(), efd()];
      this.call = [efd(), efd()];
    } catch (err) {
      for (const fd of fds) native.close(fd);
      throw err;
    }
    let next = 0; // region offset
    const alloc = (bytes: number, align: number): number => {
      const at = Math.ceil(Math.max(next, 4096) / align) * align;
      next = at + bytes;
      return at;
    };
    this.q = [new Queue(num, (b) => alloc(b, 4096)), new Queue(num, (b) => alloc(b, 4096))];
    this.bufBase = Math.ceil(next / 4096) * 4096;
    const nbufs = Math.floor((this.regionSize - this.bufBase) / this.bufSize);
    for (let i = nbufs - 1; i >= 0; i--) this.bufFree.push(i);
  }

  /** The one region to hand to dpSetMemTable. */
  region(): DpMemRegion {
    return { gpa: this.gpa, size: BigInt(this.regionSize), uaddr: this.uaddr, offset: BigInt(this.guard), fd: this.memFd };
  }

  /** dpSetVring's argument for queue q (addresses are user addresses). */
  vring(q: 0 | 1): DpVringConfig {
    const x = this.q[q];
    return { num: x.num, desc: this.ua(x.descOff), avail: this.ua(x.availOff), used: this.ua(x.usedOff), lastAvail: 0 };
  }

  /** Guest-physical address of a region offset. */
  gpaAt(regionOff: number): bigint {
    return this.gpa + BigInt(regionOff);
  }

  ua(regionOff: number): bigint {
    return this.uaddr + BigInt(regionOff);
  }

  /** Queue frames for TX (one chain each), publish them with one avail idx update and kick if allowed. */
  send(frames: Uint8Array | Uint8Array[], layout: TxLayout = 'single', kick = true): void {
    for (const f of Array.isArray(frames) ? frames : [frames]) this.addTx(f, layout);
    this.publish(1, kick);
  }

  /** Queue a chain of raw descriptors (e.g. pointing outside the region) on queue q; returns its head. */
  pushChain(q: 0 | 1, descs: RawDesc[], opts: { publish?: boolean } = {}): number {
    const x = this.q[q];
    const ids = this.takeDescs(x, descs.length);
    descs.forEach((d, i) => {
      const last = i === descs.length - 1;
      const flags = d.flags ?? (d.write ? F_WRITE : 0) | (last ? 0 : F_NEXT);
      this.writeDesc(x, ids[i]!, d.addr, d.len, flags, d.next ?? (last ? 0 : ids[i + 1]!));
    });
    x.chains.set(ids[0]!, { descs: ids, bufs: [] });
    this.addAvail(x, ids[0]!);
    if (opts.publish ?? true) this.publish(q);
    return ids[0]!;
  }

  /** Write an indirect table of raw descriptors (linked 0 -> 1 -> ... unless given) into a pool buffer; its gpa. */
  rawTable(descs: RawDesc[]): bigint {
    const b = this.takeBuf();
    descs.forEach((d, i) => {
      const last = i === descs.length - 1;
      const flags = d.flags ?? (d.write ? F_WRITE : 0) | (last ? 0 : F_NEXT);
      this.writeDescAt(this.guard + this.bufOff(b) + 16 * i, d.addr, d.len, flags, d.next ?? (last ? 0 : i + 1));
    });
    return this.gpaAt(this.bufOff(b));
  }

  /**
   * Write every page of the memfd (its first byte, back as it is): the file
   * then holds every page, as a guest's does once it has written all its
   * memory. Allocated is not enough: a page fallocated and never written
   * reads as zeros, and mincore does not count it.
   */
  writeEveryPage(): void {
    for (let at = 0; at < this.bytes.length; at += 4096) this.bytes[at] = this.bytes[at]!;
  }

  /** Region offsets of the pages queue q's rings use (descriptor table, avail and used ring). */
  ringOffsets(q: 0 | 1): { off: number; len: number }[] {
    const x = this.q[q];
    return [
      { off: x.descOff, len: 16 * x.num },
      { off: x.availOff, len: 6 + 2 * x.num },
      { off: x.usedOff, len: 6 + 8 * x.num },
    ];
  }

  /** Queue q's descriptor table as it is now: every entry with a length, as region offset and length. */
  descriptors(q: 0 | 1): { off: number; len: number }[] {
    const x = this.q[q];
    const out: { off: number; len: number }[] = [];
    for (let i = 0; i < x.num; i++) {
      const at = this.guard + x.descOff + 16 * i;
      const len = this.view.getUint32(at + 8, true);
      if (len > 0) out.push({ off: Number(this.view.getBigUint64(at, true) - this.gpa), len });
    }
    return out;
  }

  /** Guest-physical address just past the region's end. */
  regionEnd(): bigint {
    return this.gpa + BigInt(this.regionSize);
  }

  /** Free the TX chains the backend has completed; returns how many. */
  reclaimTx(): number {
    return this.reclaim(1, () => {});
  }

  /** Post n RX buffer chains of `size` bytes each (header included); returns how many fit. */
  postRx(n: number, opts: { size?: number; layout?: RxLayout; kick?: boolean } = {}): number {
    const size = opts.size ?? this.bufSize;
    const layout = opts.layout ?? 'single';
    const x = this.q[0];
    let posted = 0;
    for (; posted < n; posted++) {
      const parts = layout === 'hdr-separate' ? [this.hdrLen, size - this.hdrLen] : [size];
      const nbufs = parts.reduce((a, p) => a + Math.ceil(p / this.bufSize), 0);
      if (x.free.length < parts.length || this.bufFree.length < nbufs || parts.some((p) => p > this.bufSize)) break;
      const ids = this.takeDescs(x, parts.length);
      const bufs = parts.map(() => this.bufFree.pop()!);
      parts.forEach((p, i) => {
        const last = i === parts.length - 1;
        this.writeDesc(x, ids[i]!, this.gpaAt(this.bufOff(bufs[i]!)), p, F_WRITE | (last ? 0 : F_NEXT), last ? 0 : ids[i + 1]!);
      });
      x.chains.set(ids[0]!, { descs: ids, bufs });
      this.addAvail(x, ids[0]!);
    }
    this.publish(0, opts.kick ?? true);
    return posted;
  }

  /** Frames the backend delivered since the last call (merged buffers joined); their buffers are freed. */
  received(): RxFrame[] {
    const out: RxFrame[] = [];
    let cur: { parts: Uint8Array[]; left: number; usedLen: number } | undefined;
    this.reclaim(0, (chain, len) => {
      const data = this.gather(chain, len);
      if (cur === undefined) {
        // num_buffers says how many used entries (the next ones) this frame spans.
        const nb = this.hdrLen === 12 && data.length >= 12 ? new DataView(data.buffer, data.byteOffset, data.byteLength).getUint16(10, true) : 1;
        cur = { parts: [data], left: Math.max(nb, 1) - 1, usedLen: len };
      } else {
        cur.parts.push(data);
        cur.left--;
      }
      if (cur.left === 0) {
        const all = Buffer.concat(cur.parts);
        const hdr = Uint8Array.from(all.subarray(0, Math.min(this.hdrLen, all.length)));
        out.push({ frame: Uint8Array.from(all.subarray(this.hdrLen)), hdr, buffers: cur.parts.length, usedLen: cur.usedLen });
        cur = undefined;
      }
    });
    return out;
  }

  /** Count frames delivered since the last call without copying them out (for throughput). */
  receivedCount(): number {
    let n = 0;
    this.reclaim(0, () => n++);
    return n;
  }

  /**
   * Throughput mode: put up to max completed chains of queue q straight back
   * on the avail ring, unchanged (TX: the same frame again; RX: the same empty
   * buffer), and publish once. Returns how many. Don't mix with received() /
   * reclaimTx() on the same queue.
   */
  recycle(q: 0 | 1, max = Infinity): number {
    const x = this.q[q];
    const end = this.usedIdx(q);
    let n = 0;
    while (x.lastUsed !== end && n < max) {
      this.addAvail(x, this.view.getUint32(this.guard + x.usedOff + 4 + 8 * (x.lastUsed % x.num), true));
      x.lastUsed = (x.lastUsed + 1) & 0xffff;
      n++;
    }
    if (n > 0) this.publish(q);
    return n;
  }

  /** The frame (without header) the backend wrote for RX used slot i, read from that chain's buffers now. */
  rxUsedFrame(i: number): Uint8Array {
    const { id, len } = this.usedEntry(0, i);
    const chain = this.q[0].chains.get(id);
    if (!chain) throw new Error(`guest: RX used slot ${i} names unknown head ${id}`);
    return this.gather(chain, len).subarray(this.hdrLen);
  }

  usedIdx(q: 0 | 1): number {
    return Atomics.load(this.u16, (this.guard + this.q[q].usedOff + 2) / 2)!;
  }

  usedFlags(q: 0 | 1): number {
    return Atomics.load(this.u16, (this.guard + this.q[q].usedOff) / 2)!;
  }

  availIdx(q: 0 | 1): number {
    return this.q[q].availIdx;
  }

  /** The used entry at used ring slot i of queue q. */
  usedEntry(q: 0 | 1, i: number): { id: number; len: number } {
    const at = this.guard + this.q[q].usedOff + 4 + 8 * (i % this.q[q].num);
    return { id: this.view.getUint32(at, true), len: this.view.getUint32(at + 4, true) };
  }

  /** Write avail->idx of queue q directly, bypassing the guest's own index (hostile tests). */
  writeAvailIdx(q: 0 | 1, idx: number): void {
    Atomics.store(this.u16, (this.guard + this.q[q].availOff + 2) / 2, idx);
  }

  /** Set or clear VRING_AVAIL_F_NO_INTERRUPT on queue q. */
  setNoInterrupt(q: 0 | 1, on: boolean): void {
    Atomics.store(this.u16, (this.guard + this.q[q].availOff) / 2, on ? 1 : 0);
  }

  /** TX chains posted and not yet completed. */
  txOutstanding(): number {
    return this.q[1].chains.size;
  }

  /** True while every guard byte still holds the pattern. */
  guardIntact(): boolean {
    const end = this.guard + this.regionSize;
    return this.bytes.subarray(0, this.guard).every((b) => b === GUARD_BYTE) && this.bytes.subarray(end).every((b) => b === GUARD_BYTE);
  }

  /** Read an eventfd (call) without blocking: the counter, or 0 when it was not signalled. */
  calls(q: 0 | 1): number {
    const v = native.eventfdRead(this.call[q]);
    if (typeof v === 'number') {
      if (v === -11) return 0; // EAGAIN
      check(v, 'read', { fd: this.call[q] });
    }
    return Number(v);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.munmap(this.map);
    for (const fd of [this.memFd, ...this.kick, ...this.call]) native.close(fd);
  }

  // ---- internals ----

  private bufOff(b: number): number {
    return this.bufBase + b * this.bufSize;
  }

  private takeDescs(x: Queue, n: number): number[] {
    if (x.free.length < n) throw new Error(`guest: ring full (${x.free.length} free descriptors, need ${n})`);
    return Array.from({ length: n }, () => x.free.pop()!);
  }

  private writeDesc(x: Queue, i: number, addr: bigint, len: number, flags: number, next: number): void {
    this.writeDescAt(this.guard + x.descOff + 16 * i, addr, len, flags, next);
  }

  private writeDescAt(at: number, addr: bigint, len: number, flags: number, next: number): void {
    this.view.setBigUint64(at, addr, true);
    this.view.setUint32(at + 8, len, true);
    this.view.setUint16(at + 12, flags, true);
    this.view.setUint16(at + 14, next, true);
  }

  private addAvail(x: Queue, head: number): void {
    this.view.setUint16(this.guard + x.availOff + 4 + 2 * (x.availIdx % x.num), head, true);
    x.availIdx = (x.availIdx + 1) & 0xffff;
  }

  /** Release-store avail->idx, then kick unless the backend set NO_NOTIFY (Atomics are seq-cst). */
  publish(q: 0 | 1, kick = true): void {
    const x = this.q[q];
    Atomics.store(this.u16, (this.guard + x.availOff + 2) / 2, x.availIdx);
    if (kick && !(this.usedFlags(q) & 1)) check(native.eventfdWrite(this.kick[q], 1n), 'write', { fd: this.kick[q] });
  }

  private takeBuf(): number {
    const b = this.bufFree.pop();
    if (b === undefined) throw new Error('guest: out of buffers');
    return b;
  }

  /** Copy bytes into a fresh pool buffer; its gpa. */
  private stage(bytes: Uint8Array, bufs: number[]): bigint {
    if (bytes.length > this.bufSize) throw new Error(`guest: piece of ${bytes.length} bytes > buffer size ${this.bufSize}`);
    const b = this.takeBuf();
    bufs.push(b);
    this.bytes.set(bytes, this.guard + this.bufOff(b));
    return this.gpaAt(this.bufOff(b));
  }

  private addTx(frame: Uint8Array, layout: TxLayout): void {
    const x = this.q[1];
    const hdr = new Uint8Array(this.hdrLen);
    const whole = Buffer.concat([hdr, frame]);
    const cut = (b: Uint8Array, size: number): Uint8Array[] => {
      const out: Uint8Array[] = [];
      for (let o = 0; o < b.length; o += size) out.push(b.subarray(o, o + size));
      return out;
    };
    let pieces: Uint8Array[];
    switch (layout) {
      case 'single':
        pieces = [whole];
        break;
      case 'hdr-separate':
        pieces = [hdr, ...cut(frame, this.bufSize)];
        break;
      case 'chained':
        pieces = cut(whole, this.chunk);
        break;
      case 'indirect':
        pieces = [hdr, ...cut(frame, this.chunk * 9)];
        break;
    }
    const bufs: number[] = [];
    if (layout === 'indirect') {
      // The table lives in a pool buffer too; its entries chain 0 -> 1 -> ...
      const [head] = this.takeDescs(x, 1);
      const table = this.takeBuf();
      bufs.push(table);
      pieces.forEach((p, i) => {
        const last = i === pieces.length - 1;
        this.writeDescAt(this.guard + this.bufOff(table) + 16 * i, this.stage(p, bufs), p.length, last ? 0 : F_NEXT, last ? 0 : i + 1);
      });
      this.writeDesc(x, head!, this.gpaAt(this.bufOff(table)), 16 * pieces.length, F_INDIRECT, 0);
      x.chains.set(head!, { descs: [head!], bufs });
      this.addAvail(x, head!);
      return;
    }
    const ids = this.takeDescs(x, pieces.length);
    pieces.forEach((p, i) => {
      const last = i === pieces.length - 1;
      this.writeDesc(x, ids[i]!, this.stage(p, bufs), p.length, last ? 0 : F_NEXT, last ? 0 : ids[i + 1]!);
    });
    x.chains.set(ids[0]!, { descs: ids, bufs });
    this.addAvail(x, ids[0]!);
  }

  /** Walk queue q's new used entries in order, hand each chain to fn, then free it. */
  private reclaim(q: 0 | 1, fn: (chain: Chain, len: number) => void): number {
    const x = this.q[q];
    const end = this.usedIdx(q);
    let n = 0;
    while (x.lastUsed !== end) {
      const { id, len } = this.usedEntry(q, x.lastUsed);
      x.lastUsed = (x.lastUsed + 1) & 0xffff;
      const chain = x.chains.get(id);
      if (!chain) throw new Error(`guest: backend completed unknown head ${id} on queue ${q}`);
      fn(chain, len);
      x.chains.delete(id);
      x.free.push(...chain.descs);
      this.bufFree.push(...chain.bufs);
      n++;
    }
    return n;
  }

  /** The first len bytes written into an RX chain's buffers. */
  private gather(chain: Chain, len: number): Uint8Array {
    const out = new Uint8Array(len);
    let o = 0;
    for (const d of chain.descs) {
      if (o >= len) break;
      const at = this.guard + this.q[0].descOff + 16 * d;
      const addr = this.view.getBigUint64(at, true);
      const dlen = this.view.getUint32(at + 8, true);
      const n = Math.min(dlen, len - o);
      const off = Number(addr - this.gpa) + this.guard;
      out.set(this.bytes.subarray(off, off + n), o);
      o += n;
    }
    return out;
  }
}

/** An Ethernet frame: dst, src, ethertype 0x88b5 (local experimental), payload. */
export function ethFrame(dst: string, src: string, payload: Uint8Array | string, ethertype = 0x88b5): Uint8Array {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const f = Buffer.alloc(14 + body.length);
  macBytes(dst).copy(f, 0);
  macBytes(src).copy(f, 6);
  f.writeUInt16BE(ethertype, 12);
  Buffer.from(body).copy(f, 14);
  return f;
}

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export const BROADCAST = 'ff:ff:ff:ff:ff:ff';

/**
 * Plug a guest into an engine the way the control plane would after a full
 * vhost-user setup: features, memory table, both rings, kick/call fds,
 * enabled and started. Returns the port id.
 */
let attached = 0;

export function attachGuest(
  h: DpHandle,
  guest: Guest,
  opts: { mrgRxbuf?: boolean; pollTx?: boolean; noCall?: boolean; name?: string } = {},
): number {
  const port = check(native.dpAddPort(h, 0, -1, opts.name ?? `guest${++attached}`), 'dpAddPort');
  check(native.dpSetFeatures(h, port, guest.hdrLen, opts.mrgRxbuf ?? false), 'dpSetFeatures');
  check(native.dpSetMemTable(h, port, [guest.region()], LIMITS), 'dpSetMemTable');
  for (const q of [0, 1] as const) {
    check(native.dpSetVring(h, port, q, guest.vring(q)), 'dpSetVring');
    check(native.dpSetKick(h, port, q, q === 1 && opts.pollTx ? -1 : guest.kick[q]), 'dpSetKick');
    check(native.dpSetCall(h, port, q, opts.noCall ? -1 : guest.call[q]), 'dpSetCall');
    check(native.dpSetEnabled(h, port, q, true), 'dpSetEnabled');
    check(native.dpStart(h, port, q), 'dpStart');
  }
  return port;
}
