import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { lz4LegacyDecode } from './lz4.js';

/** A Debian linux-image kernel and its modules. */
export interface GuestKernel {
  version: string;
  /** /boot/vmlinuz-<version> (a bzImage) */
  bzImage: string;
  /** /lib/modules/<version> */
  modulesDir: string;
}

/**
 * The guest kernel: ZIU_TEST_GUEST_KERNEL (a /boot/vmlinuz-<version> path),
 * else the newest /boot/vmlinuz-* whose modules are installed. Returns the
 * reason when there is none.
 */
export function findGuestKernel(boot = '/boot', modules = '/lib/modules'): GuestKernel | string {
  const wanted = process.env['ZIU_TEST_GUEST_KERNEL'];
  const candidates = wanted
    ? [wanted]
    : (fs.existsSync(boot) ? fs.readdirSync(boot) : [])
        .filter((f) => f.startsWith('vmlinuz-'))
        .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }))
        .map((f) => path.join(boot, f));
  if (candidates.length === 0) return `no guest kernel: no ${boot}/vmlinuz-* (install a Debian linux-image package, e.g. linux-image-cloud-amd64)`;
  const problems: string[] = [];
  for (const bzImage of candidates) {
    const version = path.basename(bzImage).replace(/^vmlinuz-/, '');
    const modulesDir = path.join(modules, version);
    try {
      fs.accessSync(bzImage, fs.constants.R_OK);
    } catch {
      problems.push(`${bzImage} is not readable`);
      continue;
    }
    if (!fs.existsSync(path.join(modulesDir, 'modules.dep'))) {
      problems.push(`${bzImage} has no ${modulesDir}/modules.dep`);
      continue;
    }
    return { version, bzImage, modulesDir };
  }
  return `no usable guest kernel: ${problems.join('; ')}`;
}

/** What the bzImage's setup header says about the compressed kernel inside it. */
export interface BzImagePayload {
  format: 'gzip' | 'xz' | 'lz4' | 'zstd' | 'bzip2' | 'lzma' | 'lzo' | 'unknown';
  /** the compressed vmlinux, as the kernel's decompressor reads it (with the build's 4-byte size trailer, except gzip) */
  data: Buffer;
}

const MAGICS: Array<[BzImagePayload['format'], number[]]> = [
  ['gzip', [0x1f, 0x8b]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['lz4', [0x02, 0x21, 0x4c, 0x18]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['lzo', [0x89, 0x4c, 0x5a, 0x4f]],
  ['lzma', [0x5d, 0x00, 0x00]],
];

/**
 * The compressed payload of an x86 bzImage (boot protocol 2.08 and later):
 * the setup header's payload_offset and payload_length, counted from the
 * protected-mode code after the (setup_sects + 1) sectors of real-mode
 * setup; its format by its magic.
 */
export function bzImagePayload(image: Buffer): BzImagePayload {
  if (image.length < 0x250 || image.toString('latin1', 0x202, 0x206) !== 'HdrS') throw new Error('not a bzImage: no "HdrS" setup header');
  const version = image.readUInt16LE(0x206);
  if (version < 0x208) throw new Error(`boot protocol ${version >> 8}.${version & 0xff} has no payload fields (2.08 and later do)`);
  const setupSects = image[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (start + length > image.length) throw new Error(`the payload (${length} bytes at ${start}) runs past the image (${image.length} bytes)`);
  const data = image.subarray(start, start + length);
  const format = MAGICS.find(([, m]) => m.every((b, i) => data[i] === b))?.[0] ?? 'unknown';
  return { format, data };
}

/**
 * Decompress a bzImage's payload into the vmlinux ELF it holds. gzip
 * (node:zlib) and LZ4 (our own decoder) in process; xz and zstd through
 * their tools when installed. Throws saying what is missing otherwise.
 */
export function decompressPayload(p: BzImagePayload): Buffer {
  // Every format but gzip has the decompressed size appended by the kernel's build (size_append).
  const size = p.data.readUInt32LE(p.data.length - 4);
  const body = p.data.subarray(0, p.data.length - 4);
  switch (p.format) {
    case 'gzip':
      return zlib.gunzipSync(p.data);
    case 'lz4':
      return lz4LegacyDecode(body, size);
    case 'xz':
      return execFileSync('xz', ['-dc', '--single-stream'], { input: body, maxBuffer: 1 << 30 });
    case 'zstd':
      return execFileSync('zstd', ['-dc'], { input: body, maxBuffer: 1 << 30 });
    default:
      throw new Error(`a ${p.format} payload is not decompressed here`);
  }
}

/**
 * Whether an ELF image has the PVH entry point (the Xen ELF note
 * XEN_ELFNOTE_PHYS32_ENTRY, 18): QEMU's -kernel boots such an ELF directly,
 * without the real-mode setup and without decompressing it in the guest.
 */
export function hasPvhEntry(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || elf.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    let n = Number(elf.readBigUInt64LE(ph + 8));
    const end = n + Number(elf.readBigUInt64LE(ph + 32));
    while (n + 12 <= end && end <= elf.length) {
      const namesz = elf.readUInt32LE(n);
      const descsz = elf.readUInt32LE(n + 4);
      const type = elf.readUInt32LE(n + 8);
      const name = elf.toString('latin1', n + 12, n + 12 + Math.max(0, namesz - 1));
      if (name === 'Xen' && type === 18) return true;
      n += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** What QEMU's -kernel gets: the vmlinux ELF booted through PVH, or the bzImage when that cannot be had. */
export interface BootableKernel {
  path: string;
  kind: 'pvh' | 'bzImage';
  /** the payload's compression */
  format: BzImagePayload['format'];
  /** why the bzImage is booted instead, if it is */
  note: string | null;
  extractMs: number;
}

/**
 * Extract the uncompressed vmlinux into `dir` when it can boot through PVH
 * (under TCG it saves the guest decompressing its own kernel and running
 * the real-mode setup: see docs/vm-tests.md for the figures); else boot the
 * bzImage. ZIU_TEST_GUEST_BOOT=bzimage boots the bzImage anyway.
 */
export function bootableKernel(k: GuestKernel, dir: string): BootableKernel {
  const t0 = performance.now();
  const image = fs.readFileSync(k.bzImage);
  const fallback = (format: BzImagePayload['format'], note: string): BootableKernel => ({ path: k.bzImage, kind: 'bzImage', format, note, extractMs: performance.now() - t0 });
  if (process.env['ZIU_TEST_GUEST_BOOT'] === 'bzimage') return fallback('unknown', 'ZIU_TEST_GUEST_BOOT=bzimage');
  let p: BzImagePayload;
  try {
    p = bzImagePayload(image);
  } catch (err) {
    return fallback('unknown', (err as Error).message);
  }
  let elf: Buffer;
  try {
    elf = decompressPayload(p);
  } catch (err) {
    return fallback(p.format, `cannot decompress the ${p.format} payload: ${(err as Error).message}`);
  }
  if (!hasPvhEntry(elf)) return fallback(p.format, 'its vmlinux has no PVH entry note (CONFIG_PVH)');
  const out = path.join(dir, `vmlinux-${k.version}`);
  fs.writeFileSync(out, elf, { mode: 0o644 });
  return { path: out, kind: 'pvh', format: p.format, note: null, extractMs: performance.now() - t0 };
}
