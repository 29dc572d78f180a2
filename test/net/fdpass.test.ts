import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native/index.js';
import { Framer, LENGTH_PREFIXED, encodeLengthPrefixed, readFrames, type Frame } from '../../src/net/framing.js';
import { UnixListener, UnixSocket, type SocketKind } from '../../src/net/socket.js';
import { openFds } from '../helpers/fds.js';
import { tempDir } from '../helpers/tmp.js';

const peer = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'fd-peer.mjs');

/** Accept one connection and collect its frames until it closes. */
function acceptOne(listener: UnixListener): Promise<{ sock: UnixSocket; frames: Frame[]; closed: Promise<Error | undefined> }> {
  return new Promise((resolve) => {
    listener.once('connection', (sock) => {
      const frames: Frame[] = [];
      let onClose!: (err?: Error) => void;
      const closed = new Promise<Error | undefined>((r) => (onClose = r));
      readFrames(sock, LENGTH_PREFIXED, { onFrame: (f) => frames.push(f), onClose });
      resolve({ sock, frames, closed });
    });
  });
}

describe.each<SocketKind>(['stream', 'seqpacket'])('fd passing between two processes over %s', (kind) => {
  let tmp: ReturnType<typeof tempDir>;
  let listener: UnixListener;
  let fdsBefore: number;

  beforeEach(async () => {
    fdsBefore = openFds();
    tmp = tempDir();
    listener = await UnixListener.listen(path.join(tmp.dir, 'ctl.sock'), { kind, mode: 0o600 });
  });
  afterEach(() => {
    listener.close();
    tmp.remove();
  });

  it('an eventfd, a memfd and a connected socket survive the trip', async () => {
    const accepted = acceptOne(listener);
    const child = execa('node', [peer, listener.path, kind, 'basic']);
    const { sock, frames, closed } = await accepted;

    const efd = native.eventfd(0, false) as number;
    native.eventfdWrite(efd, 42n);
    const mfd = native.memfdCreate('ziu-test', 0) as number;
    native.ftruncate(mfd, 4096);
    const map = new Uint8Array(native.mmap(mfd, 4096, 0, 0) as ArrayBuffer);
    Buffer.from('from the parent').copy(map, 0);
    const [mine, theirs] = UnixSocket.pair('stream');
    const inner = new Promise<string>((resolve) => mine.once('data', (c) => resolve(c.data.toString())));
    mine.resume();

    const names = ['eventfd', 'memfd', 'socket'];
    await sock.send(encodeLengthPrefixed(Buffer.from(JSON.stringify(names))), [efd, mfd, theirs.fd]);
    theirs.close(); // our copy; the child has its own now

    expect(await inner).toBe('hello over the passed socket');
    await child;
    await closed;
    expect(frames).toHaveLength(1);
    expect(JSON.parse(frames[0]!.body.toString())).toEqual({ counter: '42', seen: 'from the parent', size: 4096 });
    // the child's writes are visible through our own mapping and eventfd
    expect(Buffer.from(map.subarray(16, 30)).toString()).toBe('from the child');
    expect(native.eventfdRead(efd)).toBe(7n);

    native.munmap(map.buffer as ArrayBuffer);
    mine.close();
    native.close(efd);
    native.close(mfd);
    expect(openFds()).toBe(fdsBefore + 1); // the listener is still open
  });

  it('253 fds pass in one message', async () => {
    const accepted = acceptOne(listener);
    const child = execa('node', [peer, listener.path, kind, 'count']);
    const { sock, frames, closed } = await accepted;
    const fds = Array.from({ length: 253 }, (_, i) => {
      const fd = native.memfdCreate(`fd-${i}`, 0) as number;
      native.ftruncate(fd, i + 1);
      return fd;
    });
    await sock.send(encodeLengthPrefixed(Buffer.from('many')), fds);
    for (const fd of fds) native.close(fd);
    await child;
    await closed;
    expect(JSON.parse(frames[0]!.body.toString())).toEqual({ fds: 253, inOrder: true });
    expect(openFds()).toBe(fdsBefore + 1);
  });

  it('254 fds is a clear error before anything is sent', async () => {
    const [a, b] = UnixSocket.pair(kind);
    const fds = Array.from({ length: 254 }, () => native.eventfd(0, false) as number);
    await expect(a.send(Buffer.from('x'), fds)).rejects.toThrow(
      'sendmsg (fd ' + a.fd + '): 254 fds in one message; the kernel carries at most 253 (SCM_MAX_FD)',
    );
    // the C backstop refuses too, without sending
    expect(native.sendmsg(a.fd, Buffer.from('x'), fds)).toBeLessThan(0);
    for (const fd of fds) native.close(fd);
    a.close();
    b.close();
    expect(openFds()).toBe(fdsBefore + 1);
  });

  it('a peer that closes mid-message is reported, and the fds it sent are closed', async () => {
    const accepted = acceptOne(listener);
    const child = execa('node', [peer, listener.path, kind, 'half']);
    const { frames, closed } = await accepted;
    await child;
    const err = await closed;
    expect(frames).toHaveLength(0);
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toBe('ERR_ZIU_PEER_CLOSED_MID_MESSAGE');
    expect(err!.message).toBe('ziu message: the peer closed in the middle of a message (54 of 104 bytes)');
    expect(openFds()).toBe(fdsBefore + 1);
  });
});

describe('recvmsg edge cases', () => {
  it('truncated control data closes every fd received and is an error', async () => {
    const before = openFds();
    const [a, b] = UnixSocket.pair('seqpacket');
    const fds = [0, 1, 2].map(() => native.eventfd(0, false) as number);
    await a.send(Buffer.from('three fds'), fds);
    for (const fd of fds) native.close(fd);
    const withFds = openFds();
    const r = native.recvmsg(b.fd, Buffer.alloc(64), 1);
    expect(typeof r).toBe('object');
    expect(r).toMatchObject({ bytes: 9, fds: [], ctrunc: true });
    expect(openFds()).toBe(withFds); // none of the three arrived open
    a.close();
    b.close();
    expect(openFds()).toBe(before);
  });

  it('a receiver that cannot take every fd (RLIMIT_NOFILE) reports ERR_ZIU_FDS_TRUNCATED', async () => {
    const tmp = tempDir();
    const listener = await UnixListener.listen(path.join(tmp.dir, 'ctl.sock'));
    try {
      const accepted = new Promise<UnixSocket>((resolve) => listener.once('connection', resolve));
      const child = execa('bash', ['-c', 'ulimit -n 64 && exec node "$@"', 'bash', peer, listener.path, 'stream', 'ctrunc']);
      const sock = await accepted;
      const fds = Array.from({ length: 100 }, () => native.eventfd(0, false) as number);
      await sock.send(Buffer.from('too many for you'), fds);
      for (const fd of fds) native.close(fd);
      const { stdout } = await child;
      expect(JSON.parse(stdout)).toEqual({
        code: 'ERR_ZIU_FDS_TRUNCATED',
        message: expect.stringMatching(/control data truncated \(MSG_CTRUNC\); every fd received with it was closed$/),
      });
      sock.close();
    } finally {
      listener.close();
      tmp.remove();
    }
  });

  it('EAGAIN means "would block" and 0 bytes means the peer closed', async () => {
    const [a, b] = UnixSocket.pair('stream');
    expect(native.recvmsg(b.fd, Buffer.alloc(16), 0)).toBe(-11);
    a.close();
    expect(native.recvmsg(b.fd, Buffer.alloc(16), 0)).toMatchObject({ bytes: 0, fds: [] });
    b.close();
  });

  it('a stream with several messages in one read ties each fd to its message', () => {
    const framer = new Framer(LENGTH_PREFIXED);
    const m1 = encodeLengthPrefixed(Buffer.from('first'));
    const m2 = encodeLengthPrefixed(Buffer.from('second, with an fd'));
    const efd = native.eventfd(0, false) as number;
    // The kernel delivers fds with the read that ends inside their sendmsg's data.
    const frames = framer.push({ data: Buffer.concat([m1, m2.subarray(0, 6)]), fds: [efd] });
    expect(frames.map((f) => f.body.toString())).toEqual(['first']);
    expect(frames[0]!.fds).toEqual([]);
    const rest = framer.push({ data: m2.subarray(6), fds: [] });
    expect(rest).toHaveLength(1);
    expect(rest[0]!.fds).toEqual([efd]);
    native.close(efd);
  });
});
