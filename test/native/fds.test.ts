import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { closeFds, NamedFds } from '../../src/native/fds.js';
import { native } from '../../src/native/index.js';
import { openFds } from '../helpers/fds.js';

function eventfds(n: number): number[] {
  return Array.from({ length: n }, () => native.eventfd(0, false) as number);
}

function isOpen(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}

describe('NamedFds: fds held by name, off and onto the wire', () => {
  it('pairs names with fds, hands one out by name, and closes the rest in one call', () => {
    const before = openFds();
    const [a, b, c] = eventfds(3) as [number, number, number];
    const set = NamedFds.fromWire(['x/socket', 'x/region/0', 'handover/go'], [a, b, c]);
    expect(set.size).toBe(3);
    expect(set.take('x/region/0')).toBe(b);
    expect(set.take('x/region/0')).toBeNull();
    expect(() => set.need('x/ring/0/kick', "device 'x'")).toThrow("device 'x': fd 'x/ring/0/kick' is missing from the handover");
    set.closeAll();
    expect(isOpen(a) || isOpen(c)).toBe(false);
    expect(isOpen(b)).toBe(true);
    closeFds([b, null]);
    expect(openFds()).toBe(before);
  });

  it('a message whose names do not match its fds is refused and none of its fds is kept', () => {
    const before = openFds();
    for (const names of [['a'], ['a', 'a'], ['a', 7], 'a,b', undefined] as unknown[]) {
      const fds = eventfds(2);
      expect(() => NamedFds.fromWire(names, fds)).toThrow(expect.objectContaining({ code: 'ERR_ZIU_FD_NAMES' }));
      expect(openFds()).toBe(before);
    }
  });

  it('goes onto the wire in one order for names and fds, borrowed (nothing closed), and splits by name', () => {
    const [a, b, c] = eventfds(3) as [number, number, number];
    const set = new NamedFds().set('p/socket', a).set('q/socket', b).set('control/listener', c);
    expect(set.toWire()).toEqual({ names: ['p/socket', 'q/socket', 'control/listener'], fds: [a, b, c] });
    expect(() => set.set('p/socket', a)).toThrow("fd 'p/socket' named twice");
    const q = set.split((n) => n.startsWith('q/'));
    expect(q.toWire()).toEqual({ names: ['q/socket'], fds: [b] });
    expect(set.toWire().names).toEqual(['p/socket', 'control/listener']);
    const all = new NamedFds().merge(set).merge(q);
    expect(set.size + q.size).toBe(0);
    expect(all.size).toBe(3);
    all.closeAll();
    expect([a, b, c].some(isOpen)).toBe(false);
  });
});

describe('flock', () => {
  it('one open file description holds the lock; another gets EWOULDBLOCK with LOCK_NB until the first closes', () => {
    const dir = fs.mkdtempSync('/tmp/ziu-flock-');
    try {
      const a = fs.openSync(`${dir}/lock`, 'w');
      const b = fs.openSync(`${dir}/lock`, 'r');
      expect(native.flock(a, native.LOCK_EX | native.LOCK_NB)).toBe(0);
      expect(native.flock(b, native.LOCK_EX | native.LOCK_NB)).toBe(-11); // EWOULDBLOCK == EAGAIN
      fs.closeSync(a);
      expect(native.flock(b, native.LOCK_EX | native.LOCK_NB)).toBe(0);
      fs.closeSync(b);
      expect(native.flock(b, native.LOCK_EX)).toBe(-9); // EBADF: returned, never thrown
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
