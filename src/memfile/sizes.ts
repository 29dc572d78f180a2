/** Sizes as mem files take and print them; a module of its own so that a light importer (ziu-datapath --handover-info) need not load the store. */
export { formatBytes, parseSize } from '../hugepages/sizes.js';
