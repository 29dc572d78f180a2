import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startEcho, startProbe } from '../../src/probe/index.js';
import { openFds } from '../helpers/fds.js';
import { tempDir } from '../helpers/tmp.js';
import { sleep, threadCount } from './helpers.js';
import { LoopbackBackend } from './loopback-backend.js';

const ME = Buffer.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
const ECHO_MAC = '02:00:00:00:00:02';
const ECHO = Buffer.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]);
const ip = (s: string): Buffer => Buffer.from(s.split('.').map(Number));

/** RFC 1071 ones' complement sum; 0 over data that includes a correct checksum. */
function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function arpRequest(target: string): Buffer {
  const f = Buffer.alloc(60);
  Buffer.from('ffffffffffff', 'hex').copy(f, 0);
  ME.copy(f, 6);
  f.writeUInt16BE(0x0806, 12);
  f.writeUInt16BE(1, 14); // Ethernet
  f.writeUInt16BE(0x0800, 16); // IPv4
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(1, 20); // request
  ME.copy(f, 22);
  ip('10.0.0.1').copy(f, 28);
  ip(target).copy(f, 38);
  return f;
}

function icmpEcho(target: string, payload: Buffer): Buffer {
  const icmp = Buffer.alloc(8 + payload.length);
  icmp[0] = 8;
  icmp.writeUInt16BE(0x1234, 4);
  icmp.writeUInt16BE(7, 6);
  payload.copy(icmp, 8);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const iph = Buffer.alloc(20);
  iph[0] = 0x45;
  iph.writeUInt16BE(20 + icmp.length, 2);
  iph.writeUInt16BE(0xbeef, 4);
  iph[8] = 31;
  iph[9] = 1;
  ip('10.0.0.1').copy(iph, 12);
  ip(target).copy(iph, 16);
  iph.writeUInt16BE(checksum(iph), 10);
  const eth = Buffer.alloc(14);
  ECHO.copy(eth, 0);
  ME.copy(eth, 6);
  eth.writeUInt16BE(0x0800, 12);
  return Buffer.concat([eth, iph, icmp]);
}

async function until<T>(what: () => T | undefined, ms = 2000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = what();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(5);
  }
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function echoSetup(): Promise<{ sock: string; backend: LoopbackBackend }> {
  const tmp = tempDir('ziu-probe-');
  const sock = path.join(tmp.dir, 'vm.sock');
  const backend = new LoopbackBackend().route(sock, 'capture');
  cleanups.push(() => (backend.close(), tmp.remove()));
  await backend.listen(sock);
  return { sock, backend };
}

describe('echo mode answers ARP and ping for its IP', () => {
  it('answers an ARP request and an ICMP echo request with correct addresses and checksums', async () => {
    const { sock, backend } = await echoSetup();
    const echo = await startEcho({ socket: sock, ip: '10.0.0.2', mac: ECHO_MAC });
    expect(echo.mac).toBe(ECHO_MAC);
    const dev = await backend.ready(sock);

    expect(backend.inject(sock, arpRequest('10.0.0.2'))).toBe(true);
    const arp = await until(() => dev.captured[0]);
    expect(arp.length).toBe(60);
    expect(arp.subarray(0, 6)).toEqual(ME);
    expect(arp.subarray(6, 12)).toEqual(ECHO);
    expect(arp.readUInt16BE(12)).toBe(0x0806);
    expect(arp.readUInt16BE(20)).toBe(2); // reply
    expect(arp.subarray(22, 28)).toEqual(ECHO); // sender hw: us
    expect(arp.subarray(28, 32)).toEqual(ip('10.0.0.2'));
    expect(arp.subarray(32, 38)).toEqual(ME); // target: the asker
    expect(arp.subarray(38, 42)).toEqual(ip('10.0.0.1'));

    const payload = Buffer.from('ziu echo payload, 32 bytes long!');
    expect(backend.inject(sock, icmpEcho('10.0.0.2', payload))).toBe(true);
    const pong = await until(() => dev.captured[1]);
    expect(pong.length).toBe(14 + 20 + 8 + 32);
    expect(pong.subarray(0, 6)).toEqual(ME);
    expect(pong.subarray(6, 12)).toEqual(ECHO);
    const iph = pong.subarray(14, 34);
    expect(checksum(iph)).toBe(0);
    expect(iph.subarray(12, 16)).toEqual(ip('10.0.0.2'));
    expect(iph.subarray(16, 20)).toEqual(ip('10.0.0.1'));
    expect(iph[9]).toBe(1);
    expect(iph.readUInt16BE(4)).toBe(0xbeef);
    const icmp = pong.subarray(34);
    expect(checksum(icmp)).toBe(0);
    expect(icmp[0]).toBe(0); // echo reply
    expect(icmp.readUInt16BE(4)).toBe(0x1234);
    expect(icmp.readUInt16BE(6)).toBe(7);
    expect(icmp.subarray(8)).toEqual(payload);

    // not for us, or not a request: counted, not answered
    backend.inject(sock, arpRequest('10.0.0.9'));
    backend.inject(sock, icmpEcho('10.0.0.9', payload));
    backend.inject(sock, Buffer.alloc(60, 0xab));
    await until(() => (echo.stats().unknown === 3 ? true : undefined));
    expect(echo.stats()).toMatchObject({ arpReplies: 1, icmpReplies: 1, unknown: 3, connected: true });
    const r = await echo.stop();
    expect(r).toMatchObject({ ip: '10.0.0.2', mac: ECHO_MAC, arpReplies: 1, icmpReplies: 1, unknown: 3, txRingFull: 0, reconnects: 0 });
    expect(dev.captured).toHaveLength(2);
  });

  it('an idle RX thread sleeps on the call eventfd: almost no CPU', async () => {
    const { sock } = await echoSetup();
    const fds = openFds();
    const threads = threadCount();
    const echo = await startEcho({ socket: sock, ip: '10.0.0.2' });
    expect(threadCount()).toBe(threads + 1);
    await sleep(1000);
    const s = echo.stats();
    // 100 poll timeouts a second: well under 2% of a core
    expect(s.native.rxCpuNs).toBeLessThan(20e6);
    expect(s.native.rxSleeps).toBeGreaterThan(50);
    await echo.stop();
    expect(threadCount()).toBe(threads);
    await sleep(20);
    expect(openFds()).toBe(fds);
  });

  it('a slow probe does not burn a core either (TX sleeps between frames)', async () => {
    const tmp = tempDir('ziu-probe-');
    const p = path.join(tmp.dir, 'loop.sock');
    const backend = new LoopbackBackend().route(p, p);
    cleanups.push(() => (backend.close(), tmp.remove()));
    await backend.listen(p);
    const probe = await startProbe({ tx: p, rx: p, rate: 100, size: 64 });
    await sleep(1000);
    const s = probe.stats();
    await probe.stop();
    expect(s.received).toBeGreaterThan(90);
    expect(s.native.txCpuNs).toBeLessThan(50e6);
    expect(s.native.rxCpuNs).toBeLessThan(50e6);
  });
});
