import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { BootableKernel } from './kernel.js';
import type { Initramfs } from './initramfs.js';

export const QEMU = 'qemu-system-x86_64';

/** Why QEMU cannot be run here, or null. */
export function qemuUnavailable(): string | null {
  const r = spawnSync(QEMU, ['--version'], { encoding: 'utf8' });
  if (r.error) return `no ${QEMU} (install qemu-system-x86): ${r.error.message}`;
  if (r.status !== 0) return `${QEMU} --version exited ${r.status}: ${r.stderr.trim()}`;
  return null;
}

export interface Accel {
  name: 'kvm' | 'tcg';
  /** why this one */
  reason: string;
}

/**
 * KVM only where it really works: /dev/kvm opens and the CPU has VMX or SVM.
 * A PVM host offers /dev/kvm without either, and stock Debian kernels stop
 * there with KVM emulation failures; TCG boots them. ZIU_TEST_QEMU_ACCEL
 * (kvm or tcg) overrides.
 */
export function chooseAccel(cpuinfo = '/proc/cpuinfo'): Accel {
  const forced = process.env['ZIU_TEST_QEMU_ACCEL'];
  if (forced === 'kvm' || forced === 'tcg') return { name: forced, reason: 'ZIU_TEST_QEMU_ACCEL' };
  try {
    fs.closeSync(fs.openSync('/dev/kvm', 'r+'));
  } catch (err) {
    return { name: 'tcg', reason: `/dev/kvm cannot be opened (${(err as NodeJS.ErrnoException).code})` };
  }
  const flags = /^flags\s*:(.*)$/m.exec(fs.readFileSync(cpuinfo, 'utf8'))?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes('vmx') && !flags.includes('svm')) return { name: 'tcg', reason: '/dev/kvm is there but the CPU has neither VMX nor SVM (a PVM host: stock kernels fail with KVM emulation errors)' };
  return { name: 'kvm', reason: `/dev/kvm and ${flags.includes('vmx') ? 'VMX' : 'SVM'}` };
}

export type GuestMemory = { backend: 'memfd' } | { backend: 'file'; dir: string };

export interface QemuOptions {
  /** logs and the console transcript go here */
  dir: string;
  kernel: BootableKernel;
  initramfs: Initramfs;
  accel: Accel;
  memory: GuestMemory;
  memMiB: number;
  /** the guest's eth0 address, CIDR */
  guestIp: string;
  /** vCPUs (default 1): with mq, the guest's virtio_net uses one queue pair per online CPU */
  smp?: number;
  nic: {
    /** the vhost-user socket path */
    socket: string;
    /** QEMU's side of it: 'client' (the datapath listens; QEMU reconnects every second) or 'server' (QEMU listens, the datapath connects) */
    role: 'client' | 'server';
    mac: string;
    /** virtio-net-pci mq=on with this many queue pairs on the netdev */
    mq?: number;
  };
}

/**
 * QEMU trace events (log backend, to a file) that mark the vhost-user
 * connection's life: connects and accepts of the chardev's socket, and
 * vhost_dev_start/stop/cleanup, which QEMU runs when the backend appears or
 * goes. A handover must add none.
 */
export const CONNECTION_EVENTS = ['qio_channel_socket_connect_complete', 'qio_channel_socket_connect_fail', 'qio_channel_socket_accept_complete', 'vhost_dev_start', 'vhost_dev_stop', 'vhost_dev_cleanup'];

export function qemuArgs(o: QemuOptions): string[] {
  const size = `${o.memMiB}M`;
  const backend =
    o.memory.backend === 'memfd'
      ? `memory-backend-memfd,id=mem,size=${size},share=on`
      : // A directory: QEMU makes its file there and unlinks it at once, so nothing is left if it dies.
        `memory-backend-file,id=mem,size=${size},mem-path=${o.memory.dir},share=on`;
  const chardev = o.nic.role === 'server' ? `socket,id=vhu0,path=${o.nic.socket},server=on,wait=off` : `socket,id=vhu0,path=${o.nic.socket},reconnect=1`;
  const nic = [
    'virtio-net-pci',
    'netdev=net0',
    `mac=${o.nic.mac}`,
    // no iPXE option ROM: nothing boots from the NIC
    'romfile=',
    // TCG: QEMU 7.2 segfaults in msix_set_vector_notifiers when a vhost-user NIC starts with MSI-X (testpmd's backend too): legacy INTx
    ...(o.accel.name === 'tcg' ? ['vectors=0'] : []),
    ...(o.nic.mq !== undefined ? ['mq=on'] : []),
  ];
  return [
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-no-reboot',
    '-machine', `pc,accel=${o.accel.name}`,
    ...(o.accel.name === 'kvm' ? ['-cpu', 'host'] : []),
    '-smp', String(o.smp ?? 1),
    '-m', size,
    '-object', backend,
    '-numa', 'node,memdev=mem',
    '-kernel', o.kernel.path,
    '-initrd', o.initramfs.path,
    '-append', `console=ttyS0 panic=-1 quiet ziu.ip=${o.guestIp}`,
    '-chardev', 'stdio,id=con,signal=off',
    '-serial', 'chardev:con',
    '-chardev', chardev,
    '-netdev', `vhost-user,id=net0,chardev=vhu0${o.nic.mq !== undefined ? `,queues=${o.nic.mq}` : ''}`,
    '-device', nic.join(','),
    ...CONNECTION_EVENTS.flatMap((e) => ['-trace', `enable=${e}`]),
    '-trace', 'enable=vhost_user_write',
    '-D', path.join(o.dir, 'qemu-trace.log'),
  ];
}

/** A running QEMU guest: its serial console as a command channel, its stderr and its trace. */
export class Qemu {
  readonly child: ChildProcess;
  readonly startedAt: number;
  #console = '';
  #stderr = '';
  #waiters = new Set<() => void>();
  #exited: Promise<number | null>;
  #exitCode: number | null | undefined;
  #seq = 0;
  #dir: string;
  #transcript: fs.WriteStream;

  private constructor(child: ChildProcess, dir: string) {
    this.child = child;
    this.#dir = dir;
    this.startedAt = performance.now();
    this.#transcript = fs.createWriteStream(path.join(dir, 'console.log'));
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (s: string) => {
      this.#console += s.replace(/\r/g, '');
      this.#transcript.write(s);
      for (const w of this.#waiters) w();
    });
    // A QEMU that died makes writes fail (EPIPE): waitFor reports the exit instead.
    child.stdin!.on('error', () => undefined);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      this.#stderr += s;
    });
    this.#exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.#exitCode = code ?? (signal ? -1 : null);
        for (const w of this.#waiters) w();
        resolve(code);
      });
    });
  }

  /**
   * Start QEMU. It runs under `setpriv --pdeathsig KILL` where setpriv is
   * there, so that a test process that dies takes its guest with it.
   */
  static start(o: QemuOptions): Qemu {
    const args = qemuArgs(o);
    const pdeath = spawnSync('setpriv', ['--help'], { encoding: 'utf8' }).stdout?.includes('--pdeathsig') ?? false;
    const [cmd, argv] = pdeath ? ['setpriv', ['--pdeathsig', 'KILL', '--', QEMU, ...args]] : [QEMU, args];
    fs.writeFileSync(path.join(o.dir, 'qemu.cmd'), [cmd, ...argv].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a}'`)).join(' ') + '\n');
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    return new Qemu(child, o.dir);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get exitCode(): number | null | undefined {
    return this.#exitCode;
  }

  /** Everything QEMU wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** The guest's console so far (without carriage returns). */
  get console(): string {
    return this.#console;
  }

  /** QEMU's trace log: one line per event. */
  trace(): string[] {
    const f = path.join(this.#dir, 'qemu-trace.log');
    return fs.existsSync(f) ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean) : [];
  }

  /** How many of each connection event the trace holds. */
  connectionEvents(): Record<string, number> {
    const counts: Record<string, number> = Object.fromEntries(CONNECTION_EVENTS.map((e) => [e, 0]));
    for (const line of this.trace()) {
      const e = line.split(' ')[0]!;
      if (e in counts) counts[e]!++;
    }
    return counts;
  }

  /** vhost-user messages QEMU has sent so far (trace event vhost_user_write). */
  messagesSent(): number {
    return this.trace().filter((l) => l.startsWith('vhost_user_write ')).length;
  }

  /** Wait until the console (from `from` on) matches; throws with the console's tail on timeout or exit. */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const m = re.exec(this.#console.slice(from));
        if (m) return done(() => resolve(m));
        if (this.#exitCode !== undefined) return done(() => reject(new Error(`QEMU exited (${this.#exitCode}) before the console showed ${re}: ${this.#tail()}`)));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`the guest console did not show ${re} within ${timeoutMs} ms: ${this.#tail()}`))), timeoutMs);
      const done = (f: () => void): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        f();
      };
      this.#waiters.add(check);
      check();
    });
  }

  #tail(): string {
    return `console: ...${JSON.stringify(this.#console.slice(-1500))}; stderr: ${JSON.stringify(this.#stderr.slice(-1500))}`;
  }

  /** Until the guest's /init says @@READY <uptime>@@: ms since QEMU started, and the guest's own uptime then. */
  async booted(timeoutMs: number): Promise<{ bootMs: number; guestUptimeS: number }> {
    const m = await this.waitFor(/@@READY ([\d.]+)@@/, timeoutMs);
    const bootMs = performance.now() - this.startedAt;
    if (/@@(INSMOD-FAILED [\w-]+|NO-ETH0)@@/.test(this.#console)) throw new Error(`the guest's /init failed: ${this.#tail()}`);
    return { bootMs, guestUptimeS: Number(m[1]) };
  }

  /** Run one shell line in the guest; its output and exit status. */
  async run(line: string, timeoutMs = 10_000): Promise<{ out: string; status: number }> {
    const n = ++this.#seq;
    const from = this.#console.length;
    // The markers are printed by printf, so the line itself (were it echoed) cannot match them.
    this.child.stdin!.write(`printf '@@B%s@@\\n' ${n}; ${line}; printf '@@E%s %s@@\\n' ${n} "$?"\n`);
    const m = await this.waitFor(new RegExp(`@@B${n}@@\\n([\\s\\S]*?)@@E${n} (\\d+)@@`), timeoutMs, from);
    return { out: m[1]!, status: Number(m[2]) };
  }

  /** Read a file in the guest; throws unless cat succeeds. */
  async read(file: string): Promise<string> {
    const r = await this.run(`cat ${file}`);
    if (r.status !== 0) throw new Error(`cat ${file} in the guest: exit ${r.status}: ${r.out}`);
    return r.out.trim();
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when QEMU is gone. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.#exitCode === undefined) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.#exited;
      clearTimeout(t);
    }
    await new Promise<void>((r) => this.#transcript.end(r));
  }
}
