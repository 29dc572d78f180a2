// A guest on a real vhost-user port of a real datapath, in this process: a
// frontend (test/hostile/mem-frontend.ts) that sets up a Guest's memory and
// rings (test/native/guest.ts) with ordinary vhost-user messages, then sends
// and receives exact frames. Its connection, memory and rings stay the same
// across a handover, as a VM's do.
import { HostileFrontend } from '../hostile/mem-frontend.js';
import { Guest, macBytes, type RxFrame } from '../native/guest.js';

export class GuestPort {
  readonly mac: string;
  readonly guest: Guest;
  readonly fe: HostileFrontend;
  #got: RxFrame[] = [];

  private constructor(mac: string, guest: Guest, fe: HostileFrontend) {
    this.mac = mac;
    this.guest = guest;
    this.fe = fe;
  }

  static async connect(sock: string, mac: string, o: { regionSize?: number; memfdName?: string } = {}): Promise<GuestPort> {
    const guest = new Guest({ num: 256, regionSize: o.regionSize ?? 4 << 20, ...(o.memfdName ? { memfdName: o.memfdName } : {}) });
    let fe: HostileFrontend | null = null;
    try {
      fe = await HostileFrontend.connect(sock);
      await fe.negotiate();
      const r = guest.region();
      const ack = await fe.setMemTable([{ guestPhysAddr: r.gpa, memorySize: r.size, userspaceAddr: r.uaddr, mmapOffset: r.offset, fd: r.fd }]);
      if (ack !== 0n) throw new Error(`SET_MEM_TABLE on ${sock}: ${ack}`);
      for (const q of [0, 1] as const) {
        const v = guest.vring(q);
        for (const req of [
          { type: 'SET_VRING_CALL', needReply: true, index: q, fd: guest.call[q] },
          { type: 'SET_VRING_NUM', needReply: true, index: q, num: v.num },
          { type: 'SET_VRING_BASE', needReply: true, index: q, num: 0 },
          { type: 'SET_VRING_ADDR', needReply: true, index: q, flags: 0, desc: v.desc, avail: v.avail, used: v.used, log: 0n },
          { type: 'SET_VRING_KICK', needReply: true, index: q, fd: guest.kick[q] },
          { type: 'SET_VRING_ENABLE', needReply: true, index: q, enable: true },
        ] as const) {
          const ok = await fe.call(req);
          if (ok !== 0n) throw new Error(`${req.type} ring ${q} on ${sock}: ${ok}`);
        }
      }
      const p = new GuestPort(mac, guest, fe);
      guest.postRx(128);
      return p;
    } catch (err) {
      fe?.close();
      guest.close();
      throw err;
    }
  }

  /** Send frames (one TX chain each) and take back what the datapath completed. */
  send(frames: Uint8Array[]): void {
    this.guest.reclaimTx();
    this.guest.send(frames);
  }

  /** Every frame received so far (RX buffers are posted again as they are used). */
  received(): RxFrame[] {
    const now = this.guest.received();
    if (now.length > 0) this.guest.postRx(now.length);
    this.#got.push(...now);
    return this.#got;
  }

  close(): void {
    this.fe.close();
    this.guest.close();
  }
}

/** An Ethernet/IPv4/UDP frame of `size` bytes (at least 42). */
export function udpFrame(o: { dst: string; src: string; srcIp: string; dstIp: string; sport: number; dport: number; size?: number; seq?: number }): Uint8Array {
  const size = Math.max(o.size ?? 128, 46);
  const f = Buffer.alloc(size);
  macBytes(o.dst).copy(f, 0);
  macBytes(o.src).copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(size - 14, 16);
  f[22] = 64;
  f[23] = 17;
  Buffer.from(o.srcIp.split('.').map(Number)).copy(f, 26);
  Buffer.from(o.dstIp.split('.').map(Number)).copy(f, 30);
  f.writeUInt16BE(o.sport, 34);
  f.writeUInt16BE(o.dport, 36);
  f.writeUInt16BE(size - 34, 38);
  f.writeUInt32BE(o.seq ?? 0, 42);
  return f;
}
