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
  type RemoveResult,
} from './store.js';
export { vrouterAgentLines } from './vrouter.js';
