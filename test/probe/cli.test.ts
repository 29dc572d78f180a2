import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { buildProgram, main } from '../../src/cli/main.js';
import { probeCommand } from '../../src/cli/probe.js';
import { UsageError } from '../../src/errors.js';
import { formatCpuList, onlineCpus } from '../../src/sched/placement.js';
import { tempDir } from '../helpers/tmp.js';
import { LoopbackBackend } from './loopback-backend.js';

/** `ziu probe ...` through commander, as main() runs it (main maps UsageError to exit 2). */
async function probe(args: string[]): Promise<{ exitCode: number }> {
  const run = { exitCode: 0 };
  const program = new Command('ziu');
  probeCommand(program, run);
  program.exitOverride();
  for (const c of program.commands) c.exitOverride().configureOutput({ writeErr: () => {} });
  await program.parseAsync(['probe', ...args], { from: 'user' });
  return run;
}

const long = `/tmp/${'x'.repeat(110)}.sock`;

describe('ziu probe refuses bad input with one line naming the value', () => {
  it.each([
    [['--tx', 'a', '--rx', 'b', '--size', '63'], "invalid --size '63': use a whole number in 64..9000 bytes"],
    [['--tx', 'a', '--rx', 'b', '--size', '9001'], "invalid --size '9001': use a whole number in 64..9000 bytes"],
    [['--tx', 'a', '--rx', 'b', '--size', '1k'], "invalid --size '1k': use a whole number"],
    [['--tx', 'a', '--rx', 'b', '--rate', '0'], "invalid --rate '0': use a whole number in 1..10000000 frames per second"],
    [['--tx', 'a', '--rx', 'b', '--rate', '10000001'], "invalid --rate '10000001': use a whole number in 1..10000000 frames per second"],
    [['--tx', 'a', '--rx', 'b', '--rate', '2.5'], "invalid --rate '2.5': use a whole number"],
    [['--tx', 'a', '--rx', 'b', '--duration', '0'], "invalid --duration '0': use seconds, more than 0 and at most 604800"],
    [['--tx', 'a', '--rx', 'b', '--duration', 'soon'], "invalid --duration 'soon': use a number"],
    [['--tx', 'a', '--rx', 'b', '--ring-size', '100'], "invalid --ring-size '100': a ring size is a power of two"],
    [['--tx', long, '--rx', 'b'], `--tx: socket path '${long}' is ${long.length} bytes; unix sockets allow at most 107`],
    [['--tx', 'a', '--rx', long], `--rx: socket path '${long}' is ${long.length} bytes; unix sockets allow at most 107`],
    [['--tx', 'a'], '--tx needs --rx <socket> (the same path for a single-port loop)'],
    [['--rx', 'a'], '--rx needs --tx <socket> (the same path for a single-port loop)'],
    [[], 'give --tx <socket> and --rx <socket> to measure, or --echo <socket> --ip <addr> to answer ARP and ping'],
    [['--echo', 'a'], '--echo needs --ip <addr>: the IPv4 address to answer for'],
    [['--echo', 'a', '--ip', '10.0.0.256'], "invalid --ip '10.0.0.256': use a dotted quad, e.g. 10.0.0.2"],
    [['--echo', 'a', '--ip', '10.0.0'], "invalid --ip '10.0.0': use a dotted quad, e.g. 10.0.0.2"],
    [['--echo', 'a', '--ip', '10.0.0.1', '--mac', '01:00:5e:00:00:01'], "invalid --mac '01:00:5e:00:00:01': a multicast address cannot be a port's own"],
    [['--tx', 'a', '--rx', 'b', '--cpus', '4096'], `--cpus '4096': CPU 4096 does not exist here (online: ${formatCpuList(onlineCpus())})`],
    [['--tx', 'a', '--rx', 'b', '--cpus', 'one'], `--cpus 'one': use a CPU list such as 1, 0-1 or 1,3 (online: ${formatCpuList(onlineCpus())})`],
    [['--tx', 'a', '--rx', 'b', '--rt-priority', '0'], "--rt-priority '0': a SCHED_FIFO priority is a whole number from 1 to 99"],
    [['--tx', 'a', '--rx', 'b', '--rt-priority', '100'], "--rt-priority '100': a SCHED_FIFO priority is a whole number from 1 to 99"],
    [['--echo', 'a', '--ip', '10.0.0.1', '--mac', 'zz'], "invalid --mac 'zz': use six hex bytes, e.g. 02:7a:69:00:00:01"],
    [['--echo', long, '--ip', '10.0.0.1'], `--echo: socket path '${long}' is ${long.length} bytes; unix sockets allow at most 107`],
    [['--echo', 'a', '--ip', '10.0.0.1', '--rate', '5'], '--echo answers on one port and sends nothing of its own: drop --rate'],
    [['--tx', 'a', '--rx', 'b', '--ip', '10.0.0.1'], '--ip goes with --echo'],
  ])('ziu probe %j', async (args, message) => {
    const err = await probe(args).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toBe(message);
  });

  it('an unknown option is a commander usage error', async () => {
    await expect(probe(['--tx', 'a', '--rx', 'b', '--frobnicate'])).rejects.toBeInstanceOf(CommanderError);
  });
});

const registered = buildProgram({ exitCode: 0 }).commands.some((c) => c.name() === 'probe');
describe.skipIf(!registered)('through main() (once src/cli/main.ts registers the command)', () => {
  let stderr: string[];
  beforeEach(() => {
    stderr = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((s) => (stderr.push(String(s)), true));
  });
  afterEach(() => vi.restoreAllMocks());
  it('exits 2 with one line', async () => {
    expect(await main(['probe', '--tx', 'a', '--rx', 'b', '--size', '10'])).toBe(2);
    expect(stderr.join('')).toBe("ziu: invalid --size '10': use a whole number in 64..9000 bytes\n");
  });
});

describe('ziu probe --json prints one report', () => {
  let tmp: ReturnType<typeof tempDir>;
  let backend: LoopbackBackend;
  let out: string[];
  beforeEach(() => {
    tmp = tempDir('ziu-probe-');
    backend = new LoopbackBackend();
    out = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((s) => (out.push(String(s)), true));
  });
  afterEach(() => {
    vi.restoreAllMocks();
    backend.close();
    tmp.remove();
  });

  it('with the documented keys', async () => {
    const tx = path.join(tmp.dir, 'tx.sock');
    const rx = path.join(tmp.dir, 'rx.sock');
    backend.route(tx, rx);
    await backend.listen(tx);
    await backend.listen(rx);
    const run = await probe(['--tx', tx, '--rx', rx, '--rate', '1000', '--size', '256', '--duration', '0.3', '--json']);
    const doc = JSON.parse(out.join(''));
    expect(Object.keys(doc)).toEqual([
      'sent', 'received', 'lost', 'duplicated', 'reordered', 'unknown', 'latency_us', 'max_latency_at_ms', 'lateness_us', 'max_lateness_at_ms',
      'max_gap_us', 'max_gap_at_ms', 'reconnects', 'not_sent', 'rate', 'size', 'duration_s', 'cores', 'in_flight', 'foreign', 'cpu', 'placement', 'clean', 'started_at_ms',
    ]);
    expect(Object.keys(doc.lateness_us)).toEqual(['p50', 'p99', 'max']);
    expect(doc).toMatchObject({ not_sent: 0, clean: true, placement: null });
    expect(run.exitCode).toBe(0);
    expect(Object.keys(doc.latency_us)).toEqual(['p50', 'p99', 'max']);
    expect(doc).toMatchObject({ lost: 0, duplicated: 0, reordered: 0, rate: 1000, size: 256, reconnects: 0 });
    expect(doc.received).toBe(doc.sent);
    expect(doc.sent).toBeGreaterThan(250);
  });

  it('echo until --duration, human summary', async () => {
    const sock = path.join(tmp.dir, 'vm.sock');
    await backend.listen(sock);
    await probe(['--echo', sock, '--ip', '192.168.1.10', '--mac', '02:00:00:00:00:05', '--duration', '0.2']);
    expect(out.join('')).toMatch(/^192\.168\.1\.10 \(02:00:00:00:00:05\): 0 ARP replies, 0 ICMP echo replies, 0 other frames\n/);
  });
});
