// A hostile vhost-user frontend, run as its own process (vite-node) by the
// tests in test/hostile/: it connects to a datapath's port, sets up a real
// device (a memfd as guest memory, real eventfds, split rings laid out by
// test/native/guest.ts) and then does one bad thing, named by argv:
//
//   frontend.ts <socket> <mode>
//
//   call-saturated  its call eventfds made blocking (O_NONBLOCK cleared by
//                   another process on its own copy: the flag lives in the
//                   shared open file description) and their counters
//                   saturated, then TX traffic that wants interrupts
//   call-pipe       a full, blocking pipe as the TX ring's call fd
//   kick-hup        a pipe whose writer is gone (always EPOLLHUP) as the kick fd
//   kick-semaphore  a semaphore eventfd with a huge count as the kick fd
//   rx-long-chains  MRG_RXBUF, and every RX buffer an indirect table of 32768
//                   descriptors, 32767 of them empty
//
// It prints `ready` once the bad thing is in place, `dropped` when the
// datapath closes the connection, and exits on SIGTERM or after `dropped`.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { check, native } from '../../src/native/index.js';
import { readFrames } from '../../src/net/framing.js';
import { UnixSocket } from '../../src/net/socket.js';
import { encodeRequest, VHOST_USER_FRAME, VirtioFeature, type Request } from '../../src/vhost/index.js';
import { DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, ethFrame, Guest } from '../native/guest.js';
import { closeFds } from '../../src/native/fds.js';

const [sockPath, mode] = process.argv.slice(2) as [string, string];
const MAC = '02:00:00:00:0b:ad';
const INDIRECT_N = 32768;
const rx = mode === 'rx-long-chains';
const guest = new Guest(rx ? { num: 256, regionSize: 8 << 20, bufSize: INDIRECT_N * 16 } : { num: 256 });
const sock = await UnixSocket.connect(sockPath);
let dropped = false;
readFrames(sock, VHOST_USER_FRAME, {
  onFrame: (f) => {
    closeFds(f.fds);
  },
  onClose: () => {
    dropped = true;
    console.log('dropped');
  },
});

const send = async (req: Request): Promise<void> => {
  const m = encodeRequest(req);
  // A datapath that refuses the bad fd at once closes the connection while we still set up the rest.
  await sock.send(m.bytes, m.fds).catch((err: { code?: string }) => {
    if (err.code !== 'ERR_ZIU_PEER_CLOSED') throw err;
  });
};

/** Clear O_NONBLOCK on fd's open file description and add 0xfffffffffffffffe: from another process, on its copy. */
function blockAndSaturate(fd: number): void {
  const py = [
    'import fcntl, os',
    'fl = fcntl.fcntl(3, fcntl.F_GETFL)',
    'fcntl.fcntl(3, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)',
    "os.write(3, (0xfffffffffffffffe).to_bytes(8, 'little'))",
  ].join('\n');
  const r = spawnSync('python3', ['-c', py], { stdio: ['ignore', 'inherit', 'inherit', fd] });
  if (r.status !== 0) throw new Error(`python3 could not make fd ${fd} blocking and saturated: ${r.status} ${String(r.error)}`);
}

/** Temp dirs made for FIFOs: removed when this process exits, however it exits. */
const tempDirs: string[] = [];
process.on('exit', () => {
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ziu-hostile-'));
  tempDirs.push(dir);
  return dir;
}

/** A FIFO of our own, opened read-write (so opening never blocks): both ends in one blocking fd. */
function fifo(): { fd: number; path: string } {
  const dir = tempDir();
  const p = path.join(dir, 'fifo');
  spawnSync('mkfifo', [p]);
  return { fd: fs.openSync(p, 'r+'), path: p };
}

let callFd1 = guest.call[1];
let kickFd1 = guest.kick[1];
if (mode === 'call-pipe') {
  const f = fifo();
  fs.writeSync(f.fd, Buffer.alloc(65536)); // a pipe's whole capacity: the next write blocks
  callFd1 = f.fd;
} else if (mode === 'kick-hup') {
  const dir = tempDir();
  const p = path.join(dir, 'fifo');
  spawnSync('mkfifo', [p]);
  kickFd1 = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  fs.closeSync(fs.openSync(p, fs.constants.O_WRONLY)); // a writer came and went: the reader sees EPOLLHUP for ever
} else if (mode === 'kick-semaphore') {
  kickFd1 = check(native.eventfd(0, true), 'eventfd');
  check(native.eventfdWrite(kickFd1, 1_000_000_000n), 'write');
}

const features = VirtioFeature.VERSION_1 | (rx ? VirtioFeature.MRG_RXBUF : 0n);
await send({ type: 'SET_OWNER', needReply: false });
await send({ type: 'GET_FEATURES', needReply: false });
await send({ type: 'SET_FEATURES', needReply: false, features }); // no protocol features: the rings are enabled now
const r = guest.region();
await send({ type: 'SET_MEM_TABLE', needReply: false, regions: [{ guestPhysAddr: r.gpa, memorySize: r.size, userspaceAddr: r.uaddr, mmapOffset: r.offset, fd: r.fd }] });
for (const q of [0, 1] as const) {
  const v = guest.vring(q);
  await send({ type: 'SET_VRING_CALL', needReply: false, index: q, fd: q === 1 ? callFd1 : guest.call[q] });
  await send({ type: 'SET_VRING_NUM', needReply: false, index: q, num: v.num });
  await send({ type: 'SET_VRING_BASE', needReply: false, index: q, num: 0 });
  await send({ type: 'SET_VRING_ADDR', needReply: false, index: q, flags: 0, desc: v.desc, used: v.used, avail: v.avail, log: 0n });
  await send({ type: 'SET_VRING_KICK', needReply: false, index: q, fd: q === 1 ? kickFd1 : guest.kick[q] });
}
await new Promise((res) => setTimeout(res, 100));

if (mode === 'call-saturated') for (const fd of guest.call) blockAndSaturate(fd);
if (rx) {
  // One table for every buffer: 32767 empty descriptors, then one byte.
  const end = guest.gpaAt(guest.regionSize - 4096);
  const table = guest.rawTable(
    Array.from({ length: INDIRECT_N }, (_, i) => ({ addr: end, len: i === INDIRECT_N - 1 ? 1 : 0, flags: DESC_F_WRITE | (i === INDIRECT_N - 1 ? 0 : DESC_F_NEXT) })),
  );
  for (let i = 0; i < 255; i++) guest.pushChain(0, [{ addr: table, len: INDIRECT_N * 16, flags: DESC_F_INDIRECT }], { publish: false });
  guest.publish(0);
}
console.log('ready');

// Keep it up: frames to ourselves (dst == src: the bridge learns and drops them) that want interrupts; RX buffers recycled.
const self = ethFrame(MAC, MAC, 'hostile');
const timer = setInterval(() => {
  if (dropped) {
    clearInterval(timer);
    process.exit(0);
  }
  try {
    if (rx) {
      guest.recycle(0);
    } else {
      guest.reclaimTx();
      guest.send([self, self, self, self]);
    }
  } catch {
    // out of buffers while the datapath is stuck: try again next tick
  }
}, 1);
process.on('SIGTERM', () => process.exit(0));
