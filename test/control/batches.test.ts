import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.js';
import { FD_BATCH, PULL_FDS, PUSH_FDS } from '../../src/control/protocol.js';
import { ControlServer } from '../../src/control/server.js';
import { logger } from '../../src/log.js';
import { closeFds } from '../../src/native/fds.js';
import { native } from '../../src/native/index.js';
import { UnixSocket } from '../../src/net/socket.js';
import { openFds } from '../helpers/fds.js';
import { tempDir } from '../helpers/tmp.js';

/** n eventfds, the i-th holding i + 1: what comes back can be told apart and put in order. */
function eventfds(n: number): number[] {
  return Array.from({ length: n }, (_, i) => {
    const fd = native.eventfd(0, false) as number;
    native.eventfdWrite(fd, BigInt(i + 1));
    return fd;
  });
}

/** Each fd's counter, read (and so emptied) in order. */
function counters(fds: number[]): bigint[] {
  return fds.map((fd) => native.eventfdRead(fd) as bigint);
}

describe('control socket: any number of fds, in batches of at most 253, one batch in flight', () => {
  let tmp: ReturnType<typeof tempDir>;
  let server: ControlServer;
  let before: number;
  /** what the handler saw: how many fds came with each request */
  const seen: number[] = [];

  beforeEach(async () => {
    before = openFds();
    tmp = tempDir();
    seen.length = 0;
    server = await ControlServer.listen(
      path.join(tmp.dir, 'ctl.sock'),
      {
        // Gives back what it got (borrowed: closed after the reply went, as a datapath's own fds stay open).
        echo: (_req, fds) => {
          seen.push(fds.length);
          setTimeout(() => closeFds(fds), 200);
          return { body: { got: fds.length }, fds: [...fds] };
        },
        take: (_req, fds) => {
          seen.push(fds.length);
          closeFds(fds);
          return { body: { got: fds.length } };
        },
      },
      logger('test'),
    );
  });
  afterEach(() => {
    server.close();
    tmp.remove();
  });

  it('carries 1000 fds to the server and 1000 back, each in its place, and leaks none', async () => {
    const c = await ControlClient.connect(server.path);
    const mine = eventfds(1000);
    const r = await c.request({ op: 'echo' }, mine);
    expect(r.body).toEqual({ ok: true, got: 1000 });
    expect(seen).toEqual([1000]);
    expect(r.fds).toHaveLength(1000);
    // The same eventfds, in the same order, through both directions' batches.
    expect(counters(r.fds)).toEqual(Array.from({ length: 1000 }, (_, i) => BigInt(i + 1)));
    closeFds([...r.fds, ...mine]);
    c.close();
    await new Promise((res) => setTimeout(res, 300));
    expect(openFds()).toBe(before + 1); // the listener
  });

  it('a request at exactly one batch, and one above it, both arrive whole', async () => {
    const c = await ControlClient.connect(server.path);
    for (const n of [FD_BATCH, FD_BATCH + 1, 0]) {
      const fds = eventfds(n);
      expect((await c.request({ op: 'take' }, fds)).body).toEqual({ ok: true, got: n });
      closeFds(fds);
    }
    expect(seen).toEqual([FD_BATCH, FD_BATCH + 1, 0]);
    c.close();
  });

  it('fds pushed for a request that never comes, or announced and never pulled, are closed with the connection or the next request', async () => {
    const sock = await UnixSocket.connect(server.path);
    const replies: Array<Record<string, unknown>> = [];
    let got: number[] = [];
    sock.on('data', (chunk) => {
      got = [...got, ...chunk.fds];
      // Replies are small here: one chunk each.
      let at = 0;
      while (at + 4 <= chunk.data.length) {
        const len = chunk.data.readUInt32LE(at);
        replies.push(JSON.parse(chunk.data.subarray(at + 4, at + 4 + len).toString('utf8')) as Record<string, unknown>);
        at += 4 + len;
      }
    });
    sock.resume();
    const send = async (body: unknown, fds: number[] = []): Promise<void> => {
      const json = Buffer.from(JSON.stringify(body));
      const head = Buffer.alloc(4);
      head.writeUInt32LE(json.length);
      await sock.send(Buffer.concat([head, json]), fds);
      const n = replies.length;
      while (replies.length === n) await new Promise((res) => setTimeout(res, 5));
    };
    const pushed = eventfds(10);
    await send({ op: PUSH_FDS, count: 10 }, pushed);
    expect(replies.at(-1)).toEqual({ ok: true, held: 10 });
    // A count that does not match what came: refused, and what came is closed.
    const odd = eventfds(3);
    await send({ op: PUSH_FDS, count: 2 }, odd);
    expect(replies.at(-1)).toMatchObject({ ok: false, error: { code: 'ERR_ZIU_FD_NAMES' } });
    // The next request gets the 10 held.
    await send({ op: 'take' });
    expect(seen).toEqual([10]);
    // 300 back: 253 with the reply, 47 announced. Another request instead of a pull drops them.
    const many = eventfds(300);
    await send({ op: PUSH_FDS, count: FD_BATCH }, many.slice(0, FD_BATCH));
    await send({ op: 'echo' }, many.slice(FD_BATCH));
    expect(replies.at(-1)).toEqual({ ok: true, got: 300, moreFds: 300 - FD_BATCH });
    expect(got).toHaveLength(FD_BATCH);
    await send({ op: 'take' });
    await send({ op: PULL_FDS });
    expect(replies.at(-1)).toEqual({ ok: true, moreFds: 0 });
    expect(got).toHaveLength(FD_BATCH);
    closeFds(got);
    got = [];
    closeFds([...pushed, ...odd, ...many]);
    // Pushed and never used: closed when the connection goes.
    const left = eventfds(5);
    await send({ op: PUSH_FDS, count: 5 }, left);
    closeFds(left);
    sock.close();
    await new Promise((res) => setTimeout(res, 300));
    expect(openFds()).toBe(before + 1);
  });
});
