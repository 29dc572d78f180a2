import { ZiuError } from '../../errors.js';
import { fdName, type RingExport, type VhostExport } from '../../handover/state.js';
import { NamedFds } from '../../native/fds.js';
import type { Engine } from '../engine.js';
import type { ConnectionFds, VhostConnection } from './connection.js';
import { eventfdProblem, isFreshRing, type VhostDevice } from './device.js';

/**
 * A vhost-user port as a handover carries it (docs/handover-protocol.md,
 * sections 6 and 7): its device state and its fds by name.
 */

/**
 * The device as a handover carries it, and its fds by name. The fds stay
 * the port's (sending them duplicates them): it goes on forwarding.
 */
export function exportPort(
  port: { name: string; path: string; mode: 'server' | 'client'; generation: number },
  conn: VhostConnection,
  dev: VhostDevice,
  engine: Engine,
): { device: VhostExport; fds: NamedFds } {
  const d = dev.state;
  const name = port.name;
  const fds = new NamedFds();
  const c = conn.exportFds();
  if (c.listenerFd !== null) fds.set(fdName(name, 'listener'), c.listenerFd);
  if (c.connFd !== null) fds.set(fdName(name, 'socket'), c.connFd);
  d.regions.forEach((r, i) => fds.set(fdName(name, 'region', i), r.fd));
  // Every queue pair up to the last one the frontend touched (at least the
  // first): a single-queue device exports exactly two rings, as before
  // multi-queue, so an older reader still takes it.
  let pairs = 1;
  d.rings.forEach((r, q) => {
    if (!isFreshRing(r)) pairs = Math.max(pairs, (q >> 1) + 1);
  });
  const status = engine.rings(dev.enginePort);
  const rings = d.rings.slice(0, 2 * pairs).map((r, q): RingExport => {
    if (r.kickFd !== null) fds.set(fdName(name, 'kick', q), r.kickFd);
    if (r.callFd !== null) fds.set(fdName(name, 'call', q), r.callFd);
    if (r.errFd !== null) fds.set(fdName(name, 'err', q), r.errFd);
    return {
      q,
      num: r.num,
      addr: r.addr,
      base: r.started ? (status[q]?.lastAvail ?? r.base) : r.base,
      kick: r.kickFd !== null ? 'fd' : r.kickNoFd ? 'poll' : 'none',
      call: r.callFd !== null,
      err: r.errFd !== null,
      enabled: r.enabled,
      started: r.started,
    };
  });
  let pending: VhostExport['pending'] = null;
  if (c.pending) {
    c.pending.fds.forEach((fd, i) => fds.set(fdName(name, 'pending', i), fd));
    pending = { data: c.pending.data.toString('base64'), fds: c.pending.fds.length };
  }
  return {
    device: {
      kind: 'vhost-user',
      name,
      path: port.path,
      mode: port.mode,
      listening: c.listenerFd !== null,
      connected: c.connFd !== null,
      generation: port.generation,
      owner: d.owner,
      features: d.features,
      protocolFeatures: d.protocolFeatures,
      status: d.status,
      mtu: d.mtu,
      regions: d.regions.map(({ gpa, size, uaddr, offset }) => ({ gpa, size, uaddr, offset })),
      rings,
      pending,
    },
    fds,
  };
}

/** The sockets of an exported port, taken from `fds` (owned from here on); on failure none is kept. */
export function takeConnectionFds(x: VhostExport, fds: NamedFds): ConnectionFds {
  const taken = new NamedFds();
  const need = (name: string): number => {
    const fd = fds.need(name, `device '${x.name}'`);
    taken.set(name, fd);
    return fd;
  };
  try {
    const listenerFd = x.listening ? need(fdName(x.name, 'listener')) : null;
    const connFd = x.connected ? need(fdName(x.name, 'socket')) : null;
    let pending: ConnectionFds['pending'] = null;
    if (x.pending) {
      const pfds: number[] = [];
      for (let i = 0; i < x.pending.fds; i++) pfds.push(need(fdName(x.name, 'pending', i)));
      pending = { data: Buffer.from(x.pending.data, 'base64'), fds: pfds };
    }
    return { listenerFd, connFd, pending };
  } catch (err) {
    taken.closeAll();
    throw err;
  }
}

/**
 * Program a fresh device from a handover export: the engine gets the memory
 * table, the rings and their fds (the engine is frozen, so nothing is polled
 * and guest memory is not written). Every fd named for the device is taken
 * from `fds` and owned by the device from here on.
 */
export function adoptDevice(dev: VhostDevice, x: VhostExport, fds: NamedFds, engine: Engine, o: { prefault: boolean }): void {
  const what = `device '${x.name}'`;
  const d = dev.state;
  d.owner = x.owner;
  d.features = x.features;
  d.protocolFeatures = x.protocolFeatures;
  d.status = x.status;
  d.mtu = x.mtu;
  x.regions.forEach((r, i) => d.regions.push({ ...r, fd: fds.need(fdName(x.name, 'region', i), what) }));
  if (x.rings.length > d.rings.length) throw new ZiuError('ERR_ZIU_IMPORT', `${what}: ${x.rings.length} rings, this datapath serves at most ${d.rings.length}`);
  x.rings.forEach((rx, q) => {
    const r = d.rings[q]!;
    r.num = rx.num;
    r.addr = rx.addr;
    r.base = rx.base;
    r.kickFd = rx.kick === 'fd' ? fds.need(fdName(x.name, 'kick', q), what) : null;
    r.kickNoFd = rx.kick === 'poll';
    r.callFd = rx.call ? fds.need(fdName(x.name, 'call', q), what) : null;
    r.errFd = rx.err ? fds.need(fdName(x.name, 'err', q), what) : null;
  });
  // The same rule as SET_VRING_KICK/CALL/ERR: a handover is no way around it
  // (the fds are the device's now, so a refusal closes them with it).
  d.rings.forEach((r, q) => {
    for (const [kind, fd] of [['kick', r.kickFd], ['call', r.callFd], ['err', r.errFd]] as const) {
      const problem = fd === null ? null : eventfdProblem(fd);
      if (problem !== null) throw new ZiuError('ERR_ZIU_IMPORT', `${what}: ${fdName(x.name, kind, q)} ${problem}`);
    }
  });
  const port = dev.enginePort;
  if (d.features !== null) dev.applyFeatures(d.features);
  if (d.regions.length > 0) engine.setMemTable(port, d.regions);
  x.rings.forEach((rx, q) => {
    const r = d.rings[q]!;
    if (r.kickFd !== null || r.kickNoFd) engine.setKick(port, q, r.kickFd ?? -1);
    if (r.callFd !== null) engine.setCall(port, q, r.callFd);
    if (rx.enabled) {
      r.enabled = true;
      engine.setEnabled(port, q, true);
    }
    if (rx.started) {
      if (r.num === null || r.addr === null) throw new ZiuError('ERR_ZIU_IMPORT', `device '${x.name}' ring ${q}: started without size or addresses`);
      engine.setVring(port, q, { num: r.num, ...r.addr, lastAvail: r.base });
      engine.start(port, q);
      r.started = true;
    }
  });
  // What our worker touches first when it takes the port over, and no more of the guest (native/dp_mem.c).
  if (o.prefault && d.regions.length > 0) engine.prefault(port);
}
