import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decodeBlock, lz4LegacyDecode } from '../helpers/vm/lz4.js';
import { bzImagePayload, decompressPayload, hasPvhEntry } from '../helpers/vm/kernel.js';

const has = (tool: string): boolean => !spawnSync(tool, ['--version']).error;

/** Compressible bytes: runs, repeats and noise, as a kernel image has. */
function sample(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  const rnd = crypto.randomBytes(4096);
  for (let i = 0; i < bytes; ) {
    const kind = rnd[i % 4096]! % 3;
    const n = Math.min(bytes - i, 16 + (rnd[(i + 1) % 4096]! << 2));
    if (kind === 0) out.fill(rnd[(i + 2) % 4096]!, i, i + n);
    else if (kind === 1) rnd.copy(out, i, 0, Math.min(n, 4096));
    else out.write('ziu-vmlinux-'.repeat(Math.ceil(n / 12)).slice(0, n), i, 'latin1');
    i += n;
  }
  return out;
}

describe('LZ4 legacy frames', () => {
  it('decodes a block with literals, a copy and an overlapping match', () => {
    // token 0x23: 2 literals "ab", then a match of 3+4 = 7 at offset 2 -> "ababababa"; then a last sequence of 1 literal "!"
    const block = Buffer.from([0x23, 0x61, 0x62, 0x02, 0x00, 0x10, 0x21]);
    const out = Buffer.alloc(16);
    const end = decodeBlock(block, 0, block.length, out, 0, out.length);
    expect(out.toString('latin1', 0, end)).toBe('ababababa!');
  });

  it('refuses a match that reaches before the block, and a frame with stray bytes', () => {
    const block = Buffer.from([0x13, 0x61, 0x05, 0x00, 0x10, 0x21]);
    expect(() => decodeBlock(block, 0, block.length, Buffer.alloc(16), 0, 16)).toThrow('LZ4 match offset 5 points before the block\'s output');
    expect(() => lz4LegacyDecode(Buffer.from([0x02, 0x21, 0x4c, 0x18, 0x02]))).toThrow('1 stray bytes');
    expect(() => lz4LegacyDecode(Buffer.from('nope'))).toThrow('not an LZ4 legacy frame');
  });

  it.skipIf(!has('lz4'))('decodes what `lz4 -l` writes, several 8 MiB blocks long', () => {
    const data = sample(20 << 20);
    const frame = execFileSync('lz4', ['-l', '-c', '-9'], { input: data, maxBuffer: 1 << 26 });
    expect(lz4LegacyDecode(frame).equals(data)).toBe(true);
  });
});

/** A minimal ELF64 with one PT_NOTE holding `notes`. */
function elfWithNotes(notes: Array<{ name: string; type: number; desc: Buffer }>): Buffer {
  const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  const body = Buffer.concat(
    notes.map((n) => {
      const h = Buffer.alloc(12);
      h.writeUInt32LE(n.name.length + 1, 0);
      h.writeUInt32LE(n.desc.length, 4);
      h.writeUInt32LE(n.type, 8);
      return Buffer.concat([h, pad(Buffer.from(n.name + '\0')), pad(n.desc)]);
    }),
  );
  const ehdr = Buffer.alloc(64);
  ehdr.writeUInt32BE(0x7f454c46, 0);
  ehdr[4] = 2;
  ehdr[5] = 1;
  ehdr.writeBigUInt64LE(64n, 0x20);
  ehdr.writeUInt16LE(56, 0x36);
  ehdr.writeUInt16LE(1, 0x38);
  const phdr = Buffer.alloc(56);
  phdr.writeUInt32LE(4, 0);
  phdr.writeBigUInt64LE(120n, 8);
  phdr.writeBigUInt64LE(BigInt(body.length), 32);
  return Buffer.concat([ehdr, phdr, body]);
}

/** An x86 bzImage around `payload`: setup header (protocol 2.15), 2 setup sectors, the payload 0x100 into the protected-mode part. */
function bzImage(payload: Buffer): Buffer {
  const setupSects = 2;
  const image = Buffer.alloc((setupSects + 1) * 512 + 0x100 + payload.length);
  image[0x1f1] = setupSects;
  image.write('HdrS', 0x202, 'latin1');
  image.writeUInt16LE(0x20f, 0x206);
  image.writeUInt32LE(0x100, 0x248);
  image.writeUInt32LE(payload.length, 0x24c);
  payload.copy(image, (setupSects + 1) * 512 + 0x100);
  return image;
}

/** What the kernel's build appends to every payload but gzip: the decompressed size, u32 LE. */
function withSize(compressed: Buffer, size: number): Buffer {
  const t = Buffer.alloc(4);
  t.writeUInt32LE(size);
  return Buffer.concat([compressed, t]);
}

describe('the vmlinux inside a bzImage', () => {
  const vmlinux = Buffer.concat([elfWithNotes([{ name: 'Xen', type: 18, desc: Buffer.from([0, 0, 0, 1]) }]), sample(1 << 20)]);
  const formats: Array<{ format: string; tool: string | null; compress: () => Buffer }> = [
    { format: 'gzip', tool: null, compress: () => zlib.gzipSync(vmlinux) },
    { format: 'lz4', tool: 'lz4', compress: () => withSize(execFileSync('lz4', ['-l', '-c'], { input: vmlinux }), vmlinux.length) },
    { format: 'xz', tool: 'xz', compress: () => withSize(execFileSync('xz', ['-c', '--check=crc32'], { input: vmlinux }), vmlinux.length) },
    { format: 'zstd', tool: 'zstd', compress: () => withSize(execFileSync('zstd', ['-c', '-q'], { input: vmlinux }), vmlinux.length) },
  ];
  for (const f of formats) {
    it.skipIf(f.tool !== null && !has(f.tool))(`is found by the setup header, told ${f.format} by its magic, and decompressed`, () => {
      const p = bzImagePayload(bzImage(f.compress()));
      expect(p.format).toBe(f.format);
      const elf = decompressPayload(p);
      expect(elf.equals(vmlinux)).toBe(true);
      expect(hasPvhEntry(elf)).toBe(true);
    });
  }

  it('a payload it cannot take, or no setup header, is said so', () => {
    expect(() => decompressPayload(bzImagePayload(bzImage(withSize(Buffer.from('BZh91AY&SY'), 10))))).toThrow('a bzip2 payload is not decompressed here');
    expect(() => bzImagePayload(Buffer.alloc(4096))).toThrow('not a bzImage: no "HdrS" setup header');
    const short = bzImage(Buffer.alloc(16));
    short.writeUInt32LE(1 << 20, 0x24c);
    expect(() => bzImagePayload(short)).toThrow(/runs past the image/);
  });

  it('the PVH entry is the Xen note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY), not another Xen note', () => {
    expect(hasPvhEntry(elfWithNotes([{ name: 'Xen', type: 6, desc: Buffer.from('linux\0') }, { name: 'GNU', type: 18, desc: Buffer.alloc(4) }]))).toBe(false);
    expect(hasPvhEntry(elfWithNotes([{ name: 'GNU', type: 3, desc: Buffer.alloc(20) }, { name: 'Xen', type: 18, desc: Buffer.alloc(4) }]))).toBe(true);
    expect(hasPvhEntry(Buffer.from('not an elf'))).toBe(false);
  });
});
