// The host's hugepages: what is there, what fits, reserving, releasing, mounting.
export { HUGETLBFS_MAGIC, realHost, type FsFacts, type HugepageHost, type RealHostOptions } from './host.js';
export {
  formatBytes,
  MAX_SIZE,
  PAGE_1G,
  PAGE_2M,
  PAGE_SIZES,
  pageSizeInfo,
  parsePageSize,
  parseSize,
  type PageSizeInfo,
} from './sizes.js';
export type { BuddyNode, HugetlbfsMount } from './procfs.js';
export { readStatus, type HugepageStatus, type NodePages, type PageSizeStatus } from './status.js';
export {
  growBy,
  HugepagesShortError,
  release,
  reserve,
  shrinkBy,
  type ChangeByOptions,
  type ReleaseOptions,
  type ReleaseResult,
  type ReserveOptions,
  type ReserveResult,
} from './reserve.js';
export { plan, type Plan, type PlanOptions, type PlanRow, type Verdict, type Want } from './plan.js';
export { defaultMountDir, ensureMount, unmount, type MountResult } from './mount.js';
