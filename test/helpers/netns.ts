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
