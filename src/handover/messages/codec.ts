import { Reader, type Doc } from '../reader.js';

/**
 * One side of one handover message: the typed value, how it is spelled on
 * the wire, and the validator that turns untrusted JSON back into it. Like
 * src/vhost/messages, but for the control socket's JSON documents
 * (docs/handover-protocol.md, section 5). The `op` and the reply's `ok` are
 * the transport's (src/control), not part of the body.
 */
export interface Codec<T> {
  /** the value as a JSON body (u64 and nanoseconds as "0x..." strings) */
  encode(v: T): Doc;
  /** validate and type a body that came off the wire; an error names the field */
  decode(doc: unknown): T;
  /** the top-level fields this body may carry, for the protocol page's check */
  readonly fields: readonly string[];
}

/** A reader for the body of `<op> request` or `<op> reply`; errors are ERR_ZIU_CONTROL_BAD_MESSAGE. */
export function body(doc: unknown, where: string): Reader {
  return new Reader(doc, where, 'ERR_ZIU_CONTROL_BAD_MESSAGE');
}

/** A message with no fields (hello, status, commit, abort, shutdown requests). */
export const EMPTY: Codec<Record<string, never>> = {
  encode: () => ({}),
  decode: () => ({}),
  fields: [],
};
