import { realHost, type HugepageHost } from '../hugepages/index.js';
import { UsageError } from '../errors.js';
import { MemFileStore } from '../memfile/index.js';

/**
 * What every command works against: the host's hugepage files and ziu's mem
 * file store. ZIU_SYSFS_ROOT and ZIU_PROCFS_ROOT move sysfs and procfs (for
 * tests on a fake tree, or a container with the host's /sys mounted elsewhere).
 */
export interface Context {
  host: HugepageHost;
  store: MemFileStore;
  privileged: boolean;
}

export function context(env: NodeJS.ProcessEnv = process.env): Context {
  const host = realHost({ sysRoot: env['ZIU_SYSFS_ROOT'] || '/sys', procRoot: env['ZIU_PROCFS_ROOT'] || '/proc' });
  const privileged = process.getuid?.() === 0;
  return { host, store: new MemFileStore({ host, privileged }), privileged };
}

/** Refuse early, before anything changes, when a command needs root. */
export function requireRoot(ctx: Context, what: string): void {
  if (!ctx.privileged) throw new UsageError(`${what} needs root (running as uid ${process.getuid?.()})`);
}
