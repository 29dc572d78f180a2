// Mem files: a datapath instance's memory, allocated and zeroed before it starts.
export { checkNamePart, parseMemFileName, type MemFileName } from './names.js';
export {
  MemFileStore,
  roundToPages,
  type Backing,
  type CreateResult,
  type CreateSpec,
  type MemFile,
  type MemFileStoreOptions,
  type PoolReport,
  type RemoveResult,
  type SettleResult,
} from './store.js';
export type { DebtView, Intent, Settlement } from './pool.js';
export type { DebtRecord } from './ledger.js';
export { vrouterAgentLines } from './vrouter.js';
// Sizes as mem files and the datapath's memory flags take and print them.
export { formatBytes, parseSize } from '../hugepages/index.js';
