import fs from 'node:fs';
import { closeFds } from '../../native/fds.js';
import { encodeReply, hasOwnReply, ProtocolFeature, requestFds, VirtioFeature, type Request, type RequestOf } from '../../vhost/index.js';
import type { Engine, EngineRegion } from '../engine.js';
import { closeRegionFds } from '../guest-memory.js';

/**
 * Queue pairs per port (GET_QUEUE_NUM), as QEMU's `queues=N` and virtio-user's
 * `queues=N` use them; rings in virtio-net numbering: ring 2k carries frames
 * to the guest (RX of pair k), ring 2k+1 from it (TX of pair k).
 */
export const QUEUE_PAIRS = 8;
export const RINGS = 2 * QUEUE_PAIRS;

/**
 * What we offer, and nothing we do not implement: VERSION_1, protocol
 * features (bit 30), MRG_RXBUF (we always fill one chain per frame and say so
 * in num_buffers = 1). No EVENT_IDX, IN_ORDER, packed rings or dirty logging.
 */
// VIRTIO_NET_F_MQ: the frontend (QEMU's virtio-net, DPDK virtio-user) shows the guest as many queue pairs as
// GET_QUEUE_NUM allows only when the backend offers it; the control queue stays the frontend's own.
export const OFFERED_FEATURES = VirtioFeature.VERSION_1 | VirtioFeature.F_PROTOCOL_FEATURES | VirtioFeature.MRG_RXBUF | VirtioFeature.MQ;
export const OFFERED_PROTOCOL_FEATURES = ProtocolFeature.MQ | ProtocolFeature.REPLY_ACK | ProtocolFeature.STATUS;

/** The vhost-user state of one ring, as received from the frontend. */
export interface RingState {
  num: number | null;
  addr: { desc: bigint; avail: bigint; used: bigint } | null;
  /** SET_VRING_BASE, or where GET_VRING_BASE stopped it */
  base: number;
  kickFd: number | null;
  /** the frontend said "no fd" for kick: the engine polls the ring */
  kickNoFd: boolean;
  callFd: number | null;
  errFd: number | null;
  enabled: boolean;
  started: boolean;
}

export interface DeviceState {
  owner: boolean;
  features: bigint | null;
  protocolFeatures: bigint;
  status: number;
  mtu: number | null;
  regions: Array<EngineRegion>;
  rings: RingState[];
}

function freshRing(): RingState {
  return { num: null, addr: null, base: 0, kickFd: null, kickNoFd: false, callFd: null, errFd: null, enabled: false, started: false };
}

function freshDevice(): DeviceState {
  return { owner: false, features: null, protocolFeatures: 0n, status: 0, mtu: null, regions: [], rings: Array.from({ length: RINGS }, freshRing) };
}

/** A ring the frontend never touched: a handover need not carry it. */
export function isFreshRing(r: RingState): boolean {
  return r.num === null && r.addr === null && r.base === 0 && r.kickFd === null && !r.kickNoFd && r.callFd === null && r.errFd === null && !r.enabled && !r.started;
}

/** Why a connection must be closed: the frontend broke the protocol (not merely a request that failed). */
export class ProtocolViolation extends Error {}

/**
 * Why a frontend's kick, call or err fd is refused, or null. Only a plain
 * eventfd will do: anything else (a pipe, a socket, a file) can block the
 * packet thread or wake it for ever (a pipe without writers is EPOLLHUP until
 * closed), and a semaphore eventfd (EFD_SEMAPHORE) gives up one count per
 * read, so a kick never empties. The fd number is ours once received, so
 * what /proc says about it cannot change under us (no TOCTOU); its flags
 * (O_NONBLOCK) can, which the engine copes with (docs/datapath.md).
 */
export function eventfdProblem(fd: number): string | null {
  let link: string;
  let info: string;
  try {
    link = fs.readlinkSync(`/proc/self/fd/${fd}`);
    info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch (err) {
    return `cannot be inspected (${(err as Error).message})`;
  }
  if (link !== 'anon_inode:[eventfd]' || !/^eventfd-count:/m.test(info)) return `is not an eventfd (${link})`;
  if (/^eventfd-semaphore:\s*1\s*$/m.test(info)) return 'is a semaphore eventfd (EFD_SEMAPHORE): reading it never empties it';
  return null;
}

/** Take a kick, call or err fd only if it is a plain eventfd; else close it and drop the connection. */
function acceptEventfd(fd: number | null, what: string, ring: number): number | null {
  if (fd === null) return null;
  const problem = eventfdProblem(fd);
  if (problem === null) return fd;
  closeFds([fd]);
  throw new ProtocolViolation(`the ${what} fd of ring ${ring} ${problem}`);
}

type Handlers = { [T in Request['type']]: (req: RequestOf<T>) => Buffer | null };

/**
 * The device side of a vhost-user port: the state the frontend set up, one
 * method per request, and the engine port programmed to match. Owns every fd
 * the frontend sent (regions, kick, call, err).
 */
export class VhostDevice {
  readonly enginePort: number;
  #engine: Engine;
  #onResync: (ring: number, base: number, lastAvail: number) => void;
  state: DeviceState = freshDevice();

  constructor(engine: Engine, name: string, onResync: (ring: number, base: number, lastAvail: number) => void) {
    this.#engine = engine;
    this.#onResync = onResync;
    this.enginePort = engine.addPort('vhost', -1, name);
  }

  /** Handle one request; returns the reply to send, or null. Throws to refuse it (ProtocolViolation: drop the connection). */
  handle(req: Request): Buffer | null {
    // Rings past the first pair exist only with VHOST_USER_PROTOCOL_F_MQ (decodeRequest already refused any past RINGS).
    if ('index' in req && req.index >= 2 && (this.state.protocolFeatures & ProtocolFeature.MQ) === 0n) {
      closeFds(requestFds(req));
      throw new ProtocolViolation(`ring ${req.index} needs VHOST_USER_PROTOCOL_F_MQ, which the frontend did not negotiate: it has rings 0 and 1`);
    }
    return (this.#handlers[req.type] as (r: Request) => Buffer | null)(req);
  }

  /** The REPLY_ACK a request asked for, if the frontend negotiated it. */
  #ack(req: Request): Buffer | null {
    return req.needReply && !hasOwnReply(req.type) && (this.state.protocolFeatures & ProtocolFeature.REPLY_ACK) !== 0n ? encodeReply(req, { ok: true }) : null;
  }

  #handlers: Handlers = {
    GET_FEATURES: (req) => encodeReply(req, { features: OFFERED_FEATURES }),
    SET_FEATURES: (req) => {
      const extra = req.features & ~OFFERED_FEATURES;
      if (extra !== 0n) throw new ProtocolViolation(`features 0x${req.features.toString(16)} include 0x${extra.toString(16)}, never offered`);
      this.state.features = req.features;
      this.applyFeatures(req.features);
      // Without protocol features there is no SET_VRING_ENABLE (and no MQ: one pair): rings are enabled now.
      if ((req.features & VirtioFeature.F_PROTOCOL_FEATURES) === 0n) {
        for (const [q, r] of this.state.rings.slice(0, 2).entries()) {
          r.enabled = true;
          this.#engine.setEnabled(this.enginePort, q, true);
        }
      }
      return this.#ack(req);
    },
    GET_PROTOCOL_FEATURES: (req) => encodeReply(req, { features: OFFERED_PROTOCOL_FEATURES }),
    SET_PROTOCOL_FEATURES: (req) => {
      const extra = req.features & ~OFFERED_PROTOCOL_FEATURES;
      if (extra !== 0n) throw new ProtocolViolation(`protocol features include 0x${extra.toString(16)}, never offered`);
      this.state.protocolFeatures = req.features;
      return this.#ack(req);
    },
    GET_QUEUE_NUM: (req) => encodeReply(req, { queues: QUEUE_PAIRS }),
    SET_OWNER: (req) => {
      this.state.owner = true;
      return this.#ack(req);
    },
    RESET_OWNER: (req) => {
      // Deprecated; QEMU sends it on stop. Stop the rings, keep the connection.
      for (const [q, r] of this.state.rings.entries()) this.#stopRing(q, r);
      return this.#ack(req);
    },
    SET_MEM_TABLE: (req) => {
      this.#setMemTable(req);
      return this.#ack(req);
    },
    SET_VRING_NUM: (req) => {
      this.state.rings[req.index]!.num = req.num;
      return this.#ack(req);
    },
    SET_VRING_ADDR: (req) => {
      this.state.rings[req.index]!.addr = { desc: req.desc, avail: req.avail, used: req.used };
      return this.#ack(req);
    },
    SET_VRING_BASE: (req) => {
      this.state.rings[req.index]!.base = req.num & 0xffff;
      return this.#ack(req);
    },
    GET_VRING_BASE: (req) => {
      const r = this.state.rings[req.index]!;
      this.#stopRing(req.index, r);
      return encodeReply(req, { num: r.base });
    },
    SET_VRING_KICK: (req) => {
      this.#setKick(req);
      return this.#ack(req);
    },
    SET_VRING_CALL: (req) => {
      const fd = acceptEventfd(req.fd, 'call', req.index);
      const r = this.state.rings[req.index]!;
      closeFds([r.callFd]);
      r.callFd = fd;
      this.#engine.setCall(this.enginePort, req.index, fd ?? -1);
      return this.#ack(req);
    },
    SET_VRING_ERR: (req) => {
      const fd = acceptEventfd(req.fd, 'err', req.index);
      const r = this.state.rings[req.index]!;
      closeFds([r.errFd]);
      r.errFd = fd;
      return this.#ack(req);
    },
    SET_VRING_ENABLE: (req) => {
      this.state.rings[req.index]!.enabled = req.enable;
      this.#engine.setEnabled(this.enginePort, req.index, req.enable);
      return this.#ack(req);
    },
    // A migrated guest announcing itself; the bridge learns from its traffic anyway.
    SEND_RARP: (req) => this.#ack(req),
    NET_SET_MTU: (req) => {
      this.state.mtu = req.mtu;
      return this.#ack(req);
    },
    SET_STATUS: (req) => {
      this.state.status = req.status;
      return this.#ack(req);
    },
    GET_STATUS: (req) => encodeReply(req, { status: this.state.status }),
    // CONFIG is not offered: an empty payload reports failure.
    GET_CONFIG: (req) => encodeReply(req, { data: null }),
    SET_CONFIG: (req) => this.#neverOffered(req),
    SET_LOG_BASE: (req) => this.#neverOffered(req),
    SET_LOG_FD: (req) => this.#neverOffered(req),
    GET_MAX_MEM_SLOTS: (req) => this.#neverOffered(req),
    ADD_MEM_REG: (req) => this.#neverOffered(req),
    REM_MEM_REG: (req) => this.#neverOffered(req),
  };

  #neverOffered(req: Request): never {
    closeFds(requestFds(req));
    throw new ProtocolViolation('needs a protocol feature this backend never offered');
  }

  applyFeatures(features: bigint): void {
    const modern = (features & (VirtioFeature.VERSION_1 | VirtioFeature.MRG_RXBUF)) !== 0n;
    this.#engine.setFeatures(this.enginePort, modern ? 12 : 10, (features & VirtioFeature.MRG_RXBUF) !== 0n);
  }

  #setMemTable(req: RequestOf<'SET_MEM_TABLE'>): void {
    const d = this.state;
    // The engine re-translates ring addresses against the new table: stop the
    // started rings first (completing what they consumed), restart them after.
    const restart: number[] = [];
    for (const [q, r] of d.rings.entries()) {
      if (r.started) {
        this.#stopRing(q, r);
        restart.push(q);
      }
    }
    const regions = req.regions.map((r) => ({ gpa: r.guestPhysAddr, size: r.memorySize, uaddr: r.userspaceAddr, offset: r.mmapOffset, fd: r.fd }));
    try {
      // Refused (caps, a file whose faults can block): the old table is still mapped.
      this.#engine.setMemTable(this.enginePort, regions);
    } catch (err) {
      closeRegionFds(regions.map((r) => r.fd));
      // With REPLY_ACK the connection stays: leave the rings as they were.
      if (d.regions.length > 0) for (const q of restart) this.#startRing(q, d.rings[q]!);
      throw err;
    }
    closeFds(d.regions.map((r) => r.fd));
    d.regions = regions;
    for (const q of restart) this.#startRing(q, d.rings[q]!);
  }

  #setKick(req: RequestOf<'SET_VRING_KICK'>): void {
    const fd = acceptEventfd(req.fd, 'kick', req.index);
    const r = this.state.rings[req.index]!;
    closeFds([r.kickFd]);
    r.kickFd = fd;
    r.kickNoFd = fd === null;
    this.#engine.setKick(this.enginePort, req.index, fd ?? -1);
    // A ring starts on kick (the vhost-user spec, "Starting and stopping rings"): its size and addresses must be known by now.
    if (r.started) this.#stopRing(req.index, r);
    this.#startRing(req.index, r);
  }

  #startRing(q: number, r: RingState): void {
    if (r.num === null || r.addr === null) {
      throw new ProtocolViolation(`ring ${q} kicked before SET_VRING_NUM and SET_VRING_ADDR`);
    }
    if (this.state.regions.length === 0) throw new ProtocolViolation(`ring ${q} kicked before SET_MEM_TABLE`);
    this.#engine.setVring(this.enginePort, q, { num: r.num, ...r.addr, lastAvail: r.base });
    this.#engine.start(this.enginePort, q);
    // dpStart takes last_avail from used->idx: a frontend reconnecting to a new
    // backend sends base 0 (virtio-user), and once every consumed chain is
    // completed the two are equal.
    const now = this.#engine.rings(this.enginePort)[q]?.lastAvail;
    if (now !== undefined && now !== r.base) {
      this.#onResync(q, r.base, now);
      r.base = now;
    }
    r.started = true;
  }

  #stopRing(q: number, r: RingState): void {
    if (!r.started) return;
    r.base = this.#engine.stop(this.enginePort, q);
    r.started = false;
  }

  /** Stop every ring and forget the device: the next frontend starts from scratch. */
  reset(): void {
    const d = this.state;
    for (const [q, r] of d.rings.entries()) {
      if (isFreshRing(r)) continue; // the engine never heard of it either
      if (r.started) this.#engine.stop(this.enginePort, q);
      this.#engine.setKick(this.enginePort, q, -1);
      this.#engine.setCall(this.enginePort, q, -1);
      this.#engine.setEnabled(this.enginePort, q, false);
      closeFds([r.kickFd, r.callFd, r.errFd]);
    }
    this.#engine.setMemTable(this.enginePort, []);
    closeFds(d.regions.map((r) => r.fd));
    this.state = freshDevice();
  }

  /**
   * Signal every call fd once: the guest looks at what was completed across
   * the gap. The worker writes them on its next pass, under its guard: a
   * guest's eventfd may have been made blocking, and this thread must not
   * block on it either.
   */
  signalCalls(): void {
    this.#engine.signalCalls(this.enginePort);
  }

  /** reset(), and the engine port goes too. */
  close(): void {
    this.reset();
    this.#engine.removePort(this.enginePort);
  }
}
