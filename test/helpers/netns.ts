import { execa } from 'execa';

/** Why tap and netns tests cannot run here, or null. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root: tap devices and network namespaces need CAP_NET_ADMIN';
  return null;
}

/**
 * A network namespace of the test's own: a host on the far side of the tap
 * uplink. Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking), and
 * exist only inside namespaces the test made.
 */
export class Netns {
  readonly name: string;
  private constructor(name: string) {
    this.name = name;
  }

  static async create(tag: string): Promise<Netns> {
    const name = `ziu-${tag}-${process.pid}`;
    await execa('ip', ['netns', 'add', name]);
    const ns = new Netns(name);
    await ns.exec(['ip', 'link', 'set', 'lo', 'up']);
    return ns;
  }

  exec(cmd: string[]): ReturnType<typeof execa> {
    return execa('ip', ['netns', 'exec', this.name, ...cmd], { reject: false });
  }

  /** Move an interface (the datapath's tap) into the namespace and address it. */
  async adopt(ifname: string, cidr: string): Promise<void> {
    await execa('ip', ['link', 'set', 'dev', ifname, 'netns', this.name]);
    await this.exec(['ip', 'addr', 'add', cidr, 'dev', ifname]);
    await this.exec(['ip', 'link', 'set', 'dev', ifname, 'up']);
  }

  async delete(): Promise<void> {
    await execa('ip', ['netns', 'delete', this.name], { reject: false });
  }
}

export interface PingResult {
  transmitted: number;
  received: number;
}

export function parsePing(stdout: string): PingResult {
  const m = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
  return { transmitted: Number(m?.[1] ?? NaN), received: Number(m?.[2] ?? NaN) };
}

export interface PingReply {
  seq: number;
  /** when the reply arrived, ms since the epoch (ping -D) */
  at: number;
  rttMs: number;
}

export interface PingLog {
  replies: PingReply[];
  /** ping's own summary */
  transmitted: number;
  received: number;
  /** sequence numbers up to the last answered one that got no reply */
  lost: number[];
  stdout: string;
}

/**
 * iputils ping, running in the namespace until stop(): every reply with its
 * arrival time (-D), so that gaps can be placed in time. Loss is counted by
 * sequence number up to the last reply, so the one request in flight when it
 * is stopped does not count.
 */
export function pingStream(ns: Netns, target: string, intervalS: number): { pid: number; stop(): Promise<PingLog> } {
  const child = execa('ip', ['netns', 'exec', ns.name, 'ping', '-D', '-n', '-i', String(intervalS), target], { reject: false });
  return {
    pid: child.pid!,
    async stop() {
      // `ip netns exec` execs ping: the pid is ping's, and SIGINT makes it print its summary.
      child.kill('SIGINT');
      const r = await child;
      const stdout = String(r.stdout);
      const replies: PingReply[] = [];
      for (const m of stdout.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms$/gm)) {
        replies.push({ at: Number(m[1]) * 1000, seq: Number(m[2]), rttMs: Number(m[3]) });
      }
      const seen = new Set(replies.map((p) => p.seq));
      const last = Math.max(0, ...seen);
      const lost: number[] = [];
      for (let s = 1; s <= last; s++) if (!seen.has(s)) lost.push(s);
      return { replies, ...parsePing(stdout), lost, stdout };
    },
  };
}

/** Within [from, to] (ms since the epoch): the longest time between two replies, and the longest round trip. */
export function pingWorst(log: PingLog, from: number, to: number): { gapMs: number; gapAt: number; rttMs: number } {
  let gapMs = 0;
  let gapAt = 0;
  let rttMs = 0;
  for (let i = 1; i < log.replies.length; i++) {
    const a = log.replies[i - 1]!;
    const b = log.replies[i]!;
    if (b.at < from || a.at > to) continue;
    if (b.at - a.at > gapMs) {
      gapMs = b.at - a.at;
      gapAt = a.at;
    }
    rttMs = Math.max(rttMs, b.rttMs);
  }
  return { gapMs, gapAt, rttMs };
}
