import type { Handler } from '../../control/server.js';
import { ZiuError } from '../../errors.js';
import { handoverInfo, type Hello, type HandoverStatus, type Role } from '../../handover/messages/index.js';
import { hex } from '../../handover/reader.js';
import { type HandoverHost, type Session } from './host.js';
import { NewSide } from './new-side.js';
import { OldSide } from './old-side.js';
import { serve } from './serve.js';

export type { Fault, HandoverHost, TapPort } from './host.js';
export type { Role } from '../../handover/messages/index.js';

/**
 * An instance's part in handovers (docs/handover-protocol.md): one role
 * (section 4) shared by its old side (export, freeze, thaw) and its new side
 * (import, resume), since an instance is the new side of one upgrade and the
 * old side of the next. The protocol's control ops dispatch here, typed by
 * src/handover/messages.
 *
 * old side: active -> exporting -> frozen -> handed-over (or back to active: thaw, abort);
 * new side: standby -> imported -> resumed -> active (commit), or back to standby (abort).
 */
export class Handover {
  #s: Session;
  #host: HandoverHost;
  #old: OldSide;
  #new: NewSide;

  constructor(host: HandoverHost, role: 'active' | 'standby', upgradeId: string | null = null) {
    const log = host.log.child({ component: 'handover' });
    this.#host = host;
    this.#s = { role, upgradeId, last: {} };
    this.#old = new OldSide(this.#s, host, log);
    this.#new = new NewSide(this.#s, host, log);
  }

  get role(): Role {
    return this.#s.role;
  }

  /** The upgrade this instance is taking part in; null while it is plainly active. */
  get upgradeId(): string | null {
    return this.#s.role === 'active' ? null : this.#s.upgradeId;
  }

  handlers(): Record<string, Handler> {
    return {
      hello: serve('hello', () => ({ body: this.hello() })),
      export: serve('export', (req) => this.#old.export(req)),
      import: serve('import', (req, fds) => this.#new.import(req, fds)),
      freeze: serve('freeze', (req) => this.#old.freeze(req)),
      resume: serve('resume', (req, fds) => this.#new.resume(req, fds)),
      thaw: serve('thaw', (req, fds) => this.#old.thaw(req, fds)),
      handback: serve('handback', () => this.#new.handback()),
      commit: serve('commit', () => this.#commit()),
      abort: serve('abort', () => this.#abort()),
    };
  }

  hello(): Hello {
    const host = this.#host;
    return {
      ...handoverInfo(host.stateFormats, host.config.flowFormats),
      instance: host.config.instance,
      pid: process.pid,
      role: this.#s.role,
      control: host.control().path,
      worker: host.worker(),
      launch: host.launch(),
      tables: host.tables.exportWire(),
    };
  }

  status(): HandoverStatus {
    const t = this.#host.engine.times();
    return {
      role: this.#s.role,
      upgradeId: this.#s.upgradeId,
      frozen: t.frozen,
      frozenNs: hex(t.frozenNs),
      thawedNs: hex(t.thawedNs),
      firstPassNs: hex(t.firstPassNs),
      last: Object.fromEntries(Object.entries(this.#s.last).map(([k, v]) => [k, hex(v)])),
    };
  }

  #commit(): ReturnType<OldSide['commit']> | ReturnType<NewSide['commit']> {
    // Old side: the successor serves. New side: we are the datapath now.
    if (this.#s.role === 'frozen' || this.#s.role === 'handed-over') return this.#old.commit();
    return this.#new.commit();
  }

  #abort(): ReturnType<OldSide['abort']> {
    const role = this.#s.role;
    if (role === 'standby' || role === 'active') return { body: { role } };
    if (role === 'imported') return this.#new.abort();
    if (role === 'exporting') return this.#old.abort();
    throw new ZiuError('ERR_ZIU_HANDOVER_STATE', `abort: not possible while ${role}; use thaw (old side) or stop the instance (new side)`);
  }
}
