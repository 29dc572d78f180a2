import fs from 'node:fs';
/**
 * The three ways of replacing the serving datapath that the bench compares.
 * Each one replaces rig.serving by a new instance, or throws with the rig's
 * serving instance as it is (maybe none) for teardown to stop.
 */
import { ZiuError } from '../errors.js';
import { round } from './stats.js';
import { upgrade } from '../upgrade/index.js';
import type { Mode } from './options.js';
import { PAGE_SIZE } from './options.js';
import type { Rig } from './rig.js';
import type { Replacement } from './window.js';

export function replace(rig: Rig, mode: Mode): Promise<Replacement> {
  switch (mode) {
    case 'handover':
      return handover(rig);
    case 'restart':
      return restart(rig, { cold: false });
    case 'restart-cold':
      return restart(rig, { cold: true });
  }
}

/** `ziu upgrade` as built: the new instance beside the old one, every fd handed over, no frontend reconnects. */
async function handover(rig: Rig): Promise<Replacement> {
  const old = rig.serving;
  if (old === null) throw new Error('bench: no datapath instance is serving');
  const instance = rig.nextInstance();
  const r = await upgrade({
    control: rig.control,
    newCommand: rig.datapathArgv(instance),
    mem: rig.o.mem,
    pageSize: PAGE_SIZE,
    stateDir: rig.dir,
    store: rig.store,
    log: rig.o.log,
  });
  if (r.new) rig.pids.add(r.new.pid);
  if (r.memory) rig.memInstances.add(r.memory.instance);
  if (r.result !== 'committed' || r.new === null) {
    // Rolled back: the old instance still serves. Failed: maybe neither does; teardown stops both.
    if (r.result === 'failed') rig.serving = null;
    const why = r.rollback ? `rolled back in ${r.rollback.phase}: ${r.rollback.reason}` : (r.message ?? r.result);
    throw new ZiuError('ERR_ZIU_BENCH_UPGRADE', `handover upgrade ${r.upgradeId} did not commit (${why})`);
  }
  // The rig always asks for memory, so a committed upgrade made some.
  rig.serving = { pid: r.new.pid, instance, mem: r.memory!.instance };
  // Its fds once the orchestrator's control connection has gone on its side too (outside the timed part).
  await new Promise((resolve) => setTimeout(resolve, FD_SETTLE_MS));
  return {
    oldPid: old.pid,
    newPid: r.new.pid,
    switchoverUs: r.switchoverUs,
    wallMs: r.totalMs,
    phases: r.phases,
    prepopulateMs: r.memory?.prepopulateMs ?? null,
    fds: fdCount(r.new.pid),
    switchoverParts: r.switchoverParts ?? null,
  };
}

const FD_SETTLE_MS = 50;

/** How many fds a process holds; null if it cannot be read (gone, or not ours). */
function fdCount(pid: number): number | null {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/**
 * restart: the usual method at its honest best. The new instance's memory is
 * prepopulated before anything stops (as a handover does), then the old
 * instance is stopped, the new one started on the same socket paths, and
 * every frontend gets a new backend connection and resyncs its rings.
 *
 * restart-cold: the same, but the memory is made after the old instance
 * stopped: allocating and zeroing it is inside the outage, as for a datapath
 * that allocates and touches its memory at start (no --mem-file).
 */
async function restart(rig: Rig, o: { cold: boolean }): Promise<Replacement> {
  const t0 = performance.now();
  const phases: Record<string, number> = {};
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    try {
      return await fn();
    } finally {
      phases[name] = round(performance.now() - t, 3);
    }
  };
  const instance = rig.nextInstance();
  let prepopulateMs = 0;
  const reserve = async (): Promise<string> => {
    const m = await rig.createMem(instance);
    prepopulateMs = round(m.prepopulateMs, 3);
    return m.path!;
  };
  const memPath = o.cold ? null : await step('reserve', reserve);
  const old = await step('stop', () => rig.stopServing());
  const path = memPath ?? (await step('reserve', reserve));
  const newPid = await step('start', () => rig.launch(instance, path));
  rig.serving = { pid: newPid, instance, mem: instance };
  await step('release', () => rig.removeMem(old.mem));
  return { oldPid: old.pid, newPid, switchoverUs: null, wallMs: round(performance.now() - t0, 3), phases, prepopulateMs };
}
