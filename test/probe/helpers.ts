import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { LoopbackBackend, type BackendOptions } from './loopback-backend.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Threads of this process right now (the probe's loops are two of them while running). */
export function threadCount(): number {
  return fs.readdirSync('/proc/self/task').length;
}

/** A temp dir with tx/rx socket paths and a back-end double listening on both, tx routed to rx. */
export async function loopback(opts: BackendOptions & { listen?: boolean } = {}): Promise<{
  tx: string;
  rx: string;
  backend: LoopbackBackend;
  done: () => void;
}> {
  const tmp = tempDir('ziu-probe-');
  const tx = path.join(tmp.dir, 'tx.sock');
  const rx = path.join(tmp.dir, 'rx.sock');
  const backend = new LoopbackBackend(opts);
  backend.route(tx, rx);
  if (opts.listen !== false) {
    await backend.listen(tx);
    await backend.listen(rx);
  }
  return {
    tx,
    rx,
    backend,
    done: () => {
      backend.close();
      tmp.remove();
    },
  };
}
