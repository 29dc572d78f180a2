import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatCpuList, type Placement } from '../sched/placement.js';

/**
 * This package's ziu-datapath executable: what the demo, the bench and the
 * tests start. src/datapath/bin.ts and dist/datapath/bin.js sit at the same
 * depth below the package root.
 */
export const DATAPATH_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ziu-datapath.js');

/** argv to run it with the current node: [node, bin/ziu-datapath.js]. */
export function datapathArgv(): string[] {
  return [process.execPath, DATAPATH_BIN];
}

/** The flags that place its packet worker (--worker-cpus, --worker-priority); none for what is not set. */
export function workerArgs(p: Placement): string[] {
  return [...(p.cpus ? ['--worker-cpus', formatCpuList(p.cpus)] : []), ...(p.priority ? ['--worker-priority', String(p.priority)] : [])];
}
