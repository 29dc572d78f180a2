// A FUSE filesystem served by this process over /dev/fuse (no libfuse): one
// file, `guest`, whose attributes, open and flush are answered at once and
// whose READs are never answered, as a hung NFS or FUSE server would leave
// them. Any page fault on that file waits for as long as the server likes.
// Root only (it mounts).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

const FUSE = { LOOKUP: 1, FORGET: 2, GETATTR: 3, OPEN: 14, READ: 15, STATFS: 17, RELEASE: 18, FLUSH: 25, INIT: 26, OPENDIR: 27, RELEASEDIR: 29, ACCESS: 34, INTERRUPT: 36, DESTROY: 38, BATCH_FORGET: 42 } as const;
const ROOT_ID = 1n;
const FILE_ID = 2n;
const ENOENT = 2;
const ENOSYS = 38;

export interface HungFuse {
  dir: string;
  /** path of the one file */
  file: string;
  /** READ requests received and left unanswered */
  reads: number;
  /** every opcode seen, in order */
  seen: number[];
  /** unmount (lazily) and abort the connection: every waiter gets an error */
  close(): Promise<void>;
}

/** Mount a hung FUSE filesystem with one file of `size` bytes at a fresh directory under `parent`. */
export async function mountHungFuse(parent: string, size: number): Promise<HungFuse> {
  const dir = fs.mkdtempSync(path.join(parent, 'fuse-'));
  const dev = fs.openSync('/dev/fuse', 'r+');
  let closed = false;
  const fuse: HungFuse = { dir, file: path.join(dir, 'guest'), reads: 0, seen: [], close: async () => {} };
  try {
    // fd 3 of mount(8) is our /dev/fuse: without a mount.fuse helper it calls mount(2) with these options.
    execFileSync('mount', ['-t', 'fuse.ziu-hung', '-o', 'fd=3,rootmode=40000,user_id=0,group_id=0,allow_other', 'ziu-hung', dir], {
      stdio: ['ignore', 'pipe', 'pipe', dev],
    });
  } catch (err) {
    fs.closeSync(dev);
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  const attr = (id: bigint): Buffer => {
    const a = Buffer.alloc(88);
    a.writeBigUInt64LE(id, 0); // ino
    a.writeBigUInt64LE(id === FILE_ID ? BigInt(size) : 0n, 8); // size
    a.writeBigUInt64LE(BigInt(Math.ceil(size / 512)), 16); // blocks
    a.writeUInt32LE(id === FILE_ID ? 0o100600 : 0o40755, 60); // mode
    a.writeUInt32LE(1, 64); // nlink
    a.writeUInt32LE(4096, 80); // blksize
    return a;
  };
  const reply = (unique: bigint, error: number, body: Buffer = Buffer.alloc(0)): void => {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(16 + body.length, 0);
    h.writeInt32LE(-error, 4);
    h.writeBigUInt64LE(unique, 8);
    try {
      fs.writeSync(dev, Buffer.concat([h, body]));
    } catch {
      // the request was interrupted, or the connection is gone
    }
  };
  const valid = (): Buffer => {
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(3600n, 0);
    return b;
  };

  const handle = (req: Buffer): void => {
    const opcode = req.readUInt32LE(4);
    const unique = req.readBigUInt64LE(8);
    const node = req.readBigUInt64LE(16);
    const body = req.subarray(40, req.readUInt32LE(0));
    fuse.seen.push(opcode);
    switch (opcode) {
      case FUSE.INIT: {
        const out = Buffer.alloc(64);
        out.writeUInt32LE(7, 0); // major
        out.writeUInt32LE(Math.min(body.readUInt32LE(4), 31), 4); // minor
        out.writeUInt32LE(0, 8); // max_readahead
        out.writeUInt32LE(0, 12); // flags
        out.writeUInt16LE(16, 16); // max_background
        out.writeUInt16LE(12, 18); // congestion_threshold
        out.writeUInt32LE(65536, 20); // max_write
        out.writeUInt32LE(1, 24); // time_gran
        out.writeUInt16LE(16, 28); // max_pages
        return reply(unique, 0, out);
      }
      case FUSE.LOOKUP: {
        const name = body.subarray(0, body.indexOf(0)).toString();
        if (node !== ROOT_ID || name !== 'guest') return reply(unique, ENOENT);
        const e = Buffer.alloc(40);
        e.writeBigUInt64LE(FILE_ID, 0);
        e.writeBigUInt64LE(3600n, 16); // entry_valid
        e.writeBigUInt64LE(3600n, 24); // attr_valid
        return reply(unique, 0, Buffer.concat([e, attr(FILE_ID)]));
      }
      case FUSE.GETATTR:
        return reply(unique, 0, Buffer.concat([valid(), attr(node)]));
      case FUSE.OPEN:
      case FUSE.OPENDIR:
        return reply(unique, 0, Buffer.alloc(16));
      case FUSE.READ:
        fuse.reads++;
        return; // never: the server hangs
      case FUSE.FLUSH:
      case FUSE.RELEASE:
      case FUSE.RELEASEDIR:
        return reply(unique, 0);
      case FUSE.FORGET:
      case FUSE.BATCH_FORGET:
      case FUSE.INTERRUPT:
        return; // no reply expected (an interrupted READ stays unanswered too)
      case FUSE.STATFS:
        return reply(unique, 0, Buffer.alloc(80));
      default:
        return reply(unique, ENOSYS);
    }
  };

  // One request per read; a read waits in libuv's pool until the kernel has one.
  const buf = Buffer.alloc(1 << 20 + 4096 * 2);
  const loop = (): void => {
    fs.read(dev, buf, 0, buf.length, null, (err, n) => {
      if (err || closed) return;
      handle(Buffer.from(buf.subarray(0, n)));
      loop();
    });
  };
  loop();

  fuse.close = async () => {
    if (closed) return;
    closed = true;
    await execa('umount', ['-l', dir], { reject: false });
    // Closing our end aborts the connection once nothing else holds the mount.
    fs.closeSync(dev);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return fuse;
}
