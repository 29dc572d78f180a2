import { describe, expect, it } from 'vitest';
import { check, native } from '../../src/native/index.js';
import { UnixSocket } from '../../src/net/socket.js';

describe('a peer that resets the connection', () => {
  it('is reported as the peer closing it (ERR_ZIU_PEER_CLOSED), not as a bad fd', async () => {
    const [ours, theirs] = check(native.socketpair(native.SOCK_STREAM), 'socketpair');
    const sock = UnixSocket.adopt(ours);
    const failed = new Promise<Error>((resolve) => sock.on('error', resolve));
    const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.on('data', () => undefined);
    sock.resume();
    // Data the peer never reads, then the peer closes: the kernel resets the connection (ECONNRESET pending, POLLERR).
    await sock.send(Buffer.alloc(4096, 1));
    native.close(theirs);
    const err = await failed;
    expect(err).toMatchObject({ code: 'ERR_ZIU_PEER_CLOSED', message: expect.stringContaining('the peer reset the connection') });
    expect((err.cause as { code?: string }).code).toBe('EBADF');
    await closed;
    expect(sock.closed).toBe(true);
  });
});
