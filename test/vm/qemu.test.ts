import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Peer } from '../../src/upgrade/peer.js';
import { Netns, pingStream, pingWorst, type PingLog } from '../helpers/netns.js';
import { startRig, type Rig } from '../helpers/upgrade.js';
import { guestHugetlbfs, type GuestHugetlbfs } from '../helpers/vm/hugetlbfs.js';
import { buildInitramfs, findStaticBusybox, type Initramfs } from '../helpers/vm/initramfs.js';
import { bootableKernel, findGuestKernel, type BootableKernel } from '../helpers/vm/kernel.js';
import { chooseAccel, Qemu, qemuUnavailable, type Accel, type GuestMemory } from '../helpers/vm/qemu.js';

// Real QEMU, a real Debian guest kernel, real ziu-datapath: the guest pings
// a host in a network namespace through the datapath's tap uplink while the
// datapath is handed over again and again, and once rolled back.

function vmUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root: taps, network namespaces and hugepages need it';
  if (!fs.existsSync('/dev/net/tun')) return 'no /dev/net/tun';
  if (spawnSync('ping', ['-V']).error) return 'no ping (install iputils-ping)';
  const q = qemuUnavailable();
  if (q) return q;
  const k = findGuestKernel();
  if (typeof k === 'string') return k;
  const b = findStaticBusybox();
  if (typeof b !== 'string') return b.reason;
  return null;
}

const why = vmUnavailable();
if (why) console.log(`skipping the real-VM tests: ${why}`);

const HOST_IP = '198.18.0.1';
const GUEST_IP = '198.18.0.2';
const GUEST_MIB = 128;
const PING_INTERVAL_S = 0.02;
const HANDOVERS = 3;

interface Assets {
  dir: string;
  kernel: BootableKernel;
  initramfs: Initramfs;
  accel: Accel;
}

interface Window {
  what: string;
  from: number;
  to: number;
  switchoverUs: number | null;
}

/** What the guest and QEMU show of the link: none of it may move across a handover. */
async function linkView(qemu: Qemu): Promise<{ carrier: string; carrierChanges: string; events: Record<string, number>; stderr: string; messages: number }> {
  return {
    carrier: await qemu.read('/sys/class/net/eth0/carrier'),
    carrierChanges: await qemu.read('/sys/class/net/eth0/carrier_changes'),
    events: qemu.connectionEvents(),
    stderr: qemu.stderr,
    messages: qemu.messagesSent(),
  };
}

async function portStatus(control: string): Promise<{ connected: boolean; disconnects: number; pid: number }> {
  const peer = await Peer.connect('vm-test', control);
  try {
    const st = await peer.status();
    const p = st.ports.find((x) => x.name === 'vm') as unknown as { connected: boolean; disconnects: number };
    return { connected: p.connected, disconnects: p.disconnects, pid: st.pid };
  } finally {
    peer.close();
  }
}

async function until(what: string, timeoutMs: number, f: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(200);
  }
}

describe.skipIf(why !== null)('a real QEMU guest on ziu-datapath', () => {
  let assets: Assets;
  // What a boot started, undone once: by the test, or by afterEach if the test timed out.
  let teardown: (() => Promise<void>) | null = null;
  afterEach(async () => {
    await teardown?.();
  });

  beforeAll(() => {
    const kernel = findGuestKernel();
    const busybox = findStaticBusybox();
    if (typeof kernel === 'string' || typeof busybox !== 'string') throw new Error('checked by vmUnavailable');
    const dir = fs.mkdtempSync('/tmp/ziu-vm-assets-');
    try {
      const t0 = performance.now();
      const k = bootableKernel(kernel, dir);
      const initramfs = buildInitramfs(kernel, busybox, dir);
      const accel = chooseAccel();
      assets = { dir, kernel: k, initramfs, accel };
      console.log(
        `guest: ${kernel.version}, ${k.kind === 'pvh' ? `vmlinux extracted from its ${k.format} bzImage in ${k.extractMs.toFixed(0)} ms, booted through PVH` : `bzImage booted directly (${k.note})`}; ` +
          `initramfs ${(initramfs.bytes / 1024).toFixed(0)} KiB with ${initramfs.modules.join(', ')}, built in ${(performance.now() - t0).toFixed(0)} ms; ${accel.name} (${accel.reason})`,
      );
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }, 60_000);

  afterAll(() => {
    if (assets) fs.rmSync(assets.dir, { recursive: true, force: true });
  });

  /**
   * One boot: the datapath in `mode`, the guest up, ping from the namespace
   * every 20 ms across HANDOVERS upgrades and one that `fault` rolls back.
   */
  async function guestAcrossHandovers(o: { mode: 'server' | 'client'; memory: 'memfd' | 'hugetlbfs'; mq?: number; smp?: number; fault: string }): Promise<void> {
    const started = performance.now();
    const tag = `${o.mode[0]}${process.pid % 10000}`;
    const dir = fs.mkdtempSync(`/tmp/ziu-vm-${o.mode}-`);
    const tap = `ziuvm${tag}`;
    let hugetlbfs: GuestHugetlbfs | null = null;
    let ns: Netns | null = null;
    let rig: Rig | null = null;
    let qemu: Qemu | null = null;
    let ping: { stop(): Promise<PingLog> } | null = null;
    let ok = false;
    let done: Promise<void> | null = null;
    const undo = (): Promise<void> =>
      (done ??= (async () => {
        if (!ok && qemu) {
          console.log(`QEMU stderr: ${qemu.stderr.slice(-2000)}\nguest console (tail): ${qemu.console.slice(-2000)}`);
          const dpLog = path.join(dir, 'datapath.log');
          if (fs.existsSync(dpLog)) console.log(`datapath log (tail): ${fs.readFileSync(dpLog, 'utf8').slice(-3000)}`);
        }
        await ping?.stop().catch(() => undefined);
        await qemu?.stop();
        await rig?.cleanup();
        await ns?.delete();
        hugetlbfs?.restore();
        fs.rmSync(dir, { recursive: true, force: true });
      })());
    teardown = undo;
    try {
      let memory: GuestMemory = { backend: 'memfd' };
      if (o.memory === 'hugetlbfs') {
        const h = guestHugetlbfs(GUEST_MIB << 20);
        if ('reason' in h) console.log(`guest memory on memfd instead of hugetlbfs: ${h.reason}`);
        else {
          hugetlbfs = h;
          memory = { backend: 'file', dir: h.dir };
        }
      }
      ns = await Netns.create(`vm${tag}`);
      const startQemu = (socket: string): Qemu =>
        Qemu.start({
          dir,
          kernel: assets.kernel,
          initramfs: assets.initramfs,
          accel: assets.accel,
          memory,
          memMiB: GUEST_MIB,
          guestIp: `${GUEST_IP}/24`,
          ...(o.smp !== undefined ? { smp: o.smp } : {}),
          // QEMU listens when the datapath is the client, and the other way round
          nic: { socket, role: o.mode === 'client' ? 'server' : 'client', mac: '52:54:00:5a:49:55', ...(o.mq !== undefined ? { mq: o.mq } : {}) },
        });
      const dpOptions = { ports: { vm: o.mode }, taps: { up: tap }, logFile: path.join(dir, 'datapath.log') };
      if (o.mode === 'client') {
        // QEMU listens before the datapath, which connects as it starts.
        const sock = path.join(dir, 'vm.sock');
        qemu = startQemu(sock);
        rig = await startRig({ probe: false, dp: { ...dpOptions, socketPaths: { vm: sock } } });
      } else {
        rig = await startRig({ probe: false, dp: dpOptions });
        qemu = startQemu(rig.dp.sock['vm']!);
      }
      await ns.adopt(tap, `${HOST_IP}/24`);
      const boot = await qemu.booted(90_000);
      const g = qemu;
      await until('the guest sees its link up', 15_000, async () => (await g.read('/sys/class/net/eth0/carrier')) === '1');
      await until('a first ping from the namespace', 20_000, async () => (await ns!.exec(['ping', '-c', '1', '-W', '1', GUEST_IP])).exitCode === 0);
      const queues = (await qemu.run('ls /sys/class/net/eth0/queues')).out.split(/\s+/).filter(Boolean);
      const before = await linkView(qemu);
      const dpBefore = await portStatus(rig.dp.control);
      expect(dpBefore).toMatchObject({ connected: true, disconnects: 0 });

      ping = pingStream(ns, GUEST_IP, PING_INTERVAL_S);
      // With several vCPUs, the guest sends from each: virtio_net maps CPU i to TX queue i (XPS),
      // so a ping pinned to each CPU puts the guest's own traffic on every TX ring.
      const vcpus = o.smp ?? 1;
      if (vcpus > 1) {
        const pings = Array.from({ length: vcpus }, (_, c) => `taskset ${1 << c} ping -i 0.1 ${HOST_IP} > /tmp/ping${c} 2>&1 &`).join(' ');
        await qemu.run(`${pings} true`); // "& ;" would be a syntax error, and the guest's shell is its init
      }
      await sleep(1000);
      const windows: Window[] = [];
      const upgrade = async (what: string, env: Record<string, string>, expected: 'committed' | 'rolled_back'): Promise<void> => {
        const from = Date.now();
        const r = await rig!.upgrade([], env);
        const to = Date.now();
        expect(r.report['result'], `${what}: exit ${r.exitCode}: ${r.stderr}`).toBe(expected);
        expect(r.exitCode).toBe(expected === 'committed' ? 0 : 1);
        windows.push({ what, from, to, switchoverUs: (r.report['switchover_us'] as number | null) ?? null });
        await sleep(500);
      };
      for (let i = 1; i <= HANDOVERS; i++) await upgrade(`handover ${i}`, {}, 'committed');
      await upgrade(`rollback (ZIU_FAULT=${o.fault})`, { ZIU_FAULT: o.fault }, 'rolled_back');
      await sleep(500);
      const log = await ping.stop();
      ping = null;
      // The guest's own pings: every TX ring of the serving instance carried some, and none was lost.
      const txRings: Array<{ pair: number; packets: number }> = [];
      const rxRings: Array<{ pair: number; packets: number }> = [];
      const guestPings: string[] = [];
      if (vcpus > 1) {
        await sleep(2000);
        const peer = await Peer.connect('vm-test', rig.dp.control);
        try {
          const st = await peer.status();
          const p = st.ports.find((x) => x.name === 'vm') as unknown as { rings: Array<{ q: number; packets: number }> };
          // Rings 2i (RX) and 2i + 1 (TX) are queue pair i.
          for (const r of p.rings) (r.q % 2 === 1 ? txRings : rxRings).push({ pair: Math.floor(r.q / 2), packets: r.packets });
        } finally {
          peer.close();
        }
        await qemu.run('killall -INT ping; sleep 1');
        for (let c = 0; c < vcpus; c++) guestPings.push((await qemu.run(`tail -n 2 /tmp/ping${c}`)).out.trim());
      }

      const after = await linkView(qemu);
      const dpAfter = await portStatus(rig.dp.control);
      // The guest can still reach out, too.
      const out = await qemu.run(`ping -c 3 -W 2 ${HOST_IP}`, 15_000);

      const first = log.replies[0]?.at ?? 0;
      const quiet = pingWorst(log, first, windows[0]!.from);
      const lines = windows.map((w) => {
        const worst = pingWorst(log, w.from, w.to);
        return `  ${w.what}: ${w.to - w.from} ms, switchover ${w.switchoverUs ?? '-'} us, longest gap between replies ${worst.gapMs.toFixed(1)} ms, max rtt ${worst.rttMs.toFixed(1)} ms`;
      });
      console.log(
        [
          `${o.mode}-mode datapath, guest memory ${memory.backend === 'memfd' ? 'memfd' : `hugetlbfs (${hugetlbfs!.pages} pages, ${hugetlbfs!.raised} reserved for it)`}, ${assets.accel.name}, eth0 queues ${queues.join(' ')}:`,
          `  boot ${boot.bootMs.toFixed(0)} ms to the guest's /init ready (guest uptime ${boot.guestUptimeS} s)`,
          `  ping every ${PING_INTERVAL_S * 1000} ms: ${log.transmitted} sent, ${log.replies.length} answered, ${log.lost.length} lost, across ${HANDOVERS} handovers and a rollback`,
          `  before the first upgrade: longest gap ${quiet.gapMs.toFixed(1)} ms, max rtt ${quiet.rttMs.toFixed(1)} ms`,
          ...lines,
          ...(vcpus > 1 ? [`  guest pings from each of ${vcpus} vCPUs: ${guestPings.map((g) => g.replace(/\n/g, '; ')).join(' | ')}`, `  packets per ring in the serving instance (queue pair: packets): TX ${txRings.slice(0, vcpus).map((t) => `${t.pair}: ${t.packets}`).join(', ')}; RX ${rxRings.slice(0, vcpus).map((t) => `${t.pair}: ${t.packets}`).join(', ')}`] : []),
          `  carrier_changes ${before.carrierChanges} -> ${after.carrierChanges}; QEMU connection events ${JSON.stringify(after.events)}, vhost-user messages from QEMU during the upgrades ${after.messages - before.messages}; datapath pid ${dpBefore.pid} -> ${dpAfter.pid}, disconnects ${dpAfter.disconnects}`,
        ].join('\n'),
      );

      expect(log.lost, `lost icmp_seq: ${log.lost.join(' ')}`).toEqual([]);
      expect(log.replies.length).toBeGreaterThan(100);
      expect(after.carrier).toBe('1');
      expect(after.carrierChanges).toBe(before.carrierChanges);
      expect(after.events).toEqual(before.events);
      // A socket or vhost-user error would be on QEMU's stderr.
      expect(after.stderr).toBe(before.stderr);
      expect(dpAfter).toMatchObject({ connected: true, disconnects: 0 });
      expect(dpAfter.pid).not.toBe(dpBefore.pid);
      expect(out.out).toMatch(/3 packets transmitted, 3 packets received/);
      if (vcpus > 1) {
        expect(txRings.slice(0, vcpus).map((t) => t.packets > 0)).toEqual(Array<boolean>(vcpus).fill(true));
        for (const g of guestPings) {
          // The interrupt may come between a request and its reply: at most that one is unanswered.
          const m = /(\d+) packets transmitted, (\d+) packets received/.exec(g);
          expect(m, g).not.toBeNull();
          expect(Number(m![1])).toBeGreaterThan(50);
          expect(Number(m![2])).toBeGreaterThanOrEqual(Number(m![1]) - 1);
        }
      }
      console.log(`  ${o.mode} mode: ${((performance.now() - started) / 1000).toFixed(1)} s in all`);
      ok = true;
    } finally {
      await undo();
      if (teardown === undo) teardown = null;
    }
  }

  it('datapath in server mode (QEMU reconnect=1), memfd guest memory, mq=on with one queue pair: no ping lost and no link change across handovers and a rollback', { timeout: 150_000 }, async () => {
    await guestAcrossHandovers({ mode: 'server', memory: 'memfd', mq: 1, fault: 'commit-fail' });
  });

  // The new instance dies after it took the rings: the old one takes them back, and the
  // guest's socket never closes (the old instance still holds it).
  it('datapath in client mode (QEMU server=on), hugetlbfs guest memory: no ping lost and no link change across handovers and a rollback', { timeout: 150_000 }, async () => {
    await guestAcrossHandovers({ mode: 'client', memory: 'hugetlbfs', fault: 'crash-after-resume' });
  });

  // QEMU starts one vhost device per queue pair (vhost_dev_start: 4) and the datapath hands
  // all 8 rings over. The guest has one vCPU, so its virtio_net uses the first pair only
  // (curr_queue_pairs = online CPUs); spreading over the others needs -smp 4, slow under TCG.
  it('datapath in server mode, mq=on with queues=4 (4 queue pairs negotiated): no ping lost and no link change across handovers and a rollback', { timeout: 150_000 }, async () => {
    await guestAcrossHandovers({ mode: 'server', memory: 'memfd', mq: 4, fault: 'commit-fail' });
  });

  // Two vCPUs, two queue pairs in use: the guest sends on both TX rings (a ping pinned to each
  // vCPU), and both move to every new instance.
  it('a guest with 2 vCPUs using 2 queue pairs: traffic on both TX rings, no ping lost either way, no link change across handovers and a rollback', { timeout: 180_000 }, async () => {
    await guestAcrossHandovers({ mode: 'server', memory: 'memfd', mq: 2, smp: 2, fault: 'commit-fail' });
  });
});
