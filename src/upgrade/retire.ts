import type { MemFileStore } from '../memfile/index.js';
import { stopProcess, waitGone, type ProcessRef } from '../process/index.js';
import type { Peer } from './peer.js';

/** How long a retired instance gets to exit after shutdown, before signals. */
const EXIT_WAIT_MS = 3000;

/**
 * The new instance serves and owns the devices (committed): the old one lets
 * go (commit), exits (shutdown), and its mem files, if ziu made them, are
 * removed, which gives back their hugepages. Never throws: what did not go
 * as it should is told to `note`, and `done` hears what was done. `stopped`
 * is false when the process is still there after SIGKILL (stuck in the kernel).
 */
export async function retireOld(
  peer: Peer | null,
  proc: number | ProcessRef,
  store: MemFileStore,
  tell: { note(problem: string): void; done(action: string): void },
  /** its mem files, when it can no longer say (it died): from an earlier status */
  knownMemFiles: string[] = [],
): Promise<{ stopped: boolean }> {
  const pid = typeof proc === 'number' ? proc : proc.pid;
  let memFiles: string[] = knownMemFiles;
  if (peer !== null) {
    try {
      memFiles = (await peer.status()).memFiles.map((m) => m.path);
      await peer.call('commit');
      await peer.call('shutdown');
    } catch (err) {
      tell.note(`the old instance (pid ${pid}) did not shut down cleanly: ${(err as Error).message}`);
    }
    peer.close();
  }
  if (!(await waitGone(proc, EXIT_WAIT_MS))) {
    try {
      const how = await stopProcess(proc, 1000);
      tell.note(`the old instance (pid ${pid}) had to be stopped with a signal (${how})`);
    } catch (err) {
      // Still there after SIGKILL: its mem files are mapped, so they stay too.
      tell.note(`the old instance (pid ${pid}) could not be stopped: ${(err as Error).message}`);
      return { stopped: false };
    }
  }
  tell.done(`stopped the old instance (pid ${pid})`);
  if (memFiles.length === 0) return { stopped: true };
  // Only the files in ziu's store: a datapath started by hand keeps its own.
  const ours = (await store.list()).filter((f) => f.path !== null && memFiles.includes(f.path));
  for (const instance of new Set(ours.map((f) => f.instance))) {
    try {
      await store.remove(instance);
      tell.done(`removed the old instance's memory (${instance})`);
    } catch (err) {
      tell.note(`could not remove the old instance's mem files (${instance}): ${(err as Error).message}`);
    }
  }
  return { stopped: true };
}
