import { describe, expect, it } from 'vitest';
import { Baton } from '../../src/handover/baton.js';
import { native } from '../../src/native/index.js';
import { openFds } from '../helpers/fds.js';

/** Both instances of a handover hold the baton: a dup is the other process's copy. */
function otherSide(b: Baton): Baton {
  return Baton.adopt(native.dup(b.fd) as number);
}

describe('Baton: who serves the rings, decided by one compare-and-swap', () => {
  it('is created active; a resume before the freeze loses; after it exactly one side wins', () => {
    const before = openFds();
    const old = Baton.create();
    const neu = otherSide(old);
    expect(old.read()).toBe('active');
    expect(neu.takeForNew()).toBe('active');
    expect(neu.read()).toBe('active');
    old.freeze();
    expect(neu.read()).toBe('frozen');
    expect(neu.takeForNew()).toBe('frozen');
    // The new side won: the old side's thaw or dead-man finds it taken.
    expect(old.takeForOld()).toBe('new');
    expect(old.read()).toBe('new');
    // Only once the new instance is gone does a forced thaw take it back.
    expect(old.forceToOld()).toBe('new');
    expect(neu.read()).toBe('old');
    expect(neu.takeForNew()).toBe('old');
    old.close();
    neu.close();
    expect(openFds()).toBe(before);
  });

  it('a retired export can never be resumed, and freeze refuses a baton that is not active', () => {
    const old = Baton.create();
    const neu = otherSide(old);
    old.retire();
    expect(neu.takeForNew()).toBe('old');
    expect(() => old.freeze()).toThrow(expect.objectContaining({ code: 'ERR_ZIU_BATON' }));
    old.close();
    neu.close();
  });

  it('the dead-man switch wins a frozen baton the new side never took', () => {
    const old = Baton.create();
    const neu = otherSide(old);
    old.freeze();
    expect(old.takeForOld()).toBe('frozen');
    expect(neu.takeForNew()).toBe('old');
    old.unfreeze();
    expect(old.read()).toBe('old');
    old.close();
    neu.close();
  });

  it('carries the new instance to the old one: who it is, its heartbeats, the devices it consumed, its commit; and the handback', () => {
    const before = openFds();
    const old = Baton.create();
    const neu = otherSide(old);
    neu.setSuccessor({ pid: 4242, startTime: 987654321 });
    expect(old.successor()).toEqual({ pid: 4242, startTime: 987654321 });
    expect(old.beats()).toEqual({ worker: 0n, control: 0n });
    neu.beat(123n);
    expect(old.beats().control).toBe(123n);
    // The engine's worker beats at the offset the page gives it.
    expect(native.DP_BEAT_OFFSET).toBe(8);
    for (const i of [0, 31, 32, 255, 32255]) neu.markDirty(i);
    expect(old.dirty()).toEqual([0, 31, 32, 255, 32255]);
    expect(() => neu.markDirty(32256)).toThrow(/outside the baton page/);
    expect(old.committed()).toBe(false);
    old.freeze();
    expect(neu.takeForNew()).toBe('frozen');
    // A rollback the new instance takes part in: 1 -> 0, then the old side's own CAS.
    expect(neu.handBack()).toBe('new');
    expect(old.takeForOld()).toBe('frozen');
    expect(neu.handBack()).toBe('old');
    neu.markCommitted();
    expect(old.committed()).toBe(true);
    old.close();
    neu.close();
    expect(openFds()).toEqual(before);
  });
});
