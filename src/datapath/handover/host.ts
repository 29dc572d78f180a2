import { ZiuError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Launch, Role } from '../../handover/messages/index.js';
import type { StateFormat } from '../../handover/state.js';
import type { Placement } from '../../sched/placement.js';
import type { DatapathConfig, TapSpec } from '../config.js';
import type { Engine } from '../engine.js';
import type { VhostPort, VhostPortOptions } from '../vhost/port.js';
import type { DatapathTables } from '../tables.js';

/** Faults a test can inject through ZIU_FAULT (comma-separated); never set in production. */
export type Fault = 'exit-before-ready' | 'never-ready' | 'slow-ready' | 'import-fail' | 'crash-after-resume' | 'hang-after-resume' | 'no-forward' | 'commit-fail';

export interface TapPort {
  spec: TapSpec;
  fd: number;
  enginePort: number;
}

/** The offload module's part in a handover (src/datapath/offload.ts, docs/offload.md), with --offload. */
export interface OffloadHandover {
  /** new side, at commit: take over the module's registration without a soft reset, reconcile it with the adopted flow table */
  adopt(): Promise<void>;
  /** old side, at commit: let the successor program the NIC */
  release(): void;
}

/** What the handover needs from the datapath it runs in. */
export interface HandoverHost {
  readonly config: DatapathConfig;
  readonly log: Logger;
  readonly engine: Engine;
  readonly ports: VhostPort[];
  readonly taps: TapPort[];
  readonly offload: OffloadHandover | null;
  readonly faults: ReadonlySet<Fault>;
  /** the bridge and flow tables: exported by the old side, adopted (or converted) by the new one */
  readonly tables: DatapathTables;
  readonly stateFormats: readonly StateFormat[];
  portOptions(spec: { name: string; path: string; mode: 'server' | 'client' }): VhostPortOptions;
  /** the control socket's path and listening fd (a successor takes it over) */
  control(): { path: string; listenerFd: number };
  /** new side, at commit: serve on the predecessor's control listener (or bind our own path) */
  takeOverControl(listenerFd: number | null): Promise<void>;
  /** old side, at commit: stop accepting on the control listener (the successor accepts now); open connections stay */
  stopAccepting(): void;
  /** new side, at commit: open configured ports the predecessor did not have */
  openMissingPorts(): Promise<void>;
  /** an sd_notify message to whoever it reports to now (resolves false when it could not be sent) */
  notify(fields: Record<string, string | number>): Promise<boolean>;
  /** what hello reports: how to start another instance like this one, or null */
  launch(): Launch | null;
  /**
   * new side, the last step of commit: this process is the service's main
   * process now. MAINPID=, READY=1 and STATUS= go to the service manager's
   * notify socket, and so does every later notice. null: it runs under no
   * service manager; false: the message could not be delivered.
   */
  becomeMain(status: string): Promise<boolean | null>;
  /** old side, at commit: the successor is the service's main process; the service hears nothing more from us (no STOPPING=1) */
  leaveService(): void;
  /** the placement its worker has been given (its own flags, or inherited at import), or null */
  worker(): Placement | null;
  /** place the worker (a new instance takes its predecessor's placement before it takes the rings) */
  placeWorker(want: Placement): unknown;
}

/**
 * What both sides of one instance share: where it is in a handover
 * (docs/handover-protocol.md, section 4), the upgrade it belongs to, and
 * the times of its last freeze, resume or thaw. An instance is the new side
 * of one upgrade and, once committed, the old side of the next.
 */
export interface Session {
  role: Role;
  upgradeId: string | null;
  last: Record<string, bigint>;
}

export function expectRole(s: Session, op: string, roles: Role[]): void {
  if (!roles.includes(s.role)) {
    throw new ZiuError('ERR_ZIU_HANDOVER_STATE', `${op}: this instance is ${s.role}; ${op} needs ${roles.join(' or ')}`);
  }
}
