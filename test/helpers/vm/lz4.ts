/**
 * LZ4's legacy frame, as the kernel's build writes it (`lz4 -l`): magic
 * 0x184C2102, then blocks, each a little-endian u32 of its compressed size
 * and an LZ4 block that decompresses to at most 8 MiB. The frame has no end
 * marker: it ends where its input does. Node's zlib has no LZ4, and the guest
 * kernel (Debian's cloud-amd64 is CONFIG_KERNEL_LZ4) must not depend on the
 * lz4 tool being installed.
 */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
const LEGACY_BLOCK_MAX = 8 << 20;

/** Decode a whole legacy frame; `sizeHint` (the decompressed size, when known) saves regrowing the output. */
export function lz4LegacyDecode(input: Uint8Array, sizeHint = 0): Buffer {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  if (input.length < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC) throw new Error('not an LZ4 legacy frame (magic 0x184C2102)');
  let out = Buffer.allocUnsafe(Math.max(sizeHint, LEGACY_BLOCK_MAX));
  let o = 0;
  let i = 4;
  while (i + 4 <= input.length) {
    const n = view.getUint32(i, true);
    i += 4;
    // Concatenated frames repeat the magic.
    if (n === LZ4_LEGACY_MAGIC) continue;
    if (n === 0 || i + n > input.length) throw new Error(`LZ4 block at byte ${i - 4} claims ${n} bytes, ${input.length - i} remain`);
    if (out.length - o < LEGACY_BLOCK_MAX) {
      const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, o + LEGACY_BLOCK_MAX));
      out.copy(bigger, 0, 0, o);
      out = bigger;
    }
    o = decodeBlock(input, i, i + n, out, o, o + LEGACY_BLOCK_MAX);
    i += n;
  }
  if (i !== input.length) throw new Error(`LZ4 legacy frame: ${input.length - i} stray bytes at its end`);
  return out.subarray(0, o);
}

/** One LZ4 block (sequences of literals and matches) from src[s, end) into dst at d; returns the new end of dst. */
export function decodeBlock(src: Uint8Array, s: number, end: number, dst: Uint8Array, d: number, dstEnd: number): number {
  const start = d;
  for (;;) {
    if (s >= end) throw new Error('LZ4 block ends inside a sequence');
    const token = src[s++]!;
    let lit = token >> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (s >= end) throw new Error('LZ4 block ends inside a literal length');
        b = src[s++]!;
        lit += b;
      } while (b === 255);
    }
    if (s + lit > end || d + lit > dstEnd) throw new Error('LZ4 literals run past the block or the output');
    // Short runs byte by byte: a subarray per sequence costs more than the copy.
    if (lit < 32) for (const stop = s + lit; s < stop; ) dst[d++] = src[s++]!;
    else {
      dst.set(src.subarray(s, s + lit), d);
      s += lit;
      d += lit;
    }
    // The last sequence has literals only.
    if (s === end) return d;
    if (s + 2 > end) throw new Error('LZ4 block ends inside a match offset');
    const offset = src[s]! | (src[s + 1]! << 8);
    s += 2;
    if (offset === 0 || offset > d - start) throw new Error(`LZ4 match offset ${offset} points before the block's output`);
    let len = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (s >= end) throw new Error('LZ4 block ends inside a match length');
        b = src[s++]!;
        len += b;
      } while (b === 255);
    }
    if (d + len > dstEnd) throw new Error('LZ4 match runs past the output');
    const from = d - offset;
    if (len < 32) {
      // Short (or overlapping: it repeats the last `offset` bytes): byte by byte, forwards.
      for (let f = from, stop = d + len; d < stop; ) dst[d++] = dst[f++]!;
    } else {
      // Long: copy what is there, in chunks that double while it overlaps (each a whole number of periods).
      for (const stop = d + len; d < stop; ) {
        const n = Math.min(d - from, stop - d);
        dst.copyWithin(d, from, from + n);
        d += n;
      }
    }
  }
}
