import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';

/**
 * dpdk-testpmd with net_virtio_user as a VM's vhost-user frontend: DPDK's own
 * virtio driver talking to a ziu datapath. Used by the interop tests and by
 * scripts/bench-forward. With `switchPaths` it is the other side instead: a
 * plain DPDK switch, io forwarding between two net_vhost backend ports, the
 * peer ziu-datapath's forwarding rate is measured against (bench-forward),
 * and, as a client that reconnects, the DPDK switch whose restart
 * scripts/bench-dpdk-restart measures.
 */

/** Why testpmd cannot run here, or null. */
export function testpmdUnavailable(): string | null {
  const inPath = (cmd: string): boolean => (process.env['PATH'] ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, cmd)));
  if (!inPath('dpdk-testpmd')) return 'dpdk-testpmd not installed (scripts/install-system-deps installs dpdk-dev)';
  if (!inPath('stdbuf')) return 'stdbuf (coreutils) not found: testpmd readiness is read from its line-buffered stdout';
  if (process.getuid?.() !== 0) return 'dpdk-testpmd needs root';
  return null;
}

export interface TestpmdOptions {
  /** the vhost-user socket (as a VM: net_virtio_user) */
  path?: string;
  /** as a switch: two net_vhost backend ports listening on these sockets, forwarded to each other */
  switchPaths?: [string, string];
  /** server=1: testpmd listens and the backend connects */
  server?: boolean;
  /** as a switch, client=1: it connects to frontends that listen, and connects again after they restart */
  client?: boolean;
  mode: 'txonly' | 'rxonly' | 'icmpecho' | 'io' | 'macswap';
  /** frame size for txonly */
  txpkts?: number;
  /** destination MAC for txonly */
  ethPeer?: string;
  /** the port's own MAC */
  mac?: string;
  burst?: number;
  /** EAL lcore map (default -l 0-1), e.g. '0@0,1@1' to place the forwarding lcore */
  lcores?: string;
  /** prefix of the EAL file prefix, which also names /var/run/dpdk/<prefix> */
  tag?: string;
  /** --total-num-mbufs (default 4096) */
  mbufs?: number;
}

export interface TestpmdStats {
  rxPackets: number;
  txPackets: number;
  txDropped: number;
  /** every port's own, in port order (the fields above are port 0's) */
  ports: Array<{ rxPackets: number; txPackets: number; txDropped: number }>;
}

let seq = 0;

/**
 * One testpmd process, without hugepages (--no-huge: its memory is a memfd the
 * backend can map), on its own file prefix so that parallel instances and
 * leftovers never collide; its runtime dir is removed when it is stopped.
 */
export class Testpmd {
  readonly prefix: string;
  readonly mode: TestpmdOptions['mode'];
  readonly proc: ResultPromise;
  #out = '';

  private constructor(prefix: string, mode: TestpmdOptions['mode'], proc: ResultPromise) {
    this.prefix = prefix;
    this.mode = mode;
    this.proc = proc;
    // keep the tail: enough for readiness, the statistics and error messages
    const keep = (d: Buffer): void => {
      this.#out = (this.#out + d.toString()).slice(-65536);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    // A command that could not be started has no output of its own to show.
    void proc.then((r) => {
      if (r.failed && r.exitCode === undefined && r.signal === undefined) keep(Buffer.from(`${r.shortMessage}\n`));
    });
  }

  static start(o: TestpmdOptions): Testpmd {
    const prefix = `${o.tag ?? 'ziu-test'}-${process.pid}-${++seq}`;
    if ((o.path === undefined) === (o.switchPaths === undefined)) throw new Error('testpmd: give path (a VM) or switchPaths (a switch)');
    const vdevs = o.switchPaths
      ? o.switchPaths.map((p, i) => `net_vhost${i},iface=${p},queues=1${o.client ? ',client=1' : ''}`)
      : [['net_virtio_user0', `path=${o.path}`, 'queues=1', 'queue_size=256', ...(o.server ? ['server=1'] : []), ...(o.mac ? [`mac=${o.mac}`] : [])].join(',')];
    const args = [
      ...(o.lcores ? [`--lcores=${o.lcores}`] : ['-l', '0-1']),
      '--no-pci', '--no-huge', '-m', '512', '--single-file-segments', `--file-prefix=${prefix}`, ...vdevs.map((v) => `--vdev=${v}`),
      '--', `--total-num-mbufs=${o.mbufs ?? 4096}`, `--forward-mode=${o.mode}`, '--auto-start', '--stats-period=0',
      ...(o.txpkts ? [`--txpkts=${o.txpkts}`] : []),
      ...(o.ethPeer ? [`--eth-peer=0,${o.ethPeer}`] : []),
      ...(o.burst ? [`--burst=${o.burst}`] : []),
    ];
    // Into a pipe testpmd's stdout is block-buffered: line-buffered, its
    // progress lines ('Press enter to exit') reach us as it prints them.
    const proc = execa('stdbuf', ['-oL', '-eL', 'dpdk-testpmd', ...args], { reject: false, stdin: 'pipe', buffer: false });
    return new Testpmd(prefix, o.mode, proc);
  }

  get output(): string {
    return this.#out;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get pid(): number | null {
    return this.proc.pid ?? null;
  }

  /** Resolves once forwarding has started (testpmd then waits for enter). */
  async ready(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#out.includes('Press enter to exit')) {
      if (!this.running || Date.now() > deadline) {
        throw new Error(`dpdk-testpmd ${this.mode} did not start forwarding:\n${this.#out.trim().split('\n').slice(-15).join('\n')}`);
      }
      // Short: the restart benchmark's wall time ends here.
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Stop forwarding (enter), let it print its statistics and exit; clean its runtime dir. */
  async stop(): Promise<TestpmdStats> {
    if (this.running) {
      this.proc.stdin?.write('\n');
      if (!(await this.#exited(10_000))) await this.kill();
    }
    this.#removeRuntimeDir();
    const ports: TestpmdStats['ports'] = [];
    for (let i = 0; ; i++) {
      const at = this.#out.lastIndexOf(`Forward statistics for port ${i} `);
      if (at < 0) break;
      const acc = this.#out.slice(at);
      const num = (re: RegExp): number => Number(re.exec(acc)?.[1] ?? NaN);
      ports.push({ rxPackets: num(/RX-packets:\s+(\d+)/), txPackets: num(/TX-packets:\s+(\d+)/), txDropped: num(/TX-dropped:\s+(\d+)/) });
    }
    const p0 = ports[0] ?? { rxPackets: NaN, txPackets: NaN, txDropped: NaN };
    return { ...p0, ports };
  }

  /** SIGINT, then SIGKILL; reaped, and its runtime dir removed either way. */
  kill(): Promise<void> {
    return this.#end('SIGINT', 3_000, 2_000);
  }

  /** SIGTERM, as a service manager stops it (a restart); SIGKILL after graceMs. Its runtime dir goes too. */
  terminate(graceMs = 5_000): Promise<void> {
    return this.#end('SIGTERM', graceMs, graceMs);
  }

  async #end(signal: NodeJS.Signals, graceMs: number, killWaitMs: number): Promise<void> {
    if (this.running) {
      this.proc.kill(signal);
      if (!(await this.#exited(graceMs))) {
        this.proc.kill('SIGKILL');
        await this.#exited(killWaitMs);
      }
    }
    this.#removeRuntimeDir();
  }

  async #exited(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
    const done = this.proc.then(() => true as const);
    const r = await Promise.race([done, timeout]);
    clearTimeout(timer);
    return r;
  }

  #removeRuntimeDir(): void {
    fs.rmSync(`/var/run/dpdk/${this.prefix}`, { recursive: true, force: true });
  }
}
