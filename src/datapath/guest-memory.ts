import fs from 'node:fs';
import os from 'node:os';
import { closeFds } from '../native/fds.js';
import { check, native } from '../native/index.js';
import type { DpMemFault, DpMemLimits } from '../native/datapath-native.js';
import { formatBytes } from '../memfile/sizes.js';

/**
 * Guest memory (docs/datapath.md, "Guest memory"): what a frontend's memory
 * table may hold before the engine maps it, and how a fault the engine
 * absorbed is told to a person.
 */

/** Per-port caps on a frontend's memory table (--guest-mem-max, --guest-regions-max). */
export type GuestMemoryLimits = DpMemLimits;

/** vhost-user carries at most 8 regions without CONFIGURE_MEM_SLOTS, which we never offer. */
export const MAX_GUEST_REGIONS = 8;

/** 64 GiB: a large VM; a bigger one needs --guest-mem-max. */
export const DEFAULT_GUEST_MEMORY: GuestMemoryLimits = { maxBytes: 64n << 30n, maxRegions: MAX_GUEST_REGIONS };

interface Region {
  gpa: bigint;
  size: bigint;
  fd: number;
}

const bytes = (n: bigint): string => (n < 1n << 50n ? formatBytes(Number(n)) : `0x${n.toString(16)} bytes`);

/**
 * Why the engine must not map this table, or null. Checked before anything
 * is mapped or faulted in: the caps, then each region's file (never a call
 * into the file's own filesystem, which may be a FUSE or NFS server the
 * frontend controls).
 */
export function refuseTable(regions: readonly Region[], limits: GuestMemoryLimits): string | null {
  if (regions.length > limits.maxRegions) {
    return `${regions.length} memory regions: more than this port's cap of ${limits.maxRegions} (--guest-regions-max)`;
  }
  const total = regions.reduce((s, r) => s + r.size, 0n);
  if (total > limits.maxBytes) {
    return `${bytes(total)} of guest memory in ${regions.length} region${regions.length === 1 ? '' : 's'}: more than this port's cap of ${bytes(limits.maxBytes)} (--guest-mem-max)`;
  }
  for (const [i, r] of regions.entries()) {
    const seals = native.fileSeals(r.fd);
    if (seals === -os.constants.errno.EINVAL) {
      // not a shmem or hugetlbfs file
      return `memory region ${i} is ${describeFile(r.fd)}, whose page faults can block or fail: only memfd, tmpfs and hugetlbfs files are mapped`;
    }
    check(seals, 'fcntl F_GET_SEALS', { fd: r.fd });
  }
  return null;
}

/**
 * Let go of the fds of a table that was not mapped, or is no longer: one on
 * shmem or hugetlbfs closes at once; anything else (a file refused as FUSE,
 * NFS...) may wait on its server in close() and is closed on a thread of its
 * own, never this one (after 64 such closes still waiting, on this one).
 */
export function closeRegionFds(fds: readonly number[]): void {
  const quick: number[] = [];
  for (const fd of fds) {
    if (native.fileSeals(fd) >= 0 || native.closeDetached(fd) !== 0) quick.push(fd);
  }
  closeFds(quick);
}

/**
 * What an fd is and where it lives, from /proc only (its fdinfo names the
 * mount; mountinfo the filesystem): neither reaches the file's filesystem.
 */
export function describeFile(fd: number): string {
  let target = '?';
  let fstype = 'unknown';
  try {
    target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    const mnt = /^mnt_id:\s*(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const f = line.split(' ');
      if (f[0] !== mnt) continue;
      fstype = f[f.indexOf('-') + 1] ?? fstype;
      break;
    }
  } catch {
    // fd gone or /proc unreadable: say what we know
  }
  return `${target} on ${fstype === 'unknown' ? 'a filesystem not mounted here' : fstype}`;
}

/** A fault the engine absorbed, as a log line and lastError say it. */
export function describeFault(f: DpMemFault, region: Region | undefined): string {
  const where = region ? `memory region ${f.region} (gpa 0x${region.gpa.toString(16)}, ${bytes(region.size)})` : `memory region ${f.region}`;
  const why =
    f.code === 2
      ? 'its file no longer backs it: the frontend shrank (truncated) it after SET_MEM_TABLE'
      : f.code === 4 || f.code === 5
        ? 'a hardware memory error'
        : `SIGBUS code ${f.code}`;
  return `guest memory fault: ${where}, 0x${f.offset.toString(16)} bytes in: ${why}; the port's rings are stopped`;
}
