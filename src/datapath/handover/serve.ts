import type { Handler } from '../../control/server.js';
import { OPS, type Op, type ReplyOf, type RequestOf } from '../../handover/messages/index.js';
import { closeFds, NamedFds } from '../../native/fds.js';

/** What a typed op handler gives back: the reply, and fds to attach (borrowed: the kernel copies them). */
export interface Answer<K extends Op> {
  body: ReplyOf<K>;
  fds?: NamedFds;
}

/**
 * A control-socket handler for one op of the handover protocol: the request
 * is validated by its codec before `fn` sees it, the reply encoded by its
 * own. fds: an op that takes none closes any that came (a confused peer must
 * not leak them into us); one that takes fds gets them by name, and whatever
 * `fn` did not take is closed when it returns or throws.
 */
export function serve<K extends Op>(op: K, fn: (req: RequestOf<K>, fds: NamedFds) => Answer<K> | Promise<Answer<K>>): Handler {
  const spec = OPS[op];
  return async (raw, fds) => {
    let named: NamedFds;
    if (spec.fds) {
      named = NamedFds.fromWire(raw['fds'], fds);
    } else {
      closeFds(fds);
      named = new NamedFds();
    }
    try {
      const answer = await fn(spec.request.decode(raw) as RequestOf<K>, named);
      const out = answer.fds?.toWire();
      return { body: (spec.reply.encode as (v: ReplyOf<K>) => Record<string, unknown>)(answer.body), ...(out ? { fds: out.fds } : {}) };
    } finally {
      named.closeAll();
    }
  };
}
