import fs from 'node:fs';
import { execa } from 'execa';
import { ControlServer } from '../control/server.js';
import { ZiuError } from '../errors.js';
import { logger, type Logger } from '../log.js';
import { check, native } from '../native/index.js';
import { VERSION } from '../version.js';
import type { DatapathConfig, TapSpec } from './config.js';
import { Engine } from './engine.js';
import { Notifier } from './notify.js';
import { VhostPort } from './vhost-port.js';

interface MemFile {
  path: string;
  fd: number;
  size: number;
}

interface TapPort {
  spec: TapSpec;
  fd: number;
  enginePort: number;
}

/**
 * ziu-datapath: a vhost-user backend with an L2 bridge between its vhost-user
 * ports and tap uplinks. Packets move in a C thread (the engine); this is the
 * control plane: ports, vhost-user messages, the control socket, readiness.
 */
export class Datapath {
  readonly config: DatapathConfig;
  readonly log: Logger;
  readonly startedAt = Date.now();
  #memFiles: MemFile[] = [];
  #engine: Engine | null = null;
  #ports: VhostPort[] = [];
  #taps: TapPort[] = [];
  #control: ControlServer | null = null;
  #notifier = new Notifier();
  #stopping: Promise<void> | null = null;

  constructor(config: DatapathConfig) {
    this.config = config;
    this.log = logger('datapath', { instance: config.instance });
  }

  /** Map memory, start the engine, open every port and the control socket, then say READY=1. */
  async start(): Promise<void> {
    try {
      for (const p of this.config.memFiles) this.#memFiles.push(openMemFile(p));
      const first = this.#memFiles[0]!;
      this.#engine = new Engine(first.fd, first.size, { macEntries: this.config.macEntries });
      for (const t of this.config.taps) this.#taps.push(await this.#openTap(t));
      for (const spec of this.config.vhostUser) {
        const port = new VhostPort({ ...spec, engine: this.#engine, log: this.log });
        this.#ports.push(port);
        await port.open();
      }
      this.#control = await ControlServer.listen(this.config.control, this.#handlers(), this.log);
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.log.info({ control: this.config.control, ports: this.#ports.length + this.#taps.length }, 'datapath ready');
    await this.#notifier.notify({ READY: 1, STATUS: `forwarding between ${this.#ports.length + this.#taps.length} ports`, MAINPID: process.pid });
  }

  async #openTap(spec: TapSpec): Promise<TapPort> {
    const fd = check(native.tapOpen(spec.ifname), 'open /dev/net/tun (TUNSETIFF)', { path: spec.ifname });
    try {
      await execa('ip', ['link', 'set', 'dev', spec.ifname, 'up']);
      return { spec, fd, enginePort: this.#engine!.addPort('tap', fd) };
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  #handlers(): Parameters<typeof ControlServer.listen>[1] {
    return {
      status: () => ({ body: { status: this.status() } }),
      shutdown: () => {
        setImmediate(() => void this.stop().then(() => process.exit(0)));
        return { body: { stopping: true } };
      },
    };
  }

  status(): Record<string, unknown> {
    const stats = this.#engine?.stats() ?? [];
    const counters = (port: number) => stats.find((s) => s.port === port) ?? null;
    return {
      version: VERSION,
      instance: this.config.instance,
      pid: process.pid,
      uptimeMs: Date.now() - this.startedAt,
      memFiles: this.#memFiles.map((m) => ({ path: m.path, bytes: m.size })),
      ports: [
        ...this.#ports.map((p) => ({ kind: 'vhost-user', ...p.status(), counters: counters(p.enginePort) })),
        ...this.#taps.map((t) => ({ kind: 'tap', name: t.spec.name, ifname: t.spec.ifname, counters: counters(t.enginePort) })),
      ],
    };
  }

  /** Stop forwarding, close every connection and socket, unmap memory. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await this.#notifier.notify({ STOPPING: 1 });
      this.#control?.close();
      for (const p of this.#ports) p.close();
      for (const t of this.#taps) {
        this.#engine?.removePort(t.enginePort);
        native.close(t.fd);
      }
      this.#engine?.destroy();
      for (const m of this.#memFiles) native.close(m.fd);
      this.log.info('datapath stopped');
    })();
    return this.#stopping;
  }
}

function openMemFile(path: string): MemFile {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR);
  } catch (cause) {
    throw new ZiuError('ERR_ZIU_MEMFILE', `cannot open --mem-file ${path}: ${(cause as Error).message}`, { cause });
  }
  const st = check(native.fstat(fd), 'fstat', { path, fd });
  if (st.size === 0) {
    native.close(fd);
    throw new ZiuError('ERR_ZIU_MEMFILE', `--mem-file ${path} is empty: create it with 'ziu memfile create'`);
  }
  return { path, fd, size: st.size };
}
