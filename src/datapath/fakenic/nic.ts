import { ControlServer, type Handler } from '../../control/server.js';
import { UsageError, ZiuError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { check, native } from '../../native/index.js';
import type { FnFlow, FnHandle, FnInjection, FnStatus } from '../../native/offload-native.js';
import { formatAddr } from '../offload-flows.js';

/**
 * The fake NIC (docs/offload.md): the stand-in for a SmartNIC that CI can
 * run, in a process of its own so that it outlives every datapath instance.
 * native/fakenic.c forwards; this is its control socket:
 *
 * - `attach`: the NIC's shared state (its "registers": flow table, counters,
 *   error injection) and one representor end per VF, for a datapath;
 * - `vm {vf}`: the VM's end of a VF's wire (a test's traffic source and sink);
 * - `inject {...}`: error injection for the fake module (tests);
 * - `status`: ownership, counters, flows; `shutdown`.
 */
export class FakeNic {
  readonly vfs: number;
  #h: FnHandle | null;
  #control: ControlServer | null = null;
  #log: Logger;

  private constructor(h: FnHandle, vfs: number, log: Logger) {
    this.#h = h;
    this.vfs = vfs;
    this.#log = log;
  }

  static async start(o: { control: string; vfs: number; flows: number; log: Logger }): Promise<FakeNic> {
    if (!Number.isInteger(o.vfs) || o.vfs < 1 || o.vfs > native.FN_MAX_VF) throw new UsageError(`--vfs ${o.vfs}: use 1 to ${native.FN_MAX_VF}`);
    if (!Number.isInteger(o.flows) || o.flows < 1 || o.flows > native.FN_MAX_FLOWS) throw new UsageError(`--flows ${o.flows}: use 1 to ${native.FN_MAX_FLOWS}`);
    const nic = new FakeNic(check(native.fnCreate(o.vfs, o.flows), 'fnCreate'), o.vfs, o.log);
    try {
      nic.#control = await ControlServer.listen(o.control, nic.#handlers(), o.log);
    } catch (err) {
      nic.close();
      throw err;
    }
    return nic;
  }

  get #handle(): FnHandle {
    if (this.#h === null) throw new ZiuError('ERR_ZIU_OFFLOAD', 'the fake NIC is closed');
    return this.#h;
  }

  #handlers(): Record<string, Handler> {
    return {
      attach: () => {
        const fds = check(native.fnFds(this.#handle), 'fnFds');
        this.#log.info({ vfs: this.vfs }, 'a datapath attached');
        return { body: { vfs: this.vfs, fds: ['shm', ...fds.host.map((_, i) => `rep/${i}`)] }, fds: [fds.shm, ...fds.host] };
      },
      vm: (req) => {
        const vf = req['vf'];
        if (typeof vf !== 'number' || !Number.isInteger(vf) || vf < 0 || vf >= this.vfs) throw new ZiuError('ERR_ZIU_USAGE', `vm: vf must be 0 to ${this.vfs - 1}`);
        return { body: { vf }, fds: [check(native.fnFds(this.#handle), 'fnFds').vm[vf]!] };
      },
      inject: (req) => {
        const inj: FnInjection = { failNext: -1, failPpm: -1, slowUs: -1, ops: -1, capacity: -1 };
        for (const k of Object.keys(inj) as Array<keyof FnInjection>) {
          const v = req[k];
          if (v === undefined) continue;
          if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ZiuError('ERR_ZIU_USAGE', `inject: ${k} must be a whole number >= 0`);
          inj[k] = v;
        }
        check(native.fnInject(this.#handle, inj), 'fnInject');
        this.#log.warn({ inj }, 'error injection set');
        return { body: { ok: true } };
      },
      status: () => ({ body: { nic: describeStatus(check(native.fnStatus(this.#handle), 'fnStatus')) } }),
      shutdown: () => {
        setImmediate(() => {
          this.close();
          process.exit(0);
        });
        return { body: { stopping: true } };
      },
    };
  }

  close(): void {
    this.#control?.close();
    this.#control = null;
    if (this.#h !== null) native.fnDestroy(this.#h);
    this.#h = null;
  }
}

/** The NIC's status as JSON: addresses as text. */
function describeStatus(s: FnStatus): Record<string, unknown> {
  const flow = (f: FnFlow) => ({ ...f, src: formatAddr(f.ipver, f.src), dst: formatAddr(f.ipver, f.dst) });
  return { ...s, flows: s.flows.map(flow), bridge: s.bridge.map((b) => ({ vf: b.vf, mac: [...b.mac].map((x) => x.toString(16).padStart(2, '0')).join(':') })) };
}
