import fs from 'node:fs';

export interface Mapping {
  start: bigint;
  end: bigint;
  /** the file offset mapped at start */
  offset: bigint;
  /** bytes of it mapped in (Rss) */
  rss: number;
}

/** A process's mappings of the memfds called `name` (the test guests' by default), from /proc/<pid>/smaps. */
export function guestMappings(pid: number, name = 'ziu-test-guest'): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | null = null;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      cur = head[4] === `/memfd:${name} (deleted)` ? { start: BigInt(`0x${head[1]}`), end: BigInt(`0x${head[2]}`), offset: BigInt(`0x${head[3]}`), rss: 0 } : null;
      if (cur) out.push(cur);
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && cur) cur.rss = Number(rss[1]) * 1024;
  }
  return out;
}

/** Whether each page of [addr, addr + len) is in the process's page tables (/proc/<pid>/pagemap, bit 63). */
export function mappedPages(pid: number, addr: bigint, len: number): boolean[] {
  const first = addr / 4096n;
  const n = Number((addr + BigInt(len) - 1n) / 4096n - first + 1n);
  const buf = Buffer.alloc(8 * n);
  const fd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    fs.readSync(fd, buf, 0, buf.length, Number(first * 8n));
  } finally {
    fs.closeSync(fd);
  }
  return Array.from({ length: n }, (_, i) => buf.readBigUInt64LE(8 * i) >> 63n === 1n);
}
