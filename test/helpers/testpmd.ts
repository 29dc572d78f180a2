// The testpmd launcher lives in src/dpdk so scripts/bench-forward uses the same one.
export { Testpmd, testpmdUnavailable, type TestpmdOptions, type TestpmdStats } from '../../src/dpdk/testpmd.js';
