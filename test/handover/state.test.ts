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

  it('names fds by device, role and queue', () => {
    expect([fdName('vm1', 'socket'), fdName('vm1', 'region', 2), fdName('vm1', 'kick', 1), fdName('up', 'tap')]).toEqual(['vm1/socket', 'vm1/region/2', 'vm1/ring/1/kick', 'up/tap']);
  });
});
