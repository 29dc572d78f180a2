import fs from 'node:fs';
import { execa, type ResultPromise } from 'execa';

/** Why DPDK interop tests cannot run here, or null. */
export function testpmdUnavailable(): string | null {
  if (!fs.existsSync('/usr/bin/dpdk-testpmd')) return 'dpdk-testpmd not installed (scripts/install-system-deps installs dpdk-dev)';
  if (process.getuid?.() !== 0) return 'dpdk-testpmd needs root';
  return null;
}

export interface TestpmdOptions {
  /** the vhost-user socket */
  path: string;
  /** server=1: testpmd listens and the backend connects */
  server?: boolean;
  mode: 'txonly' | 'rxonly' | 'icmpecho' | 'io' | 'macswap';
  /** frame size for txonly */
  txpkts?: number;
  /** destination MAC for txonly */
  ethPeer?: string;
  /** the port's own MAC */
  mac?: string;
  /** txonly rate limit is not in testpmd: burst and delay stand in for it */
  burst?: number;
}

export interface TestpmdStats {
  rxPackets: number;
  txPackets: number;
}

let seq = 0;

/**
 * dpdk-testpmd with net_virtio_user as a VM's vhost-user frontend, without
 * hugepages (--no-huge: its memory is a memfd it can share), on its own file
 * prefix so that parallel instances and leftovers never collide.
 */
export class Testpmd {
  readonly prefix: string;
  readonly proc: ResultPromise;
  #out = '';

  private constructor(prefix: string, proc: ResultPromise) {
    this.prefix = prefix;
    this.proc = proc;
    proc.stdout?.on('data', (d: Buffer) => (this.#out += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (this.#out += d.toString()));
  }

  static start(o: TestpmdOptions): Testpmd {
    const prefix = `ziu-test-${process.pid}-${++seq}`;
    const vdev = [`net_virtio_user0`, `path=${o.path}`, 'queues=1', 'queue_size=256', ...(o.server ? ['server=1'] : []), ...(o.mac ? [`mac=${o.mac}`] : [])].join(',');
    const args = [
      '-l', '0-1', '--no-pci', '--no-huge', '-m', '512', '--single-file-segments', `--file-prefix=${prefix}`, `--vdev=${vdev}`,
      '--', '--total-num-mbufs=4096', `--forward-mode=${o.mode}`, '--auto-start', '--stats-period=0',
      ...(o.txpkts ? [`--txpkts=${o.txpkts}`] : []),
      ...(o.ethPeer ? [`--eth-peer=0,${o.ethPeer}`] : []),
      ...(o.burst ? [`--burst=${o.burst}`] : []),
    ];
    // line-buffered, so its progress lines reach us as it prints them
    const proc = execa('stdbuf', ['-oL', '-eL', 'dpdk-testpmd', ...args], { reject: false, stdin: 'pipe', all: false, buffer: false });
    return new Testpmd(prefix, proc);
  }

  get output(): string {
    return this.#out;
  }

  /** Resolves once forwarding has started (testpmd waits for enter). */
  async ready(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!/Press enter to exit/.test(this.#out)) {
      if (this.proc.exitCode !== null || Date.now() > deadline) {
        throw new Error(`dpdk-testpmd did not start forwarding:\n${this.#out.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stop forwarding (enter), let it print its statistics and exit; clean its runtime dir. */
  async stop(): Promise<TestpmdStats> {
    if (this.proc.exitCode === null) {
      this.proc.stdin?.write('\n');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
      await this.proc;
      clearTimeout(timer);
    }
    fs.rmSync(`/var/run/dpdk/${this.prefix}`, { recursive: true, force: true });
    const acc = this.#out.slice(this.#out.lastIndexOf('Forward statistics for port 0'));
    const num = (re: RegExp): number => Number(re.exec(acc)?.[1] ?? NaN);
    return { rxPackets: num(/RX-packets:\s+(\d+)/), txPackets: num(/TX-packets:\s+(\d+)/) };
  }

  /** Kill it (cleanup after a failure) and reap it. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
    await this.proc;
    fs.rmSync(`/var/run/dpdk/${this.prefix}`, { recursive: true, force: true });
  }
}
