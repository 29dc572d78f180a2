/** ziu probe: a vhost-user front-end (the VM side) that measures what a VM would see. */
export {
  startProbe,
  startEcho,
  type ProbeOptions,
  type ProbeStats,
  type ProbeReport,
  type RunningProbe,
  type EchoOptions,
  type EchoStats,
  type EchoReport,
  type RunningEcho,
  startIdle,
  type IdleOptions,
  type IdleReport,
  type RunningIdle,
} from './probe.js';
export { negotiate, WANTED_PROTOCOL_FEATURES, type DeviceSetup, type Negotiated } from './frontend.js';
export { FrontendConnection } from './connection.js';
export { LIMITS, DEFAULTS } from './options.js';
export { formatMac, parseMac, parseIpv4, formatIpv4 } from './addr.js';
