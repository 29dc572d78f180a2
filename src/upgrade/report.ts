/** What `ziu upgrade` (and `ziu recover`) report: one document, also the journal's final word. */
import { EXIT } from '../errors.js';
import type { HandoverInfo } from '../handover/messages/index.js';
import type { PlanRow, Verdict } from '../hugepages/index.js';
import type { Applied } from '../sched/placement.js';
import type { NewCommand } from './reuse.js';

/**
 * How an upgrade ended. The two that change nothing and are not refusals are
 * spelled as issue 13 names them: 'would-upgrade' (--dry-run: every preflight
 * check passed) and 'up-to-date' (--skip-if-current: the running instance
 * already runs the new command's datapath and version).
 */
export type UpgradeResult = 'committed' | 'rolled_back' | 'refused' | 'failed' | 'would-upgrade' | 'up-to-date';

/** Where --mem would come from, and whether it fits beside the old instance (rows: the hugepage plan). */
export interface MemoryPlan {
  bytes: number;
  pageSize: number;
  backing: string;
  verdict: Verdict;
  rows: PlanRow[];
}

/** What preflight found out before anything changed. */
export interface PreflightReport {
  /** what `<new command> --handover-info` said it is and speaks */
  target: HandoverInfo;
  /** the running instance reports the same datapath and version */
  upToDate: boolean;
  /** --mem: null without it (or when preflight stopped before it) */
  memory: MemoryPlan | null;
}

export const PHASES = ['preflight', 'reserve', 'start', 'ready', 'transfer', 'freeze', 'resume', 'verify', 'commit'] as const;
export type Phase = (typeof PHASES)[number] | 'rollback';

export interface InstanceInfo {
  pid: number;
  version: string;
  instance: string;
  control: string;
  /** where its packet worker ran (read back from the kernel), when the datapath reports it */
  worker?: Applied | null;
}

export interface PortReport {
  name: string;
  kind: string;
  connected: boolean | null;
  /** frames were moving through it on the old instance just before the freeze */
  moving: boolean;
  /** frames counted on the new instance during verify (rx + tx) */
  verifyPackets: number | null;
}

export interface UpgradeReport {
  result: UpgradeResult;
  upgradeId: string;
  /** old instance's freeze to the new instance's first pass, CLOCK_MONOTONIC in both datapaths */
  switchoverUs: number | null;
  /**
   * Where the switchover went: old froze -> new thawed (with a direct takeover
   * one eventfd wake-up; else the control-plane round trip through us) and the
   * new worker's first pass.
   */
  switchoverParts?: { freezeToThawUs: number; thawToFirstPassUs: number; directTakeover: boolean };
  phases: Record<string, number>;
  ports: PortReport[];
  old: InstanceInfo | null;
  new: InstanceInfo | null;
  /** how the new instance was started: the running instance's configuration reused, or the command line given (set in preflight) */
  newCommand?: NewCommand;
  stateFormat: number | null;
  /**
   * The tables (docs/tables.md): the flow table format on each side, and
   * whether the new instance took the very same files (adopted) or built its
   * own from the old one's (converted, into `path`). null: no tables.
   */
  tables?: { bridge: 'adopted'; flow: 'adopted' | 'converted'; flowFormat: { old: number; new: number }; path: string | null } | null;
  deadManMs: number;
  /** the new instance's memory; instance names it in the mem file store (`ziu memfile remove <instance>`) */
  memory: { instance: string; path: string; bytes: number; pageSize: number; backing: string; prepopulateMs: number; notes: string[] } | null;
  /** once preflight has asked the new command (absent when it stopped before) */
  preflight?: PreflightReport;
  rollback?: {
    phase: Phase;
    reason: string;
    code: string;
    /**
     * After resume: whether the new instance handed the rings back, the devices
     * the old one took back in the state the new one left them, and those it
     * had to reset (the new one consumed their messages and is gone)
     */
    devices?: { handedBack: boolean; readopted: string[]; reset: string[] };
  };
  /** only with result 'failed' or 'refused': what to do */
  message?: string;
  warnings: string[];
  totalMs: number;
  /** the new instance's offload module after commit (docs/offload.md): registration, adopted, soft resets, reconcile */
  offload?: Record<string, unknown>;
}

/** Exit codes: rolled back is a failure (traffic stays on the old instance); failed, not rolled back, needs the operator. */
export const EXIT_FOR: Record<UpgradeResult, number> = {
  committed: EXIT.ok,
  rolled_back: EXIT.failed,
  refused: EXIT.refused,
  failed: EXIT.operator,
  'would-upgrade': EXIT.ok,
  'up-to-date': EXIT.ok,
};
