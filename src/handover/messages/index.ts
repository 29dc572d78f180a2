import { EMPTY, type Codec } from './codec.js';
import { abortReply, commitReply, shutdownReply } from './finish.js';
import { helloReply, statusReply } from './hello.js';
import { freezeReply, freezeRequest, handbackReply, resumeReply, resumeRequest, thawReply, thawRequest } from './switch.js';
import { exportReply, exportRequest, importReply, importRequest } from './transfer.js';

/**
 * Every op of the handover protocol's control socket, with the codecs of
 * its request and reply (docs/handover-protocol.md, section 5). The
 * datapath decodes requests and encodes replies with them; the orchestrator
 * (src/upgrade/peer.ts) the other way round. A test checks the protocol page
 * against the fields listed here.
 */
export const OPS = {
  hello: { request: EMPTY, reply: helloReply, fds: false },
  status: { request: EMPTY, reply: statusReply, fds: false },
  shutdown: { request: EMPTY, reply: shutdownReply, fds: false },
  export: { request: exportRequest, reply: exportReply, fds: false },
  import: { request: importRequest, reply: importReply, fds: true },
  freeze: { request: freezeRequest, reply: freezeReply, fds: false },
  resume: { request: resumeRequest, reply: resumeReply, fds: true },
  thaw: { request: thawRequest, reply: thawReply, fds: true },
  handback: { request: EMPTY, reply: handbackReply, fds: false },
  commit: { request: EMPTY, reply: commitReply, fds: false },
  abort: { request: EMPTY, reply: abortReply, fds: false },
  // (any is only the bound: each entry keeps its own codec types)
} as const satisfies Record<string, { request: Codec<any>; reply: Codec<any>; fds: boolean }>;

export type Op = keyof typeof OPS;
type Value<C> = C extends Codec<infer T> ? T : never;
export type RequestOf<K extends Op> = Value<(typeof OPS)[K]['request']>;
export type ReplyOf<K extends Op> = Value<(typeof OPS)[K]['reply']>;

export type { Codec } from './codec.js';
export { DEAD_MAN_MS } from './switch.js';
export type { ChangedDevices, FreezeReply, FreezeRequest, HandbackReply, ResumeReply, ResumeRequest, RingReport, ThawReply, ThawRequest } from './switch.js';
export type { ExportReply, ExportRequest, ImportReply, ImportRequest } from './transfer.js';
export type { AbortReply, CommitReply, ShutdownReply } from './finish.js';
export { handoverInfo, handoverInfoCodec } from './hello.js';
export type { HandoverInfo, HandoverStatus, Hello, HelloTables, Launch, TableFormats, PortCounters, PortStatus, Role, Status, WorkerStatus } from './hello.js';
