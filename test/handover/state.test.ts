import { describe, expect, it } from 'vitest';
import { decodeState, encodeState, fdName, type StateExport } from '../../src/handover/state.js';

const state: StateExport = {
  control: '/run/ziu/dp.sock',
  devices: [
    {
      kind: 'vhost-user',
      name: 'vm1',
      path: '/run/vm1.sock',
      mode: 'server',
      listening: true,
      connected: true,
      generation: 7,
      owner: true,
      features: 0x150008000n,
      protocolFeatures: 0x1009n,
      status: 15,
      mtu: null,
      regions: [{ gpa: 0n, size: 0x40000000n, uaddr: 0x7f0000000000n, offset: 0n }],
      rings: [
        { q: 0, num: 256, addr: { desc: 0x7f0000001000n, avail: 0x7f0000002000n, used: 0x7f0000003000n }, base: 65535, kick: 'fd', call: true, err: false, enabled: true, started: true },
        { q: 1, num: 256, addr: null, base: 0, kick: 'poll', call: false, err: false, enabled: false, started: false },
      ],
      pending: { data: 'AQID', fds: 1 },
    },
    { kind: 'tap', name: 'uplink', ifname: 'tap0' },
  ],
};

describe('handover state formats', () => {
  for (const format of [1, 2] as const) {
    it(`format ${format}: decode(encode(x)) == x, through JSON`, () => {
      const wire = JSON.parse(JSON.stringify(encodeState(format, state))) as unknown;
      expect(decodeState(format, wire)).toEqual(state);
    });
  }

  it('the two formats spell the same state differently', () => {
    expect(Object.keys(encodeState(1, state))).toEqual(['format', 'control', 'devices']);
    expect(Object.keys(encodeState(2, state))).toEqual(['format', 'control', 'vhostUser', 'taps']);
  });

  it('refuses what it cannot read, naming the field', () => {
    expect(() => decodeState(3, {})).toThrow('state format 3 is not one of 1, 2');
    expect(() => decodeState(1, { format: 2 })).toThrow('state says format 2, the message says 1');
    const v1 = JSON.parse(JSON.stringify(encodeState(1, state))) as { devices: Array<Record<string, unknown>> };
    v1.devices[0]!['features'] = 12;
    expect(decodeState(1, v1).devices[0]).toMatchObject({ features: 12n });
    v1.devices[0]!['features'] = '0xzz';
    expect(() => decodeState(1, v1)).toThrow('state (format 1).devices[0].features: expected a u64 as a "0x..." string');
    const v2 = JSON.parse(JSON.stringify(encodeState(2, state))) as { vhostUser: Record<string, { queues: { tx: Record<string, unknown> } }> };
    v2.vhostUser['vm1']!.queues.tx['state'] = 'dancing';
    expect(() => decodeState(2, v2)).toThrow('state (format 2).vhostUser.vm1.queues.tx.state: expected one of running, started, enabled, stopped');
    expect(() => decodeState(1, { format: 1, control: '/x', devices: [{ kind: 'tap', name: 'a/b', ifname: 't' }] })).toThrow("device name 'a/b' must be 1-32 of [A-Za-z0-9._-]");
  });

  // Four queue pairs: rings 0..7, ring 2k = RX of pair k, 2k+1 = TX.
  const mq: StateExport = {
    control: state.control,
    devices: [
      {
        ...(state.devices[0] as Extract<StateExport['devices'][number], { kind: 'vhost-user' }>),
        rings: Array.from({ length: 8 }, (_, q) => ({
          q,
          num: 256,
          addr: { desc: 0x7f0000001000n + BigInt(q) * 0x10000n, avail: 0x7f0000002000n + BigInt(q) * 0x10000n, used: 0x7f0000003000n + BigInt(q) * 0x10000n },
          base: q * 100,
          kick: 'fd' as const,
          call: true,
          err: q === 3,
          enabled: q !== 5,
          started: true,
        })),
      },
    ],
  };

  for (const format of [1, 2] as const) {
    it(`format ${format}: carries every ring of a multi-queue device`, () => {
      const wire = JSON.parse(JSON.stringify(encodeState(format, mq))) as unknown;
      expect(decodeState(format, wire)).toEqual(mq);
    });
  }

  it('format 2 names queue pair k > 0 rx<k>/tx<k>; a single-queue device is spelled as before multi-queue', () => {
    const one = encodeState(2, state) as { vhostUser: Record<string, { queues: Record<string, unknown> }> };
    expect(Object.keys(one.vhostUser['vm1']!.queues)).toEqual(['rx', 'tx']);
    const four = encodeState(2, mq) as { vhostUser: Record<string, { queues: Record<string, unknown> }> };
    expect(Object.keys(four.vhostUser['vm1']!.queues)).toEqual(['rx', 'tx', 'rx1', 'tx1', 'rx2', 'tx2', 'rx3', 'tx3']);
  });

  it('reads a single-queue export written before multi-queue (literal documents)', () => {
    const ring = (q: number): Record<string, unknown> => ({ q, num: 256, desc: '0x1000', avail: '0x2000', used: '0x3000', base: 5, kick: 'fd', call: true, err: false, enabled: true, started: true });
    const dev = { kind: 'vhost-user', name: 'vm1', path: '/p', mode: 'server', listening: true, connected: true, generation: 1, owner: true, features: '0x1', protocolFeatures: '0x1', status: 0, mtu: null, regions: [], pending: null };
    expect(decodeState(1, { format: 1, control: '/c', devices: [{ ...dev, rings: [ring(0), ring(1)] }] }).devices[0]).toMatchObject({ rings: [{ q: 0, base: 5 }, { q: 1 }] });
    const queue = { size: 256, addrs: ['0x1000', '0x2000', '0x3000'], lastAvail: 9, fds: { kick: 'fd', call: true, err: false }, state: 'running' };
    const v2 = {
      format: 2,
      control: '/c',
      vhostUser: { vm1: { socket: { path: '/p', mode: 'server', listening: true, connected: true, pending: null }, generation: 1, negotiated: { owner: true, features: '0x1', protocolFeatures: '0x1', status: 0, mtu: null }, memory: [], queues: { rx: queue, tx: queue } } },
      taps: {},
    };
    expect(decodeState(2, v2).devices[0]).toMatchObject({ rings: [{ q: 0, base: 9 }, { q: 1, base: 9 }] });
  });

  it('refuses rings that are not whole queue pairs in order, or more than 8 pairs', () => {
    const v1 = JSON.parse(JSON.stringify(encodeState(1, mq))) as { devices: Array<{ rings: unknown[] }> };
    const rings = v1.devices[0]!.rings;
    v1.devices[0]!.rings = rings.slice(0, 3);
    expect(() => decodeState(1, v1)).toThrow('state (format 1).devices[0].rings: must be rings 0, 1, ... of 1 to 8 whole queue pairs, in order');
    v1.devices[0]!.rings = [rings[1], rings[0]];
    expect(() => decodeState(1, v1)).toThrow('must be rings 0, 1, ... of 1 to 8 whole queue pairs, in order');
    v1.devices[0]!.rings = [...rings, ...rings, ...rings].map((r, q) => ({ ...(r as object), q }));
    expect(() => decodeState(1, v1)).toThrow('must be rings 0, 1, ... of 1 to 8 whole queue pairs, in order');
    const v2 = JSON.parse(JSON.stringify(encodeState(2, mq))) as { vhostUser: Record<string, { queues: Record<string, unknown> }> };
    const queues = v2.vhostUser['vm1']!.queues;
    delete queues['tx3'];
    expect(() => decodeState(2, v2)).toThrow('state (format 2).vhostUser.vm1.queues: must be rx, tx, rx1, tx1, ... of 1 to 8 whole queue pairs, in order');
    delete queues['rx3'];
    queues['tx4'] = queues['tx2'];
    expect(() => decodeState(2, v2)).toThrow('state (format 2).vhostUser.vm1.queues.rx3: missing');
    delete queues['tx4'];
    queues['rx3'] = queues['tx2'];
    queues['tx3'] = queues['tx2'];
    queues['rx+'] = queues['tx2'];
    expect(() => decodeState(2, v2)).toThrow('state (format 2).vhostUser.vm1.queues.rx+: not a queue name (rx, tx, rx1, tx1, ...)');
  });

  it('names fds by device, role and queue', () => {
    expect([fdName('vm1', 'socket'), fdName('vm1', 'region', 2), fdName('vm1', 'kick', 1), fdName('vm1', 'call', 15), fdName('up', 'tap')]).toEqual(['vm1/socket', 'vm1/region/2', 'vm1/ring/1/kick', 'vm1/ring/15/call', 'up/tap']);
  });
});
