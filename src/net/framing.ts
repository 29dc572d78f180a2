import { ZiuError } from '../errors.js';
import { MAX_FDS_PER_MESSAGE, type Chunk, type UnixSocket } from './socket.js';
import { closeFds } from '../native/fds.js';

/** How a protocol frames its messages: a fixed header that tells the body size. */
export interface FrameFormat {
  name: string;
  headerSize: number;
  /** body bytes announced by a complete header */
  bodySize(header: Buffer): number;
  /** the largest body accepted; larger is a protocol error */
  maxBody: number;
  /**
   * The most fds one message may carry, and so the most a connection may
   * leave waiting with a message it has not finished; more is a protocol
   * error (the connection is dropped, every fd closed). Default SCM_MAX_FD
   * (253): one sendmsg carries no more, and a message's fds travel with its
   * first byte.
   */
  maxFds?: number;
}

/** A complete message: header + body, and the fds that travelled with it (owned by the receiver). */
export interface Frame {
  header: Buffer;
  body: Buffer;
  fds: number[];
}

interface FdMark {
  /** stream position of the last byte of the chunk the fds came with */
  pos: number;
  fds: number[];
}

/**
 * Cuts a byte stream into messages and ties each received fd to its message.
 *
 * On a unix stream socket the kernel delivers the fds of a sendmsg with the
 * read that returns that sendmsg's data, and ends that read at the end of that
 * data at the latest. So the last byte of a chunk that carried fds belongs to
 * the message the fds were sent with, whatever came before it in the chunk.
 * Seqpacket chunks are whole messages, which is the same rule.
 */
export class Framer {
  readonly format: FrameFormat;
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0; // stream position of #buf[0]
  #marks: FdMark[] = [];

  constructor(format: FrameFormat) {
    this.format = format;
  }

  /** Bytes received but not yet part of a complete message. */
  get buffered(): number {
    return this.#buf.length;
  }

  /** Feed one chunk; returns every message it completed, in order. Throws on a protocol error (fds closed). */
  push(chunk: Chunk): Frame[] {
    if (chunk.data.length > 0) {
      if (chunk.fds.length > 0) this.#marks.push({ pos: this.#pos + this.#buf.length + chunk.data.length - 1, fds: chunk.fds });
      this.#buf = this.#buf.length === 0 ? chunk.data : Buffer.concat([this.#buf, chunk.data]);
    } else if (chunk.fds.length > 0) {
      closeFds(chunk.fds);
    }
    const out: Frame[] = [];
    const { headerSize, maxBody } = this.format;
    const maxFds = this.format.maxFds ?? MAX_FDS_PER_MESSAGE;
    while (this.#buf.length >= headerSize) {
      const header = this.#buf.subarray(0, headerSize);
      const size = this.format.bodySize(header);
      if (!Number.isInteger(size) || size < 0 || size > maxBody) {
        this.discard();
        closeFds(out.flatMap((f) => f.fds));
        throw new ZiuError(
          'ERR_ZIU_BAD_MESSAGE',
          `${this.format.name}: message announces ${size} body bytes; at most ${maxBody} are allowed`,
        );
      }
      const total = headerSize + size;
      if (this.#buf.length < total) break;
      const end = this.#pos + total;
      const fds: number[] = [];
      while (this.#marks.length > 0 && this.#marks[0]!.pos < end) fds.push(...this.#marks.shift()!.fds);
      out.push({
        header: Buffer.from(header),
        body: Buffer.from(this.#buf.subarray(headerSize, total)),
        fds,
      });
      this.#buf = this.#buf.subarray(total);
      this.#pos = end;
      if (fds.length > maxFds) {
        this.discard();
        closeFds(out.flatMap((f) => f.fds));
        throw new ZiuError('ERR_ZIU_TOO_MANY_FDS', `${this.format.name}: a message came with ${fds.length} fds; at most ${maxFds} are allowed`);
      }
    }
    // A peer that dribbles fds and never finishes the message would make us hold them without end.
    const waiting = this.#marks.reduce((n, m) => n + m.fds.length, 0);
    if (waiting > maxFds) {
      const have = this.#buf.length;
      this.discard();
      closeFds(out.flatMap((f) => f.fds));
      throw new ZiuError(
        'ERR_ZIU_TOO_MANY_FDS',
        `${this.format.name}: the peer sent ${waiting} fds with a message it has not finished (${have} bytes so far); at most ${maxFds} are allowed`,
      );
    }
    return out;
  }

  /**
   * The peer closed: an incomplete message is an error naming how much of it
   * arrived. Any fds that came with it are closed.
   */
  end(): void {
    if (this.#buf.length === 0) return;
    const have = this.#buf.length;
    let detail = `${have} of ${this.format.headerSize} header bytes`;
    if (have >= this.format.headerSize) {
      const want = this.format.headerSize + this.format.bodySize(this.#buf.subarray(0, this.format.headerSize));
      detail = `${have} of ${want} bytes`;
    }
    this.discard();
    throw new ZiuError('ERR_ZIU_PEER_CLOSED_MID_MESSAGE', `${this.format.name}: the peer closed in the middle of a message (${detail})`);
  }

  /**
   * The incomplete message buffered so far and the fds that came with it,
   * still owned by the framer: a handover sends copies of them on (SCM_RIGHTS
   * duplicates the fds), and this side keeps going if the handover is undone.
   */
  pending(): { data: Buffer; fds: number[] } {
    return { data: Buffer.from(this.#buf), fds: this.#marks.flatMap((m) => m.fds) };
  }

  /** Drop buffered bytes and close their fds. */
  discard(): void {
    closeFds(this.#marks.flatMap((m) => m.fds));
    this.#marks = [];
    this.#pos += this.#buf.length;
    this.#buf = Buffer.alloc(0);
  }
}

export interface FramedEvents {
  onFrame(frame: Frame): void;
  /** the peer closed (cleanly: err undefined) or the stream broke (err says why) */
  onClose(err?: Error): void;
}

/** Wire a socket to a framer: frames out, one close notification, nothing leaked. */
export function readFrames(socket: UnixSocket, format: FrameFormat, events: FramedEvents, options: { initial?: Chunk } = {}): Framer {
  const framer = new Framer(format);
  // Bytes (and fds) of an incomplete message read by a previous owner of the socket: they come first.
  if (options.initial && (options.initial.data.length > 0 || options.initial.fds.length > 0)) {
    for (const f of framer.push(options.initial)) events.onFrame(f);
  }
  let done = false;
  const finish = (err?: Error): void => {
    if (done) return;
    done = true;
    framer.discard();
    if (!socket.closed) socket.close();
    events.onClose(err);
  };
  socket.on('data', (chunk) => {
    if (done) {
      closeFds(chunk.fds);
      return;
    }
    let frames: Frame[];
    try {
      frames = framer.push(chunk);
    } catch (err) {
      finish(err as Error);
      return;
    }
    for (const f of frames) {
      if (done) {
        closeFds(f.fds);
        continue;
      }
      events.onFrame(f);
    }
  });
  socket.on('end', () => {
    try {
      framer.end();
      finish();
    } catch (err) {
      finish(err as Error);
    }
  });
  socket.on('error', (err) => finish(err));
  socket.on('close', () => finish());
  socket.resume();
  return framer;
}

/** ziu's own framing for its control sockets: u32 little-endian body length, then the body. */
export const LENGTH_PREFIXED: FrameFormat = {
  name: 'ziu message',
  headerSize: 4,
  bodySize: (h) => h.readUInt32LE(0),
  maxBody: 16 * 1024 * 1024,
};

export function encodeLengthPrefixed(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32LE(body.length, 0);
  out.set(body, 4);
  return out;
}
