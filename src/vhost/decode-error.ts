import { ZiuError } from '../errors.js';

/**
 * Why a message was refused. Stable, for programs:
 * - bad-size: the payload length is not the one the request takes
 * - unknown-request: a request id ziu does not handle
 * - wrong-fd-count: more or fewer fds than the request carries
 * - bad-value: a field out of range (ring index, ring size, overlapping regions...)
 * - bad-flags: header flags a request (or reply) must not have
 */
export type DecodeErrorKind = 'bad-size' | 'unknown-request' | 'wrong-fd-count' | 'bad-value' | 'bad-flags';

/**
 * A vhost-user message that cannot be accepted. Returned, not thrown: a peer's
 * bad message is an outcome, not a bug. `fds` lists every fd that came with the
 * message; the decoder kept none of them and the caller must close them all.
 */
export class DecodeError extends ZiuError {
  readonly kind: DecodeErrorKind;
  /** the message as named in the text: 'SET_MEM_TABLE', 'request 9999', 'reply to GET_FEATURES' */
  readonly request: string;
  /** the reason alone, without the request name */
  readonly reason: string;
  readonly fds: readonly number[];

  constructor(kind: DecodeErrorKind, request: string, reason: string, fds: readonly number[]) {
    super('ERR_ZIU_VHOST_BAD_MESSAGE', `vhost-user ${request}: ${reason}`);
    this.name = 'DecodeError';
    this.kind = kind;
    this.request = request;
    this.reason = reason;
    this.fds = [...fds];
  }
}
