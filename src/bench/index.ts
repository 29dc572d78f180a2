// ziu bench: handover against restart, measured by the VM side; results, plots and the stats behind them.
export { runBench, type BenchOptions, type BenchResult } from './bench.js';
export { MODES, DEFAULTS, LIMITS, PAGE_SIZE, parseModes, checkMem, checkPorts, checkRate, checkSize, checkUpgrades, type Mode } from './options.js';
export {
  FILES,
  machine,
  summarizeRun,
  writeResults,
  summaryMarkdown,
  describeRun,
  cdf,
  type BenchDoc,
  type Machine,
  type ModeSummary,
  type Results,
  type Sample,
  type Setup,
} from './results.js';
export { percentile, summarize, pairRatio, type Summary, type PairRatio } from './stats.js';
export { plot, formatUs, COLORS, type Plot, type Series, type Axis } from './svg.js';
export { startTraffic, nowMs, type PortPair, type Traffic, type TrafficOptions, type TrafficReport } from './traffic.js';
export { measureWindow, measureBaseline, describeSample, phaseAt, pause, type Baseline, type Replacement, type WindowOptions } from './window.js';
