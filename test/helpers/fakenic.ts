import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../../src/control/client.js';
import { logger } from '../../src/log.js';
import { check, native, type PollHandle } from '../../src/native/index.js';
import { launchDetached, processAlive, stopProcess } from '../../src/process/index.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ziu-fakenic.js');

export interface NicFlow {
  vf: number;
  sport: number;
  dport: number;
  src: string;
  dst: string;
  outVf: number;
  packets: number;
  bytes: number;
}

export interface NicStatus {
  capacity: number;
  ownerPid: number;
  ownerEpoch: number;
  claims: number;
  adopts: number;
  softResets: number;
  flowSets: number;
  flowDels: number;
  portAdds: number;
  bridgeAdds: number;
  injectedFailures: number;
  vfStats: Array<{ vf: number; rxPackets: number; txPackets: number; missed: number; fromHost: number; lost: number }>;
  flows: NicFlow[];
  bridge: Array<{ mac: string; vf: number }>;
}

/** A real ziu-fakenic process (the fake SmartNIC), ready, and a client for its control socket. */
export interface RunningNic {
  control: string;
  pid: number;
  call(req: Record<string, unknown>): Promise<{ body: Record<string, unknown>; fds: number[] }>;
  status(): Promise<NicStatus>;
  inject(inj: { failNext?: number; failPpm?: number; slowUs?: number; ops?: number; capacity?: number }): Promise<void>;
  /** the VM's end of a VF (ours to close) */
  vm(vf: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startNic(dir: string, o: { vfs?: number; flows?: number } = {}): Promise<RunningNic> {
  const control = path.join(dir, 'nic.sock');
  const l = await launchDetached({
    argv: [process.execPath, BIN, '--control', control, '--vfs', String(o.vfs ?? 2), '--flows', String(o.flows ?? 64)],
    env: { ZIU_LOG_LEVEL: 'warn' },
    readyTimeoutMs: 10_000,
    notifyPath: path.join(dir, 'nic-notify.sock'),
    what: 'ziu-fakenic',
    log: logger('test-fakenic'),
  });
  const call = async (req: Record<string, unknown>) => {
    const c = await ControlClient.connect(control);
    try {
      return await c.call<Record<string, unknown>>({ op: String(req['op']), ...req });
    } finally {
      c.close();
    }
  };
  return {
    control,
    pid: l.pid,
    call,
    status: async () => (await call({ op: 'status' })).body['nic'] as NicStatus,
    inject: async (inj) => void (await call({ op: 'inject', ...inj })),
    vm: async (vf) => (await call({ op: 'vm', vf })).fds[0]!,
    async stop() {
      if (processAlive(l.pid)) await stopProcess(l.pid, 2000);
      await l.exited;
      fs.rmSync(control, { force: true });
    },
  };
}

const MAGIC = 0x7a6f666c; // "zofl"

export interface Stream {
  id: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  srcMac: number;
  dstMac: number;
}

/** An Ethernet/IPv4/UDP frame carrying (magic, stream, seq) in its payload. */
export function frame(s: Stream, seq: number): Uint8Array {
  const b = Buffer.alloc(64);
  b.writeUIntBE(s.dstMac, 0, 6);
  b.writeUIntBE(s.srcMac, 6, 6);
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45;
  b.writeUInt16BE(50, 16);
  b[22] = 64;
  b[23] = 17;
  s.src.split('.').forEach((p, i) => (b[26 + i] = Number(p)));
  s.dst.split('.').forEach((p, i) => (b[30 + i] = Number(p)));
  b.writeUInt16BE(s.sport, 34);
  b.writeUInt16BE(s.dport, 36);
  b.writeUInt16BE(30, 38);
  b.writeUInt32BE(MAGIC, 42);
  b.writeUInt32BE(s.id, 46);
  b.writeUInt32BE(seq, 50);
  return new Uint8Array(b);
}

/** What a VM end received, per stream: distinct sequence numbers, duplicates, and the largest gap between arrivals. */
export class Sink {
  readonly seen = new Map<number, Set<number>>();
  duplicates = 0;
  maxGapMs = 0;
  #last = 0;
  #poll: PollHandle;
  #buf = new Uint8Array(9300);

  constructor(readonly fd: number) {
    this.#poll = check(native.pollStart(fd, native.POLL_READABLE, () => this.drain()), 'uv_poll_start', { fd });
  }

  drain(): void {
    for (;;) {
      const r = native.recvmsg(this.fd, this.#buf, 0);
      if (typeof r === 'number' || r.bytes === 0) return;
      const b = Buffer.from(this.#buf.buffer, 0, r.bytes);
      if (r.bytes < 54 || b.readUInt32BE(42) !== MAGIC) continue;
      const now = performance.now();
      if (this.#last) this.maxGapMs = Math.max(this.maxGapMs, now - this.#last);
      this.#last = now;
      const id = b.readUInt32BE(46);
      const set = this.seen.get(id) ?? new Set<number>();
      this.seen.set(id, set);
      const seq = b.readUInt32BE(50);
      if (set.has(seq)) this.duplicates++;
      set.add(seq);
    }
  }

  received(id: number): number {
    return this.seen.get(id)?.size ?? 0;
  }

  close(): void {
    native.pollClose(this.#poll);
  }
}

/** Send every stream's frames round-robin at `pps` in total from one VM end until stopped; counts what it sent. */
export class Source {
  readonly sent = new Map<number, number>();
  notSent = 0;
  #timer: NodeJS.Timeout;

  constructor(readonly fd: number, streams: Stream[], pps: number) {
    for (const s of streams) this.sent.set(s.id, 0);
    let due = 0;
    const t0 = performance.now();
    let k = 0;
    this.#timer = setInterval(() => {
      const want = Math.floor(((performance.now() - t0) * pps) / 1000);
      for (; due < want; due++) {
        const s = streams[k++ % streams.length]!;
        const seq = this.sent.get(s.id)!;
        const r = native.sendmsg(fd, frame(s, seq), []);
        if (typeof r === 'number' && r < 0) {
          this.notSent++;
          continue;
        }
        this.sent.set(s.id, seq + 1);
      }
    }, 2);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One request to a datapath's control socket; its reply's body. */
export async function dpCall(control: string, req: Record<string, unknown>): Promise<Record<string, unknown>> {
  const c = await ControlClient.connect(control);
  try {
    return (await c.call<Record<string, unknown>>({ op: String(req['op']), ...req })).body;
  } finally {
    c.close();
  }
}
