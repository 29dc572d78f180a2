/** Guest memory: SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG. */
import { DecodeError } from '../decode-error.js';
import { checkU64, hex, MAX_MEM_REGIONS } from '../wire.js';
import { checkFds, checkSize, refuse, type Codec, type RawRequest } from './raw.js';

/** One region of front-end memory, as on the wire. */
export interface MemoryRegion {
  guestPhysAddr: bigint;
  memorySize: bigint;
  /** the front-end's virtual address of the region; ring addresses are in this space */
  userspaceAddr: bigint;
  /** where the region starts in the fd: map memorySize + mmapOffset bytes from 0 */
  mmapOffset: bigint;
}

/** A region with the fd it is mapped from. */
export interface MappedRegion extends MemoryRegion {
  fd: number;
}

export interface SetMemTableRequest {
  type: 'SET_MEM_TABLE';
  needReply: boolean;
  /** 1..8 regions, each with its own fd, in wire order */
  regions: MappedRegion[];
}

export interface AddMemRegRequest {
  type: 'ADD_MEM_REG';
  needReply: boolean;
  region: MappedRegion;
}

export interface RemMemRegRequest {
  type: 'REM_MEM_REG';
  needReply: boolean;
  /** identified by guest address, user address and size; mmapOffset is carried but meaningless */
  region: MemoryRegion;
  /**
   * The spec lets a back-end accept an fd here "for compatibility with
   * existing incorrect implementations"; it must be closed unused.
   */
  strayFd: number | null;
}

export type MemoryRequest = SetMemTableRequest | AddMemRegRequest | RemMemRegRequest;

export const REGION_SIZE = 32;
const MEM_TABLE_HEADER = 8; // u32 nregions, u32 padding
const SINGLE_REGION_SIZE = 8 + REGION_SIZE; // u64 padding, region
const U64_END = 1n << 64n;

function readRegion(body: Buffer, at: number): MemoryRegion {
  return {
    guestPhysAddr: body.readBigUInt64LE(at),
    memorySize: body.readBigUInt64LE(at + 8),
    userspaceAddr: body.readBigUInt64LE(at + 16),
    mmapOffset: body.readBigUInt64LE(at + 24),
  };
}

function writeRegion(out: Buffer, at: number, r: MemoryRegion): void {
  checkU64(r.guestPhysAddr, 'guestPhysAddr');
  checkU64(r.memorySize, 'memorySize');
  checkU64(r.userspaceAddr, 'userspaceAddr');
  checkU64(r.mmapOffset, 'mmapOffset');
  out.writeBigUInt64LE(r.guestPhysAddr, at);
  out.writeBigUInt64LE(r.memorySize, at + 8);
  out.writeBigUInt64LE(r.userspaceAddr, at + 16);
  out.writeBigUInt64LE(r.mmapOffset, at + 24);
}

/** What is wrong with one region on its own, if anything. */
function regionProblem(r: MemoryRegion, label: string, mapped: boolean): string | undefined {
  if (r.memorySize === 0n) return `${label} has size 0`;
  // A range may end exactly at 2^64 (its last byte is 2^64-1), not beyond.
  if (r.guestPhysAddr + r.memorySize > U64_END) {
    return `${label}: guest-physical range ${hex(r.guestPhysAddr)} + ${hex(r.memorySize)} overflows 64 bits`;
  }
  if (r.userspaceAddr + r.memorySize > U64_END) {
    return `${label}: user range ${hex(r.userspaceAddr)} + ${hex(r.memorySize)} overflows 64 bits`;
  }
  if (mapped && r.mmapOffset + r.memorySize > U64_END) {
    return `${label}: mmap offset ${hex(r.mmapOffset)} + size ${hex(r.memorySize)} overflows 64 bits`;
  }
  return undefined;
}

function range(start: bigint, size: bigint): string {
  return `[${hex(start)}, ${hex(start + size)})`;
}

/**
 * Two regions covering the same guest-physical or user addresses make
 * translation ambiguous; neither QEMU nor virtio-user ever sends that.
 */
function overlapProblem(regions: readonly MemoryRegion[]): string | undefined {
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      const a = regions[i]!;
      const b = regions[j]!;
      if (a.guestPhysAddr < b.guestPhysAddr + b.memorySize && b.guestPhysAddr < a.guestPhysAddr + a.memorySize) {
        return `region overlap: regions ${i} and ${j} share guest-physical addresses (${range(a.guestPhysAddr, a.memorySize)} and ${range(b.guestPhysAddr, b.memorySize)})`;
      }
      if (a.userspaceAddr < b.userspaceAddr + b.memorySize && b.userspaceAddr < a.userspaceAddr + a.memorySize) {
        return `region overlap: regions ${i} and ${j} share user addresses (${range(a.userspaceAddr, a.memorySize)} and ${range(b.userspaceAddr, b.memorySize)})`;
      }
    }
  }
  return undefined;
}

// QEMU refuses to send an empty table ("Failed initializing vhost-user memory
// map") and virtio-user always has its own memory, so 0 regions is refused.
function decodeMemTable(raw: RawRequest): SetMemTableRequest | DecodeError {
  if (raw.body.length < MEM_TABLE_HEADER) {
    return refuse(raw, 'bad-size', `payload is ${raw.body.length} bytes, expected at least ${MEM_TABLE_HEADER}`);
  }
  const n = raw.body.readUInt32LE(0);
  if (n === 0) return refuse(raw, 'bad-value', 'the table has 0 regions; at least 1 is needed');
  if (n > MAX_MEM_REGIONS) {
    return refuse(raw, 'bad-value', `the table has ${n} regions; at most ${MAX_MEM_REGIONS} fit in one message`);
  }
  const err =
    checkSize(raw, MEM_TABLE_HEADER + n * REGION_SIZE) ??
    checkFds(raw, n, n === 1 ? 'one per region' : `one per region, ${n} regions`);
  if (err !== undefined) return err;
  const regions: MemoryRegion[] = [];
  for (let i = 0; i < n; i++) {
    const r = readRegion(raw.body, MEM_TABLE_HEADER + i * REGION_SIZE);
    const problem = regionProblem(r, `region ${i}`, true);
    if (problem !== undefined) return refuse(raw, 'bad-value', problem);
    regions.push(r);
  }
  const overlap = overlapProblem(regions);
  if (overlap !== undefined) return refuse(raw, 'bad-value', overlap);
  return {
    type: 'SET_MEM_TABLE',
    needReply: raw.needReply,
    regions: regions.map((r, i) => ({ ...r, fd: raw.fds[i]! })),
  };
}

function encodeMemTable(req: SetMemTableRequest): { payload: Buffer; fds: number[] } {
  const out = Buffer.alloc(MEM_TABLE_HEADER + req.regions.length * REGION_SIZE);
  out.writeUInt32LE(req.regions.length, 0);
  req.regions.forEach((r, i) => writeRegion(out, MEM_TABLE_HEADER + i * REGION_SIZE, r));
  return { payload: out, fds: req.regions.map((r) => r.fd) };
}

/** ADD/REM_MEM_REG payload: u64 padding, then one region. fds are checked by the caller first. */
function decodeSingle(raw: RawRequest, mapped: boolean): MemoryRegion | DecodeError {
  const r = readRegion(raw.body, 8);
  const problem = regionProblem(r, 'region', mapped);
  return problem === undefined ? r : refuse(raw, 'bad-value', problem);
}

function encodeSingle(r: MemoryRegion): Buffer {
  const out = Buffer.alloc(SINGLE_REGION_SIZE);
  writeRegion(out, 8, r);
  return out;
}

const memTable: Codec<SetMemTableRequest> = { decode: decodeMemTable, encode: encodeMemTable };

const addMemReg: Codec<AddMemRegRequest> = {
  decode(raw) {
    const err = checkSize(raw, SINGLE_REGION_SIZE) ?? checkFds(raw, 1);
    if (err !== undefined) return err;
    const r = decodeSingle(raw, true);
    if (r instanceof DecodeError) return r;
    return { type: 'ADD_MEM_REG', needReply: raw.needReply, region: { ...r, fd: raw.fds[0]! } };
  },
  encode: (req) => ({ payload: encodeSingle(req.region), fds: [req.region.fd] }),
};

const remMemReg: Codec<RemMemRegRequest> = {
  decode(raw) {
    const err = checkSize(raw, SINGLE_REGION_SIZE) ?? (raw.fds.length > 1 ? checkFds(raw, 0, 'or 1 to be closed unused') : undefined);
    if (err !== undefined) return err;
    const r = decodeSingle(raw, false);
    if (r instanceof DecodeError) return r;
    return { type: 'REM_MEM_REG', needReply: raw.needReply, region: r, strayFd: raw.fds[0] ?? null };
  },
  encode: (req) => ({ payload: encodeSingle(req.region), fds: req.strayFd === null ? [] : [req.strayFd] }),
};

export const memoryCodecs = {
  SET_MEM_TABLE: memTable,
  ADD_MEM_REG: addMemReg,
  REM_MEM_REG: remMemReg,
} satisfies { [K in MemoryRequest['type']]: Codec<Extract<MemoryRequest, { type: K }>> };
