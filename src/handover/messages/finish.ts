import { body, type Codec } from './codec.js';

/**
 * commit and abort (docs/handover-protocol.md, section 5): the handover made
 * final, or dropped before anything was switched; and shutdown.
 */

export interface CommitReply {
  role: string;
  /** new side: the control path it serves now */
  control?: string;
  /**
   * new side: whether it told its service manager (NOTIFY_SOCKET) that it is
   * the main process now (MAINPID=); null when it runs under none. Absent
   * from older datapaths.
   */
  mainPidNotified?: boolean | null;
}

export interface AbortReply {
  role: string;
}

export interface ShutdownReply {
  stopping: boolean;
}

export const commitReply: Codec<CommitReply> = {
  encode: (v) => ({ ...v }),
  decode(doc) {
    const r = body(doc, 'commit reply');
    return {
      role: r.str('role'),
      ...(r.has('control') ? { control: r.str('control') } : {}),
      ...(r.has('mainPidNotified') ? { mainPidNotified: r.nullable('mainPidNotified') ? null : r.bool('mainPidNotified') } : {}),
    };
  },
  fields: ['role', 'control', 'mainPidNotified'],
};

export const abortReply: Codec<AbortReply> = {
  encode: (v) => ({ ...v }),
  decode: (doc) => ({ role: body(doc, 'abort reply').str('role') }),
  fields: ['role'],
};

export const shutdownReply: Codec<ShutdownReply> = {
  encode: (v) => ({ ...v }),
  decode: (doc) => ({ stopping: body(doc, 'shutdown reply').bool('stopping') }),
  fields: ['stopping'],
};
