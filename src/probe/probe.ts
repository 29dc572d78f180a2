/**
 * Running a probe in-process: ports up, C loops started, live stats, and a
 * stop() that drains, reports and releases everything it made (threads
 * joined, connections and listeners closed, memory unmapped, fds closed).
 */
import os from 'node:os';
import { randomInt } from 'node:crypto';
import { check, native } from '../native/index.js';
import type { ProbeHandle, ProbeNativeStats } from '../native/probe-native.js';
import { logger } from '../log.js';
import { BROADCAST_MAC, formatIpv4, formatMac, parseIpv4, parseMac, randomMac, type Mac } from './addr.js';
import { checkInteger, checkTimeoutMs } from '../options.js';
import { checkProbeSocket, checkQueues, checkRingSize, DEFAULTS, LIMITS } from './options.js';
import { ProbePort, type PortMode } from './port.js';
import { isPlaced, placeThread, type Applied, type Placement } from '../sched/placement.js';

export interface ProbeOptions {
  /** vhost-user socket of the sending port */
  tx: string;
  /** vhost-user socket of the receiving port; the same path as tx makes one port that sends and receives */
  rx: string;
  /** frames per second, 1..10^7 */
  rate: number;
  /** Ethernet frame bytes without FCS, 64..9000 */
  size: number;
  /** listen on the socket paths (the back-end connects; survives back-end restarts) instead of connecting */
  server?: boolean;
  /** descriptors per ring: a power of two, 64..4096 (default 256) */
  ringSize?: number;
  /**
   * queue pairs per port, 1..8 (default 1), as QEMU's queues=N: frames go
   * round-robin over the TX queues (queue k from the port's MAC with k XORed
   * into its last byte: one flow per queue) and are received on every RX queue
   */
  queues?: number;
  /** deadline for the first connection of every port (default 10 s) */
  connectTimeoutMs?: number;
  replyTimeoutMs?: number;
  /** destination MAC of the frames: the RX port's (default), broadcast, or an address */
  dstMac?: 'rx' | 'broadcast' | string;
  /** how long stop() keeps receiving after the last frame was sent (default 100 ms) */
  drainMs?: number;
  /** the stream id in every frame (default random): frames of other streams count as foreign */
  streamId?: number;
  /** where the TX and RX loops (the VM's vCPUs) run: CPUs and SCHED_FIFO priority (default: as the process) */
  placement?: Placement;
}

/** Live numbers while the probe runs. */
export interface ProbeStats {
  sent: number;
  received: number;
  /** sequence gaps not filled in (yet): a live lower bound of the final loss */
  lost: number;
  duplicated: number;
  reordered: number;
  unknown: number;
  foreign: number;
  /** schedule slots the VM could not send: its TX ring was full because the back-end took nothing */
  notSent: number;
  /** frames still in our TX ring: the back-end has not taken them */
  inFlight: number;
  reconnects: number;
  connected: boolean;
  latencyUs: { p50: number; p99: number; max: number };
  maxGapUs: number;
  elapsedS: number;
  cpu: { txMs: number; rxMs: number };
  native: ProbeNativeStats;
}

/** The result of a run (the CLI prints it; JSON keys in snake_case). */
export interface ProbeReport {
  sent: number;
  received: number;
  /** sent - received - inFlight: frames the back-end took and never delivered */
  lost: number;
  duplicated: number;
  reordered: number;
  unknown: number;
  /** one-way: receive time minus the TX stamp in the frame (time spent in the switch, and in our RX thread) */
  latencyUs: { p50: number; p99: number; max: number };
  /** the TX stamp of the frame with the largest latency, ms after the probe started */
  maxLatencyAtMs: number;
  /** the sender's own lateness against its schedule: a slot the VM's TX thread sent late was never the switch's fault */
  latenessUs: { p50: number; p99: number; max: number };
  /** the slot of the latest frame, ms after the probe started */
  maxLatenessAtMs: number;
  /** largest time between two consecutive probe frames */
  maxGapUs: number;
  /** when that gap started, ms after the first frame was sent */
  maxGapAtMs: number;
  /** back-end reconnections (server mode), the most any port saw: one back-end restart counts once */
  reconnects: number;
  /** schedule slots the VM could not send (its TX ring was full: the back-end took nothing); a clean run has 0 */
  notSent: number;
  rate: number;
  size: number;
  durationS: number;
  cores: number;
  /** frames never taken from our TX ring by the end (not counted as lost) */
  inFlight: number;
  foreign: number;
  cpu: { txMs: number; rxMs: number };
  /** where the loops ran, read back from the kernel; null when no placement was asked */
  placement: ProbePlacement | null;
  /** true when nothing was lost, duplicated or left unsent: what a passing run needs */
  clean: boolean;
  /** when the probe started sending, CLOCK_MONOTONIC ms: the times above count from here */
  startedAtMs: number;
  /**
   * With more than one queue pair only: how many, the frames received on
   * each RX queue, and the reordering within a queue (one flow). `reordered`
   * above also counts the interleaving across queues, which is expected.
   */
  queues?: { count: number; rxFrames: number[]; reorderedInQueue: number };
}

export interface ProbePlacement {
  tx: Applied;
  rx: Applied;
  fallback: string | null;
}

export interface RunningProbe {
  readonly streamId: number;
  /** the ports' MACs: frames go from tx to rx */
  readonly macs: { tx: string; rx: string };
  stats(): ProbeStats;
  /** test hook: the TX thread sleeps this long once, as a descheduled vCPU would */
  stallTx(ms: number): void;
  /** test hook: SET_VRING_ENABLE on one ring of the receiving port (2k: RX of pair k), as a driver that stops using a queue */
  setRxRingEnabled(ring: number, enable: boolean): Promise<void>;
  /** stop sending, drain, stop receiving, release everything; idempotent */
  stop(): Promise<ProbeReport>;
}

const nsToUs = (ns: number): number => Math.round(ns / 100) / 10;
const nowNs = (): number => Number(process.hrtime.bigint());

function latencyUs(s: ProbeNativeStats): ProbeStats['latencyUs'] {
  return { p50: nsToUs(s.latency.p50Ns), p99: nsToUs(s.latency.p99Ns), max: nsToUs(s.latency.maxNs) };
}

function cpu(s: ProbeNativeStats): ProbeStats['cpu'] {
  return { txMs: Math.round(s.txCpuNs / 1e5) / 10, rxMs: Math.round(s.rxCpuNs / 1e5) / 10 };
}

/**
 * Ports are opened together; the first failure stops the others waiting (their
 * own deadline could be long), and everything settles before the error surfaces.
 */
async function openPorts(ports: ProbePort[]): Promise<void> {
  let first: unknown = null;
  const results = await Promise.allSettled(
    ports.map((p) =>
      p.open().catch((err: unknown) => {
        if (first === null) {
          first = err;
          for (const other of ports) if (other !== p) other.closeConnection();
        }
        throw err;
      }),
    ),
  );
  if (results.some((r) => r.status === 'rejected')) throw first;
}

function release(h: ProbeHandle, ports: ProbePort[]): void {
  for (const p of ports) p.closeConnection();
  native.probeDestroy(h);
  for (const p of ports) p.releaseFds();
}

function createPorts(h: ProbeHandle, specs: { name: string; path: string; mac: Mac }[], mode: PortMode, ringSize: number, queues: number, connectTimeoutMs: number, replyTimeoutMs: number): ProbePort[] {
  const ports: ProbePort[] = [];
  try {
    for (const s of specs) ports.push(ProbePort.create(h, ringSize, queues, { ...s, mode, connectTimeoutMs, replyTimeoutMs }));
  } catch (err) {
    release(h, ports);
    throw err;
  }
  return ports;
}

export async function startProbe(opts: ProbeOptions): Promise<RunningProbe> {
  checkProbeSocket(opts.tx, 'tx');
  checkProbeSocket(opts.rx, 'rx');
  const rate = checkInteger(opts.rate, LIMITS.rate.min, LIMITS.rate.max, 'rate', ' frames per second');
  const size = checkInteger(opts.size, LIMITS.size.min, LIMITS.size.max, 'size', ' bytes');
  const ringSize = checkRingSize(opts.ringSize ?? DEFAULTS.ringSize);
  const queues = checkQueues(opts.queues ?? 1);
  const connectTimeoutMs = checkTimeoutMs(opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs, 'connectTimeoutMs');
  const replyTimeoutMs = checkTimeoutMs(opts.replyTimeoutMs ?? DEFAULTS.replyTimeoutMs, 'replyTimeoutMs');
  const drainMs = opts.drainMs ?? DEFAULTS.drainMs;
  if (!Number.isFinite(drainMs) || drainMs < 0) checkTimeoutMs(drainMs, 'drainMs');
  const streamId = checkInteger(opts.streamId ?? randomInt(1, 2 ** 32 - 1), 0, 2 ** 32 - 1, 'streamId');
  const dst = opts.dstMac ?? 'rx';
  const fixedDst = dst === 'rx' ? null : dst === 'broadcast' ? BROADCAST_MAC : parseMac(dst, 'dstMac');

  const single = opts.tx === opts.rx;
  const specs = single
    ? [{ name: 'txrx', path: opts.tx, mac: randomMac() }]
    : [
        { name: 'tx', path: opts.tx, mac: randomMac() },
        { name: 'rx', path: opts.rx, mac: randomMac() },
      ];
  const h = check(native.probeCreate(ringSize, queues), 'probeCreate');
  const ports = createPorts(h, specs, opts.server ? 'server' : 'client', ringSize, queues, connectTimeoutMs, replyTimeoutMs);
  const txPort = ports[0]!;
  const rxPort = ports[ports.length - 1]!;
  try {
    await openPorts(ports);
    // A receiver that never sent would never be learnt: every frame to it would flood every port.
    check(native.probeStartRx(h, streamId, 0, rxPort.mac, single ? -1 : rxPort.layout.port), 'probeStartRx');
    check(native.probeStartTx(h, txPort.layout.port, rate, size, streamId, txPort.mac, fixedDst ?? rxPort.mac), 'probeStartTx');
  } catch (err) {
    release(h, ports);
    throw err;
  }
  const startNs = nowNs();
  const log = logger('probe');
  let placement: ProbePlacement | null = null;
  if (opts.placement && isPlaced(opts.placement)) {
    try {
      placement = placeLoops(h, opts.placement);
    } catch (err) {
      release(h, ports);
      throw err;
    }
    if (placement.fallback) log.warn({ fallback: placement.fallback }, 'probe loops placed with a fallback');
  }
  log.info({ tx: opts.tx, rx: opts.rx, rate, size, streamId, single, queues, placement }, 'probe sending');

  // A back-end restart drops every port at once: count it once, not once per port.
  const reconnects = (): number => Math.max(...ports.map((p) => p.reconnects));
  const stats = (s: ProbeNativeStats = native.probeStats(h)): ProbeStats => ({
    sent: s.sent,
    received: s.received,
    lost: s.lostGaps,
    duplicated: s.duplicated,
    reordered: s.reordered,
    unknown: s.unknown,
    foreign: s.foreign,
    notSent: s.txRingFull,
    inFlight: s.txPending,
    reconnects: reconnects(),
    connected: ports.every((p) => p.connected),
    latencyUs: latencyUs(s),
    maxGapUs: nsToUs(s.maxGapNs),
    elapsedS: (s.nowNs - startNs) / 1e9,
    cpu: cpu(s),
    native: s,
  });

  let stopping: Promise<ProbeReport> | null = null;
  const stop = async (): Promise<ProbeReport> => {
    native.probeStopTx(h);
    const durationS = (nowNs() - startNs) / 1e9;
    // In-flight frames still count: keep receiving for a moment after the last send.
    await new Promise((r) => setTimeout(r, drainMs));
    native.probeStopRx(h);
    const s = native.probeStats(h);
    const reconnectCount = reconnects();
    release(h, ports);
    const lost = Math.max(0, s.sent - s.received - s.txPending);
    const atMs = (ns: number): number => (ns === 0 ? 0 : Math.round((ns - startNs) / 1e4) / 100);
    const report: ProbeReport = {
      sent: s.sent,
      received: s.received,
      lost,
      duplicated: s.duplicated,
      reordered: s.reordered,
      unknown: s.unknown,
      latencyUs: latencyUs(s),
      maxLatencyAtMs: atMs(s.latencyMaxAtNs),
      latenessUs: { p50: nsToUs(s.lateness.p50Ns), p99: nsToUs(s.lateness.p99Ns), max: nsToUs(s.lateness.maxNs) },
      maxLatenessAtMs: atMs(s.lateness.maxAtNs),
      maxGapUs: nsToUs(s.maxGapNs),
      maxGapAtMs: s.maxGapNs === 0 ? 0 : Math.round((s.maxGapAtNs - startNs) / 1e4) / 100,
      reconnects: reconnectCount,
      notSent: s.txRingFull,
      rate,
      size,
      durationS: Math.round(durationS * 1000) / 1000,
      cores: os.availableParallelism(),
      inFlight: s.txPending,
      foreign: s.foreign,
      cpu: cpu(s),
      placement,
      clean: lost === 0 && s.duplicated === 0 && s.txRingFull === 0,
      startedAtMs: Math.round(startNs / 1e3) / 1e3,
      ...(queues > 1 ? { queues: { count: queues, rxFrames: s.rxQueues, reorderedInQueue: s.reorderedInQueue } } : {}),
    };
    log.info(report, 'probe stopped');
    return report;
  };
  return {
    streamId,
    macs: { tx: formatMac(txPort.mac), rx: formatMac(rxPort.mac) },
    stats: () => stats(),
    stallTx: (ms: number) => {
      check(native.probeStallTx(h, Math.round(ms * 1e6)), 'probeStallTx');
    },
    setRxRingEnabled: (ring: number, enable: boolean) => rxPort.setRingEnabled(ring, enable),
    stop: () => (stopping ??= stop()),
  };
}

/** Put the TX and RX loops where asked, and read back what the kernel applied. */
function placeLoops(h: ProbeHandle, want: Placement): ProbePlacement {
  const s = native.probeStats(h);
  const tx = placeThread(s.txTid, want, 'the probe TX thread');
  const rx = placeThread(s.rxTid, want, 'the probe RX thread');
  return { tx: tx.applied, rx: rx.applied, fallback: tx.fallback ?? rx.fallback };
}

export interface EchoOptions {
  socket: string;
  /** the IPv4 address to answer ARP and ICMP echo for: dotted quad */
  ip: string;
  /** our MAC (default: random, locally administered) */
  mac?: string;
  server?: boolean;
  ringSize?: number;
  /** queue pairs (default 1): a request is answered on the TX queue of the pair it came in on */
  queues?: number;
  connectTimeoutMs?: number;
  replyTimeoutMs?: number;
}

export interface EchoStats {
  arpReplies: number;
  icmpReplies: number;
  /** frames that are neither an ARP request nor an ICMP echo request for our IP */
  unknown: number;
  /** requests not answered because the TX ring was full */
  txRingFull: number;
  reconnects: number;
  connected: boolean;
  elapsedS: number;
  native: ProbeNativeStats;
}

export interface EchoReport {
  ip: string;
  mac: string;
  arpReplies: number;
  icmpReplies: number;
  unknown: number;
  txRingFull: number;
  reconnects: number;
  durationS: number;
  cpu: { txMs: number; rxMs: number };
}

export interface RunningEcho {
  readonly mac: string;
  stats(): EchoStats;
  stop(): Promise<EchoReport>;
}

export async function startEcho(opts: EchoOptions): Promise<RunningEcho> {
  checkProbeSocket(opts.socket, 'socket');
  const ip = parseIpv4(opts.ip, 'ip');
  const mac = opts.mac === undefined ? randomMac() : parseMac(opts.mac, 'mac');
  const ringSize = checkRingSize(opts.ringSize ?? DEFAULTS.ringSize);
  const connectTimeoutMs = checkTimeoutMs(opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs, 'connectTimeoutMs');
  const replyTimeoutMs = checkTimeoutMs(opts.replyTimeoutMs ?? DEFAULTS.replyTimeoutMs, 'replyTimeoutMs');

  const h = check(native.probeCreate(ringSize, checkQueues(opts.queues ?? 1)), 'probeCreate');
  const ports = createPorts(h, [{ name: 'echo', path: opts.socket, mac }], opts.server ? 'server' : 'client', ringSize, opts.queues ?? 1, connectTimeoutMs, replyTimeoutMs);
  try {
    await openPorts(ports);
    check(native.probeStartRx(h, 0, ip, mac, -1), 'probeStartRx');
  } catch (err) {
    release(h, ports);
    throw err;
  }
  const startNs = nowNs();
  const log = logger('probe');
  log.info({ socket: opts.socket, ip: formatIpv4(ip), mac: formatMac(mac) }, 'echo answering');
  const port = ports[0]!;
  const stats = (): EchoStats => {
    const s = native.probeStats(h);
    return {
      arpReplies: s.arpReplies,
      icmpReplies: s.icmpReplies,
      unknown: s.unknown,
      txRingFull: s.echoRingFull,
      reconnects: port.reconnects,
      connected: port.connected,
      elapsedS: (s.nowNs - startNs) / 1e9,
      native: s,
    };
  };
  let stopping: Promise<EchoReport> | null = null;
  const stop = async (): Promise<EchoReport> => {
    native.probeStopRx(h);
    const s = native.probeStats(h);
    const reconnects = port.reconnects;
    release(h, ports);
    const report: EchoReport = {
      ip: formatIpv4(ip),
      mac: formatMac(mac),
      arpReplies: s.arpReplies,
      icmpReplies: s.icmpReplies,
      unknown: s.unknown,
      txRingFull: s.echoRingFull,
      reconnects,
      durationS: Math.round((nowNs() - startNs) / 1e6) / 1000,
      cpu: cpu(s),
    };
    log.info(report, 'echo stopped');
    return report;
  };
  return { mac: formatMac(mac), stats, stop: () => (stopping ??= Promise.resolve().then(stop)) };
}

export interface IdleOptions {
  /** vhost-user sockets, one idle guest each */
  sockets: string[];
  /** listen on them (default) and survive back-end restarts, or connect */
  server?: boolean;
  ringSize?: number;
  /** queue pairs per guest (default 1), every ring started */
  queues?: number;
  connectTimeoutMs?: number;
  replyTimeoutMs?: number;
}

export interface IdleReport {
  ports: number;
  connected: number;
  reconnects: number;
  disconnects: number;
}

export interface RunningIdle {
  stats(): IdleReport;
  stop(): IdleReport;
}

/**
 * Guests that are up and do nothing: each socket gets a device with its
 * memory, both rings started on eventfds and no traffic, as a compute
 * node's idle VMs are. Each is its own probe handle (two ports at most
 * apiece) with no thread started. With `server` they listen and survive a
 * back-end restart like the measuring probes.
 */
export async function startIdle(opts: IdleOptions): Promise<RunningIdle> {
  opts.sockets.forEach((s, i) => checkProbeSocket(s, `idle socket ${i}`));
  const ringSize = checkRingSize(opts.ringSize ?? DEFAULTS.ringSize);
  const queues = checkQueues(opts.queues ?? 1);
  const connectTimeoutMs = checkTimeoutMs(opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs, 'connectTimeoutMs');
  const replyTimeoutMs = checkTimeoutMs(opts.replyTimeoutMs ?? DEFAULTS.replyTimeoutMs, 'replyTimeoutMs');
  const guests: Array<{ h: ProbeHandle; ports: ProbePort[] }> = [];
  const releaseAll = (): void => {
    for (const g of guests.splice(0)) release(g.h, g.ports);
  };
  try {
    for (const [i, path] of opts.sockets.entries()) {
      const h = check(native.probeCreate(ringSize, queues), 'probeCreate');
      guests.push({ h, ports: createPorts(h, [{ name: `idle${i}`, path, mac: randomMac() }], opts.server === false ? 'client' : 'server', ringSize, queues, connectTimeoutMs, replyTimeoutMs) });
    }
    await openPorts(guests.flatMap((g) => g.ports));
  } catch (err) {
    releaseAll();
    throw err;
  }
  const stats = (): IdleReport => {
    const ports = guests.flatMap((g) => g.ports);
    return {
      ports: ports.length,
      connected: ports.filter((p) => p.connected).length,
      reconnects: ports.reduce((n, p) => n + p.reconnects, 0),
      disconnects: ports.reduce((n, p) => n + p.disconnects, 0),
    };
  };
  logger('probe').info({ ports: opts.sockets.length }, 'idle guests up');
  return {
    stats,
    stop: () => {
      const r = stats();
      releaseAll();
      return r;
    },
  };
}
