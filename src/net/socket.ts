import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { dirname as pathDirname, join as pathJoin } from 'node:path';
import { constants } from 'node:os';
import { ZiuError, hasCode, sysError } from '../errors.js';
import { check, closeFd, native, type PollHandle } from '../native/index.js';
import { closeFds } from '../native/fds.js';

export type SocketKind = 'stream' | 'seqpacket';

/** sun_path holds 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;
/** The kernel's limit of fds in one message (SCM_MAX_FD). */
export const MAX_FDS_PER_MESSAGE = 253;

const { EAGAIN, EPIPE, ECONNRESET, EADDRINUSE, EBADF } = constants.errno;

const kindToType = (kind: SocketKind): number => (kind === 'stream' ? native.SOCK_STREAM : native.SOCK_SEQPACKET);

export function checkSocketPath(p: string): void {
  if (p.length === 0) throw new ZiuError('ERR_ZIU_SOCKET_PATH', 'socket path is empty');
  if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
    throw new ZiuError(
      'ERR_ZIU_SOCKET_PATH',
      `socket path '${p}' is ${Buffer.byteLength(p)} bytes; unix sockets allow at most ${MAX_SOCKET_PATH}`,
    );
  }
}

export function checkFdCount(fds: readonly number[], where: string): void {
  if (fds.length > MAX_FDS_PER_MESSAGE) {
    throw new ZiuError(
      'ERR_ZIU_TOO_MANY_FDS',
      `${where}: ${fds.length} fds in one message; the kernel carries at most ${MAX_FDS_PER_MESSAGE} (SCM_MAX_FD)`,
    );
  }
  for (const fd of fds) {
    if (!Number.isInteger(fd) || fd < 0) throw new ZiuError('ERR_ZIU_BAD_FD', `${where}: '${fd}' is not an fd`);
  }
}

/** One read from the socket: bytes and the fds that came with them (owned by the receiver). */
export interface Chunk {
  data: Buffer;
  fds: number[];
}

interface PendingSend {
  data: Uint8Array;
  offset: number;
  fds: number[];
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface UnixSocketEvents {
  data: [chunk: Chunk];
  end: [];
  error: [err: Error];
  close: [];
}

/**
 * A connected unix socket (stream or seqpacket) that sends and receives fds.
 *
 * Non-blocking throughout: reads are driven by uv_poll readiness and delivered
 * as 'data' events; sends that would block are queued and finished when the
 * socket is writable. The socket owns its fd; fds received are handed to the
 * 'data' listener, which owns them from then on (a chunk nobody listens to has
 * its fds closed, so they never leak).
 */
export class UnixSocket extends EventEmitter<UnixSocketEvents> {
  readonly kind: SocketKind;
  #fd: number;
  #poll: PollHandle | null = null;
  #queue: PendingSend[] = [];
  #readBuf: Buffer;
  #reading = false;
  #closed = false;
  #ended = false;

  private constructor(fd: number, kind: SocketKind, readSize: number) {
    super();
    this.#fd = fd;
    this.kind = kind;
    this.#readBuf = Buffer.allocUnsafe(readSize);
  }

  /** Take ownership of a connected socket fd (from accept, socketpair, or SCM_RIGHTS). */
  static adopt(fd: number, options: { readSize?: number } = {}): UnixSocket {
    const type = check(native.sockType(fd), 'getsockopt', { fd });
    const kind: SocketKind | null =
      type === native.SOCK_STREAM ? 'stream' : type === native.SOCK_SEQPACKET ? 'seqpacket' : null;
    if (kind === null) throw new ZiuError('ERR_ZIU_BAD_FD', `fd ${fd} is not a unix stream or seqpacket socket`);
    return new UnixSocket(fd, kind, options.readSize ?? 64 * 1024);
  }

  static pair(kind: SocketKind = 'stream'): [UnixSocket, UnixSocket] {
    const [a, b] = check(native.socketpair(kindToType(kind)), 'socketpair');
    return [new UnixSocket(a, kind, 64 * 1024), new UnixSocket(b, kind, 64 * 1024)];
  }

  /** Connect to a listening socket; EAGAIN (full backlog) is retried a few times. */
  static async connect(path: string, kind: SocketKind = 'stream'): Promise<UnixSocket> {
    checkSocketPath(path);
    const fd = check(native.socket(kindToType(kind)), 'socket');
    try {
      for (let attempt = 0; ; attempt++) {
        const r = native.connect(fd, path);
        if (r === 0) break;
        if (r === -EAGAIN && attempt < 50) {
          await new Promise((resolve) => setTimeout(resolve, 2));
          continue;
        }
        check(r, 'connect', { path });
      }
    } catch (err) {
      native.close(fd);
      throw err;
    }
    return new UnixSocket(fd, kind, 64 * 1024);
  }

  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Start delivering 'data' events. */
  resume(): this {
    this.#ensureOpen('recvmsg');
    this.#reading = true;
    this.#updatePoll();
    return this;
  }

  /** Stop reading: bytes and fds wait in the kernel socket buffer. */
  pause(): this {
    this.#reading = false;
    if (!this.#closed) this.#updatePoll();
    return this;
  }

  /**
   * Send one message with fds attached. The fds are only borrowed: the kernel
   * duplicates them into the message, the caller keeps and closes its own.
   * On a stream socket a partial write continues later without the fds (they
   * travelled with the first byte); a seqpacket message goes whole or not at all.
   */
  send(data: Uint8Array, fds: readonly number[] = []): Promise<void> {
    try {
      this.#ensureOpen('sendmsg');
      checkFdCount(fds, `sendmsg (fd ${this.#fd})`);
      if (this.kind === 'seqpacket' && data.length === 0) {
        throw new ZiuError('ERR_ZIU_EMPTY_MESSAGE', 'an empty seqpacket message cannot be told apart from a closed peer');
      }
      if (fds.length > 0 && data.length === 0) {
        throw new ZiuError('ERR_ZIU_EMPTY_MESSAGE', 'fds must travel with at least one byte of data');
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ data, offset: 0, fds: [...fds], resolve, reject });
      if (this.#queue.length === 1) this.#flush();
    });
  }

  /** Close the socket. Queued sends fail; fds already received stay with their owners. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#poll) {
      native.pollClose(this.#poll);
      this.#poll = null;
    }
    const err = new ZiuError('ERR_ZIU_SOCKET_CLOSED', `socket fd ${this.#fd} closed with a send pending`);
    for (const p of this.#queue.splice(0)) p.reject(err);
    closeFd(this.#fd);
    this.emit('close');
  }

  /** Give up ownership of the fd without closing it (to pass it on). */
  release(): number {
    this.#ensureOpen('release');
    this.#closed = true;
    if (this.#poll) {
      native.pollClose(this.#poll);
      this.#poll = null;
    }
    const fd = this.#fd;
    this.#fd = -1;
    return fd;
  }

  #ensureOpen(op: string): void {
    if (this.#closed) throw new ZiuError('ERR_ZIU_SOCKET_CLOSED', `${op} on a closed socket`);
  }

  #updatePoll(): void {
    let events = 0;
    if (this.#reading && !this.#ended) events |= native.POLL_READABLE | native.POLL_DISCONNECT;
    if (this.#queue.length > 0) events |= native.POLL_WRITABLE;
    if (this.#poll === null) {
      if (events === 0) return;
      this.#poll = check(
        native.pollStart(this.#fd, events, (status, ev) => this.#onPoll(status, ev)),
        'uv_poll_start',
        { fd: this.#fd },
      );
    } else {
      check(native.pollUpdate(this.#poll, events), 'uv_poll_start', { fd: this.#fd });
    }
  }

  #onPoll(status: number, events: number): void {
    if (this.#closed) return;
    if (status < 0) {
      // libuv reports POLLERR as EBADF: the fd is still ours and open, the socket has an
      // error pending, which on a unix stream socket means the peer reset the connection.
      const cause = sysError(status, 'uv_poll', { fd: this.#fd });
      this.#fail(status === -EBADF ? new ZiuError('ERR_ZIU_PEER_CLOSED', `socket fd ${this.#fd}: the peer reset the connection`, { cause }) : cause);
      return;
    }
    if (events & native.POLL_WRITABLE) this.#flush();
    if (!this.#closed && this.#reading && events & (native.POLL_READABLE | native.POLL_DISCONNECT)) this.#readSome();
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const p = this.#queue[0]!;
      const slice = p.offset === 0 ? p.data : p.data.subarray(p.offset);
      const n = native.sendmsg(this.#fd, slice, p.fds);
      if (n === -EAGAIN) break;
      if (n < 0) {
        this.#queue.shift();
        const err =
          n === -EPIPE || n === -ECONNRESET
            ? new ZiuError('ERR_ZIU_PEER_CLOSED', `sendmsg (fd ${this.#fd}): the peer closed the connection`, {
                cause: sysError(n, 'sendmsg', { fd: this.#fd }),
              })
            : sysError(n, 'sendmsg', { fd: this.#fd });
        p.reject(err);
        continue;
      }
      p.fds = [];
      p.offset += n;
      if (p.offset >= p.data.length) {
        this.#queue.shift();
        p.resolve();
      }
    }
    if (!this.#closed) this.#updatePoll();
  }

  /** Called before bytes are read off the socket (a handover marks what a successor consumed); null: nothing. */
  beforeRead: (() => void) | null = null;

  #readSome(): void {
    this.beforeRead?.();
    // Bounded so that one busy peer cannot starve the event loop.
    for (let i = 0; i < 64 && this.#reading && !this.#closed; i++) {
      const r = native.recvmsg(this.#fd, this.#readBuf, MAX_FDS_PER_MESSAGE);
      if (typeof r === 'number') {
        if (r === -EAGAIN) return;
        if (r === -ECONNRESET) {
          this.#end();
          return;
        }
        this.#fail(sysError(r, 'recvmsg', { fd: this.#fd }));
        return;
      }
      if (r.ctrunc) {
        this.#fail(
          new ZiuError(
            'ERR_ZIU_FDS_TRUNCATED',
            `recvmsg (fd ${this.#fd}): control data truncated (MSG_CTRUNC); every fd received with it was closed`,
          ),
        );
        return;
      }
      if (r.trunc) {
        closeFds(r.fds);
        this.#fail(
          new ZiuError(
            'ERR_ZIU_MESSAGE_TRUNCATED',
            `recvmsg (fd ${this.#fd}): a message longer than ${this.#readBuf.length} bytes was truncated`,
          ),
        );
        return;
      }
      if (r.bytes === 0 && r.fds.length === 0) {
        this.#end();
        return;
      }
      const chunk: Chunk = { data: Buffer.from(this.#readBuf.subarray(0, r.bytes)), fds: r.fds };
      if (this.listenerCount('data') === 0) {
        closeFds(chunk.fds);
      } else {
        this.emit('data', chunk);
      }
    }
  }

  #end(): void {
    this.#ended = true;
    this.#reading = false;
    this.#updatePoll();
    this.emit('end');
  }

  #fail(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    this.close();
  }
}

export interface ListenOptions {
  kind?: SocketKind;
  /** file mode of the socket path, e.g. 0o600 */
  mode?: number;
  backlog?: number;
}

export interface UnixListenerEvents {
  connection: [socket: UnixSocket];
  error: [err: Error];
}

/**
 * A listening unix socket. A stale socket file at the path (nobody listening)
 * is replaced; a live one is an EADDRINUSE error naming the path.
 */
export class UnixListener extends EventEmitter<UnixListenerEvents> {
  readonly path: string;
  readonly kind: SocketKind;
  #fd: number;
  #poll: PollHandle | null = null;
  #closed = false;

  private constructor(fd: number, path: string, kind: SocketKind) {
    super();
    this.#fd = fd;
    this.path = path;
    this.kind = kind;
  }

  static async listen(path: string, options: ListenOptions = {}): Promise<UnixListener> {
    checkSocketPath(path);
    const kind = options.kind ?? 'stream';
    await removeStaleSocket(path, kind);
    const fd = check(native.socket(kindToType(kind)), 'socket');
    let bound = false;
    try {
      if (options.mode === undefined) check(native.bind(fd, path), 'bind', { path });
      else bindWithMode(fd, path, options.mode);
      bound = true;
      check(native.listen(fd, options.backlog ?? 64), 'listen', { path, fd });
    } catch (err) {
      native.close(fd);
      // Only what we bound is ours to remove: never a file someone else put at the path.
      if (bound) fs.rmSync(path, { force: true });
      throw err;
    }
    const l = new UnixListener(fd, path, kind);
    l.#poll = check(
      native.pollStart(fd, native.POLL_READABLE, (status) => l.#onReadable(status)),
      'uv_poll_start',
      { fd, path },
    );
    return l;
  }

  /** Adopt a listening fd handed over from another process. */
  static adopt(fd: number, path: string, kind: SocketKind): UnixListener {
    const l = new UnixListener(fd, path, kind);
    l.#poll = check(
      native.pollStart(fd, native.POLL_READABLE, (status) => l.#onReadable(status)),
      'uv_poll_start',
      { fd, path },
    );
    return l;
  }

  get fd(): number {
    return this.#fd;
  }

  /** Stop accepting: new connections wait in the kernel's backlog (a handover freeze). */
  pause(): this {
    if (this.#poll) native.pollClose(this.#poll);
    this.#poll = null;
    return this;
  }

  /** Accept again after pause(). */
  resume(): this {
    if (this.#closed || this.#poll) return this;
    this.#poll = check(
      native.pollStart(this.#fd, native.POLL_READABLE, (status) => this.#onReadable(status)),
      'uv_poll_start',
      { fd: this.#fd, path: this.path },
    );
    return this;
  }

  /** Called before connections are accepted (see UnixSocket.beforeRead); null: nothing. */
  beforeAccept: (() => void) | null = null;

  #onReadable(status: number): void {
    if (this.#closed) return;
    if (status < 0) {
      this.emit('error', sysError(status, 'uv_poll', { fd: this.#fd, path: this.path }));
      return;
    }
    this.beforeAccept?.();
    for (;;) {
      const c = native.accept(this.#fd);
      if (c === -EAGAIN) return;
      if (c < 0) {
        this.emit('error', sysError(c, 'accept', { fd: this.#fd, path: this.path }));
        return;
      }
      const sock = UnixSocket.adopt(c);
      if (this.listenerCount('connection') === 0) sock.close();
      else this.emit('connection', sock);
    }
  }

  /** Stop listening and remove the socket path (unless keepPath, for a handover). */
  close(options: { keepPath?: boolean } = {}): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#poll) native.pollClose(this.#poll);
    this.#poll = null;
    closeFd(this.#fd);
    if (!options.keepPath) fs.rmSync(this.path, { force: true });
  }
}

/**
 * Bind a socket that appears at `target` with `mode` already set, through no
 * symlink: bound and chmod-ed inside a fresh private directory (0700, ours,
 * next to target, so nobody else can touch it there), then hard-linked into
 * place. link(2) never follows or replaces what is at the target: anything
 * that appeared there since the stale-socket check (a symlink planted in
 * /tmp) fails the bind with EADDRINUSE. A chmod after bind would follow a
 * symlink swapped in at the path and leave the socket open to every user
 * until it ran.
 */
function bindWithMode(fd: number, target: string, mode: number): void {
  const tmpDir = fs.mkdtempSync(pathJoin(pathDirname(target), '.ziu-bind-'));
  const dirFd = fs.openSync(tmpDir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  // Through the directory's fd: short enough for sun_path whatever the target's length.
  const tmp = `/proc/self/fd/${dirFd}/s`;
  try {
    check(native.bind(fd, tmp), 'bind', { path: target });
    fs.chmodSync(tmp, mode);
    try {
      fs.linkSync(tmp, target);
    } catch (err) {
      if (hasCode(err, 'EEXIST')) throw sysError(-EADDRINUSE, 'bind', { path: target }, err);
      throw err;
    }
  } finally {
    fs.rmSync(tmp, { force: true });
    fs.closeSync(dirFd);
    fs.rmdirSync(tmpDir);
  }
}

async function removeStaleSocket(path: string, kind: SocketKind): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return;
    throw err;
  }
  if (!st.isSocket()) {
    throw new ZiuError('ERR_ZIU_SOCKET_PATH', `'${path}' exists and is not a socket; refusing to replace it`);
  }
  try {
    const probe = await UnixSocket.connect(path, kind);
    probe.close();
  } catch (err) {
    if (hasCode(err, 'ECONNREFUSED')) {
      fs.rmSync(path, { force: true });
      return;
    }
    if (hasCode(err, 'EPROTOTYPE')) {
      throw sysError(-EADDRINUSE, 'bind', { path }, err);
    }
    throw err;
  }
  throw sysError(-EADDRINUSE, 'bind', { path });
}
