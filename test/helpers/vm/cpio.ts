/**
 * A cpio archive in the "newc" format, as the kernel unpacks an initramfs:
 * per entry a 110-byte ASCII header ("070701" and 13 eight-digit hex
 * fields), the NUL-terminated name padded to 4 bytes, the data padded to 4;
 * "TRAILER!!!" ends it. Device nodes need no privilege here: the kernel
 * makes them as it unpacks.
 */
export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Uint8Array; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const pad = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  const add = (name: string, mode: number, data: Uint8Array, nlink: number, rdev: [number, number] = [0, 0]): void => {
    if (name.length === 0 || name.startsWith('/') || name.includes('\0')) throw new Error(`cpio: bad entry name '${name}'`);
    const fields = [ino++, mode, 0, 0, nlink, 0, data.length, 0, 0, rdev[0], rdev[1], Buffer.byteLength(name) + 1, 0];
    const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'latin1');
    const nameBytes = Buffer.from(name + '\0');
    parts.push(header, nameBytes, pad(header.length + nameBytes.length), Buffer.from(data.buffer, data.byteOffset, data.byteLength), pad(data.length));
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (e.type === 'dir') add(name, S_IFDIR | (e.mode ?? 0o755), new Uint8Array(), 2);
    else if (e.type === 'file') add(name, S_IFREG | (e.mode ?? 0o644), e.data, 1);
    else if (e.type === 'symlink') add(name, S_IFLNK | 0o777, Buffer.from(e.target), 1);
    else add(name, S_IFCHR | (e.mode ?? 0o600), new Uint8Array(), 1, [e.major, e.minor]);
  }
  add('TRAILER!!!', 0, new Uint8Array(), 1);
  return Buffer.concat(parts);
}
