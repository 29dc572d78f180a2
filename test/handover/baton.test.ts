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
});
