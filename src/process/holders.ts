import fs from 'node:fs';
import path from 'node:path';
import { hasCode } from '../errors.js';
import { processRef, type ProcessRef } from './identity.js';

/** A file as the kernel names it: st_dev and st_ino (what /proc/<pid>/maps lists). */
export interface FileId {
  dev: bigint;
  ino: bigint;
}

/** The FileId of an open fd or a path (stat follows /proc/<pid>/fd links to deleted files too). */
export function fileId(st: fs.BigIntStats): FileId {
  return { dev: st.dev, ino: st.ino };
}

/**
 * The processes that still keep a file's memory alive: those that map it
 * (/proc/<pid>/maps) or hold it open (/proc/<pid>/fd). A hugetlbfs file that
 * was unlinked keeps its pages until the last of them lets go. Processes
 * that vanish while we look, or that we may not read, are skipped.
 */
export function processesHolding(file: FileId, procRoot = '/proc'): ProcessRef[] {
  const { major, minor } = splitDev(file.dev);
  const out: ProcessRef[] = [];
  for (const name of fs.readdirSync(procRoot)) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (!(mapsFile(path.join(procRoot, name, 'maps'), major, minor, file.ino) || holdsFd(path.join(procRoot, name, 'fd'), file))) continue;
    const ref = processRef(pid);
    if (ref !== null) out.push(ref);
  }
  return out;
}

/** glibc's dev_t encoding (gnu_dev_major/minor). */
function splitDev(dev: bigint): { major: number; minor: number } {
  return {
    major: Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)),
    minor: Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn)),
  };
}

/** A maps line: "start-end perms offset major:minor inode path"; major and minor in hex. */
function mapsFile(file: string, major: number, minor: number, ino: bigint): boolean {
  const text = readGone(file);
  if (text === null) return false;
  const dev = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
  const inode = ino.toString();
  for (const line of text.split('\n')) {
    const f = line.split(/\s+/, 5);
    if (f[4] === inode && f[3] === dev) return true;
  }
  return false;
}

function holdsFd(dir: string, file: FileId): boolean {
  let fds: string[];
  try {
    fds = fs.readdirSync(dir);
  } catch {
    return false;
  }
  for (const fd of fds) {
    const link = path.join(dir, fd);
    try {
      // Sockets, pipes and anon inodes read as "socket:[...]" and the like: only paths can be our file.
      if (!fs.readlinkSync(link).startsWith('/')) continue;
      const st = fs.statSync(link, { bigint: true });
      if (st.dev === file.dev && st.ino === file.ino) return true;
    } catch {
      // closed while we looked, or not ours to read
    }
  }
  return false;
}

/** A /proc file, or null when the process is gone or hides it. */
function readGone(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ESRCH') || hasCode(err, 'EACCES') || hasCode(err, 'EPERM')) return null;
    throw err;
  }
}
