import type { Command } from 'commander';
import { EXIT, UsageError } from '../errors.js';
import { startEcho, startIdle, startProbe, type EchoReport, type ProbeReport } from '../probe/index.js';
import { parseIpv4, parseMac } from '../probe/addr.js';
import { checkInteger, checkTimeoutMs, parseNumber } from '../options.js';
import { checkDurationS, checkProbeSocket, checkQueues, checkRingSize, DEFAULTS, LIMITS } from '../probe/options.js';
import { output } from './output.js';
import type { Run } from './main.js';
import { describePlacement, NO_PLACEMENT, parseCpuList, parsePriority, type Placement } from '../sched/placement.js';

interface ProbeCliOpts {
  tx?: string;
  rx?: string;
  rate?: string;
  size?: string;
  duration?: string;
  echo?: string;
  idle?: string[];
  ip?: string;
  mac?: string;
  server?: boolean;
  ringSize?: string;
  queues?: string;
  connectTimeout?: string;
  json?: boolean;
  cpus?: string;
  rtPriority?: string;
}

const DEFAULT_RATE = 1000;
const DEFAULT_SIZE = 64;
const DEFAULT_DURATION_S = 10;

export function probeCommand(program: Command, run: Run): void {
  program
    .command('probe')
    .description(
      'a vhost-user front-end (the VM side): send numbered, timestamped frames from --tx to --rx and measure loss, ' +
        'duplicates, reordering, latency and the largest gap; or, with --echo, answer ARP and ping for --ip',
    )
    .option('--tx <socket>', 'vhost-user socket of the sending port')
    .option('--rx <socket>', 'vhost-user socket of the receiving port (the same path as --tx: one port that loops)')
    .option('--rate <pps>', `frames per second, ${LIMITS.rate.min}..10^7 (default ${DEFAULT_RATE})`)
    .option('--size <bytes>', `Ethernet frame bytes without FCS, ${LIMITS.size.min}..${LIMITS.size.max} (default ${DEFAULT_SIZE})`)
    .option('--duration <s>', `seconds to run (default ${DEFAULT_DURATION_S}; with --echo: until SIGINT/SIGTERM)`)
    .option('--echo <socket>', 'answer ARP requests and ICMP echo requests for --ip on this vhost-user socket')
    .option('--ip <addr>', 'with --echo: the IPv4 address to answer for')
    .option('--mac <mac>', 'with --echo: our MAC address (default: random, locally administered)')
    .option('--idle <sockets...>', 'idle guests: a device with started rings on each socket, no traffic (a node\'s idle VMs)')
    .option('--server', 'listen on the socket paths and let the back-end connect (survives back-end restarts)')
    .option('--queues <n>', `queue pairs per port, ${LIMITS.queues.min}..${LIMITS.queues.max}, as QEMU's queues=N: frames spread over the TX queues, received on every RX queue (default 1)`)
    .option('--ring-size <n>', `descriptors per ring, a power of two in ${LIMITS.ringSize.min}..${LIMITS.ringSize.max} (default ${DEFAULTS.ringSize})`)
    .option('--connect-timeout <s>', `seconds to wait for the back-end (default ${DEFAULTS.connectTimeoutMs / 1000})`)
    .option('--cpus <list>', "CPUs for the probe's TX and RX threads (the VM's vCPUs), e.g. 0 or 0-1 (default: any)")
    .option('--rt-priority <1-99>', 'run those threads SCHED_FIFO at this priority; they sleep between frames (default: SCHED_OTHER)')
    .option('--json', 'print one JSON document')
    .addHelpText(
      'after',
      '\nFrames carry ethertype 0x88B5, a marker, a stream id, a sequence number and a CLOCK_MONOTONIC timestamp.\n' +
        'lost = sent - received - frames the back-end never took from the TX ring; not sent = slots the TX ring had no room for.\n' +
        'latency = receive time - TX stamp (time in the switch); lateness = TX stamp - the slot in the schedule (the sender\'s own).\n' +
        'Exit 1 when anything was lost, duplicated or not sent. SIGINT/SIGTERM stop early with a report.',
    )
    .action(async (opts: ProbeCliOpts) => {
      const placement: Placement = {
        cpus: opts.cpus === undefined ? null : parseCpuList(opts.cpus, '--cpus'),
        priority: opts.rtPriority === undefined ? null : parsePriority(opts.rtPriority, '--rt-priority'),
      };
      const ringSize = opts.ringSize === undefined ? DEFAULTS.ringSize : checkRingSize(parseNumber(opts.ringSize, '--ring-size', true), '--ring-size');
      const connectTimeoutMs =
        opts.connectTimeout === undefined
          ? DEFAULTS.connectTimeoutMs
          : checkTimeoutMs(parseNumber(opts.connectTimeout, '--connect-timeout', false), '--connect-timeout') * 1000;
      const queues = opts.queues === undefined ? 1 : checkQueues(parseNumber(opts.queues, '--queues', true), '--queues');
      const durationS = opts.duration === undefined ? undefined : checkDurationS(parseNumber(opts.duration, '--duration', false), '--duration');
      if (opts.idle !== undefined) {
        for (const o of ['tx', 'rx', 'rate', 'size', 'echo', 'ip', 'mac'] as const) {
          if (opts[o] !== undefined) throw new UsageError(`--idle guests send nothing and answer nothing: drop --${o}`);
        }
        const idle = await startIdle({ sockets: opts.idle, server: !!opts.server, ringSize, queues, connectTimeoutMs });
        await untilStopped(durationS);
        const report = idle.stop();
        output(!!opts.json).result(report, () => [`${report.ports} idle guests: ${report.connected} connected at the end, ${report.reconnects} reconnects, ${report.disconnects} disconnects`]);
        return;
      }
      if (opts.echo !== undefined) {
        for (const o of ['tx', 'rx', 'rate', 'size'] as const) {
          if (opts[o] !== undefined) throw new UsageError(`--echo answers on one port and sends nothing of its own: drop --${o}`);
        }
        checkProbeSocket(opts.echo, '--echo');
        if (opts.ip === undefined) throw new UsageError('--echo needs --ip <addr>: the IPv4 address to answer for');
        parseIpv4(opts.ip, '--ip');
        if (opts.mac !== undefined) parseMac(opts.mac, '--mac');
        if (placement !== NO_PLACEMENT && (placement.cpus !== null || placement.priority !== null)) throw new UsageError('--cpus and --rt-priority place the measuring threads: not with --echo');
        const report = await runEcho({ socket: opts.echo, ip: opts.ip, mac: opts.mac, server: !!opts.server, ringSize, queues, connectTimeoutMs }, durationS);
        output(!!opts.json).result(report, () => echoSummary(report));
        return;
      }
      if (opts.ip !== undefined || opts.mac !== undefined) throw new UsageError(`--${opts.ip !== undefined ? 'ip' : 'mac'} goes with --echo`);
      if (opts.tx === undefined && opts.rx === undefined) {
        throw new UsageError('give --tx <socket> and --rx <socket> to measure, or --echo <socket> --ip <addr> to answer ARP and ping');
      }
      if (opts.tx === undefined) throw new UsageError('--rx needs --tx <socket> (the same path for a single-port loop)');
      if (opts.rx === undefined) throw new UsageError('--tx needs --rx <socket> (the same path for a single-port loop)');
      checkProbeSocket(opts.tx, '--tx');
      checkProbeSocket(opts.rx, '--rx');
      const rate = opts.rate === undefined ? DEFAULT_RATE : checkInteger(parseNumber(opts.rate, '--rate', true), LIMITS.rate.min, LIMITS.rate.max, '--rate', ' frames per second');
      const size = opts.size === undefined ? DEFAULT_SIZE : checkInteger(parseNumber(opts.size, '--size', true), LIMITS.size.min, LIMITS.size.max, '--size', ' bytes');
      const probe = await startProbe({ tx: opts.tx, rx: opts.rx, rate, size, server: !!opts.server, ringSize, queues, connectTimeoutMs, placement });
      await untilStopped(durationS ?? DEFAULT_DURATION_S);
      const report = await probe.stop();
      output(!!opts.json).result(report, () => probeSummary(report));
      // A switch that stopped taking frames must never look like a clean run.
      if (!report.clean) run.exitCode = EXIT.failed;
    });
}

/** Resolves after `seconds`, or at SIGINT/SIGTERM (undefined: only at a signal). */
function untilStopped(seconds: number | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    const timer = seconds === undefined ? undefined : setTimeout(done, seconds * 1000);
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}

async function runEcho(opts: Parameters<typeof startEcho>[0], durationS: number | undefined): Promise<EchoReport> {
  const echo = await startEcho(opts);
  await untilStopped(durationS);
  return echo.stop();
}

function probeSummary(r: ProbeReport): string[] {
  return [
    `sent ${r.sent}  received ${r.received}  lost ${r.lost}  duplicated ${r.duplicated}  reordered ${r.reordered}  unknown ${r.unknown}`,
    `not sent ${r.notSent} (the VM's TX ring was full)  in flight ${r.inFlight}  reconnects ${r.reconnects}`,
    `largest gap ${(r.maxGapUs / 1000).toFixed(3)} ms at ${r.maxGapAtMs} ms`,
    `latency (in the switch) p50 ${r.latencyUs.p50} us  p99 ${r.latencyUs.p99} us  max ${r.latencyUs.max} us at ${r.maxLatencyAtMs} ms`,
    `sender lateness (the VM's own) p50 ${r.latenessUs.p50} us  p99 ${r.latenessUs.p99} us  max ${r.latenessUs.max} us at ${r.maxLatenessAtMs} ms`,
    ...(r.queues ? [`${r.queues.count} queue pairs: received per RX queue ${r.queues.rxFrames.join(' / ')}  reordered within a queue ${r.queues.reorderedInQueue}`] : []),
    `${r.rate} pps x ${r.size} bytes for ${r.durationS} s (${r.cores} cores)${r.placement ? `, threads on ${describePlacement(r.placement.tx)}${r.placement.fallback ? ` (${r.placement.fallback})` : ''}` : ''}`,
    ...(r.clean ? [] : [`NOT CLEAN: ${r.lost} lost, ${r.duplicated} duplicated, ${r.notSent} not sent`]),
  ];
}

function echoSummary(r: EchoReport): string[] {
  return [
    `${r.ip} (${r.mac}): ${r.arpReplies} ARP replies, ${r.icmpReplies} ICMP echo replies, ${r.unknown} other frames`,
    `tx ring full ${r.txRingFull}  reconnects ${r.reconnects}  ran ${r.durationS} s`,
  ];
}
