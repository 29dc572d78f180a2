/**
 * Exit codes, the same for every command: 0 done, 1 failed (or the answer is
 * "no", e.g. a plan that does not fit; for an upgrade: rolled back), 2 bad
 * input or refused before anything changed, 3 failed and left something for
 * the operator to do (the message says what).
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, operator: 3 } as const;
