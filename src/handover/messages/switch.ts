import { ZiuError } from '../../errors.js';
import { hex, type Reader } from '../reader.js';
import { isStateFormat, type StateFormat } from '../state.js';
import { body, type Codec } from './codec.js';

/**
 * freeze, resume, thaw and handback (docs/handover-protocol.md, section 5):
 * the switchover itself, and its undoing.
 */

/** How long a frozen old instance waits for resume, commit or thaw before it thaws itself. */
export const DEAD_MAN_MS = { default: 200, min: 10, max: 60_000 } as const;

export interface FreezeRequest {
  /** default DEAD_MAN_MS.default; above DEAD_MAN_MS.max it is cut to it */
  deadManMs?: number;
}

/** A ring as the frozen old instance left it. */
export interface RingReport {
  q: number;
  lastAvail: number;
  /** read from guest memory; null without ring addresses */
  usedIdx: number | null;
  started: boolean;
}

/** Devices that changed between export and freeze, re-sent with their fds. */
export interface ChangedDevices {
  format: StateFormat;
  state: unknown;
  fds: string[];
}

export interface FreezeReply {
  frozenNs: bigint;
  rings: Record<string, RingReport[]>;
  changed: ChangedDevices | null;
  /** the go eventfd was written (no device changed) */
  signalled: boolean;
}

export interface ResumeRequest {
  changed: ChangedDevices | null;
  /** names of the attached fds: those of `changed` */
  fds: string[];
  /**
   * The orchestrator has seen the old instance die after export (by pid and
   * start time): take the baton even if nobody froze it.
   */
  predecessorGone?: boolean;
}

export interface ResumeReply {
  thawedNs: bigint;
  /** 0 if the first pass had not started within 200 ms */
  firstPassNs: bigint;
  /** the worker took over on the go signal (direct takeover) */
  takenOver: boolean;
}

export interface ThawRequest {
  /** take the rings back even from a new instance that resumed (the orchestrator stopped it) */
  force?: boolean;
  /** devices the new instance handed back (its handback reply's `changed`): adopted in place of ours */
  changed?: ChangedDevices | null;
  /** names of the attached fds: those of `changed` */
  fds?: string[];
}

export interface ThawReply {
  thawed: boolean;
  thawedNs?: bigint;
  role: string;
  /** devices taken back from a handback (their state as the new instance left it) */
  readopted?: string[];
  /**
   * devices whose frontend connection was closed: a successor that is gone
   * had consumed vhost-user messages from them, so our state of them is stale
   */
  reset?: string[];
}

/** The new instance gives the rings back (a rollback after it resumed): its state of what it changed. */
export interface HandbackReply {
  frozenNs: bigint;
  /** the devices it read vhost-user bytes from or accepted on since it took the rings, or null */
  changed: ChangedDevices | null;
}

function changedOf(r: Reader): ChangedDevices | null {
  if (!r.has('changed') || r.nullable('changed')) return null;
  const c = r.child('changed');
  const f = c.raw('format');
  if (!isStateFormat(f)) throw new ZiuError('ERR_ZIU_STATE_FORMAT', `changed devices in state format ${String(f)}`);
  return { format: f, state: c.raw('state'), fds: c.strs('fds') };
}

export const freezeRequest: Codec<FreezeRequest> = {
  encode: (v) => ({ ...v }),
  decode(doc) {
    const r = body(doc, 'freeze request');
    if (!r.has('deadManMs')) return {};
    const ms = r.num('deadManMs');
    if (ms === 0) throw r.fail('freeze request.deadManMs: must be at least 1 ms');
    return { deadManMs: ms };
  },
  fields: ['deadManMs'],
};

export const freezeReply: Codec<FreezeReply> = {
  encode: (v) => ({ ...v, frozenNs: hex(v.frozenNs) }),
  decode(doc) {
    const r = body(doc, 'freeze reply');
    const rings: Record<string, RingReport[]> = {};
    for (const [name, list] of Object.entries(r.child('rings').obj)) {
      rings[name] = body({ list }, `freeze reply.rings.${name}`)
        .list('list')
        .map((q) => ({ q: q.num('q'), lastAvail: q.num('lastAvail'), usedIdx: q.nullable('usedIdx') ? null : q.num('usedIdx'), started: q.bool('started') }));
    }
    return { frozenNs: r.big('frozenNs'), rings, changed: changedOf(r), signalled: r.bool('signalled') };
  },
  fields: ['frozenNs', 'rings', 'changed', 'signalled'],
};

export const resumeRequest: Codec<ResumeRequest> = {
  encode: (v) => ({ ...v }),
  decode(doc) {
    const r = body(doc, 'resume request');
    return { changed: changedOf(r), fds: r.has('fds') ? r.strs('fds') : [], ...(r.has('predecessorGone') ? { predecessorGone: r.bool('predecessorGone') } : {}) };
  },
  fields: ['changed', 'fds', 'predecessorGone'],
};

export const resumeReply: Codec<ResumeReply> = {
  encode: (v) => ({ thawedNs: hex(v.thawedNs), firstPassNs: hex(v.firstPassNs), takenOver: v.takenOver }),
  decode(doc) {
    const r = body(doc, 'resume reply');
    return { thawedNs: r.big('thawedNs'), firstPassNs: r.big('firstPassNs'), takenOver: r.bool('takenOver') };
  },
  fields: ['thawedNs', 'firstPassNs', 'takenOver'],
};

export const thawRequest: Codec<ThawRequest> = {
  encode: (v) => ({ ...v }),
  decode(doc) {
    const r = body(doc, 'thaw request');
    const changed = changedOf(r);
    return {
      ...(r.has('force') ? { force: r.bool('force') } : {}),
      ...(changed !== null ? { changed } : {}),
      ...(r.has('fds') ? { fds: r.strs('fds') } : {}),
    };
  },
  fields: ['force', 'changed', 'fds'],
};

export const thawReply: Codec<ThawReply> = {
  encode: (v) => ({ ...v, ...(v.thawedNs !== undefined ? { thawedNs: hex(v.thawedNs) } : {}) }),
  decode(doc) {
    const r = body(doc, 'thaw reply');
    return {
      thawed: r.bool('thawed'),
      ...(r.has('thawedNs') ? { thawedNs: r.big('thawedNs') } : {}),
      role: r.str('role'),
      ...(r.has('readopted') ? { readopted: r.strs('readopted') } : {}),
      ...(r.has('reset') ? { reset: r.strs('reset') } : {}),
    };
  },
  fields: ['thawed', 'thawedNs', 'role', 'readopted', 'reset'],
};

export const handbackReply: Codec<HandbackReply> = {
  encode: (v) => ({ ...v, frozenNs: hex(v.frozenNs) }),
  decode(doc) {
    const r = body(doc, 'handback reply');
    return { frozenNs: r.big('frozenNs'), changed: changedOf(r) };
  },
  fields: ['frozenNs', 'changed'],
};
