// The offload hook API's part of the native boundary (native/dp_offload*.c,
// docs/offload.md), and the fake NIC's (native/fakenic.c), which only the
// ziu-fakenic process uses. Results or -errno, as everywhere in the addon.
import type { DpHandle } from './datapath-native.js';
import type { Errno } from './native.js';

/** A flow key: the engine port a frame comes in on and its 5-tuple (IPv4 in the first 4 bytes of src/dst). */
export interface DpFlowKey {
  inPort: number;
  ipver: 4 | 6;
  proto: number;
  sport: number;
  dport: number;
  src: Uint8Array;
  dst: Uint8Array;
}

/** kind DP_OFFLOAD_FORWARD (out of outPort) or DP_OFFLOAD_DROP (outPort ignored). */
export interface DpFlowAction {
  kind: number;
  outPort: number;
}

/** A flow of the engine's flow table, as dpFlowEntries gives it. */
export interface DpTableFlow {
  key: DpFlowKey;
  action: DpFlowAction;
  /** the flow op's (enforced, never aged) rather than learnt from traffic */
  pinned: boolean;
  /** it comes in on a port with hardware behind it: the module may hold it */
  offloadable: boolean;
  packets: number;
}

/** What the module thread reports back, in order. rc 0 or -errno. */
export type DpOffloadEvent =
  | { kind: 'flow'; op: 'flow_set' | 'flow_del'; rc: number; cookie: bigint }
  | { kind: 'claim'; rc: number; adopt: boolean }
  | { kind: 'reset'; rc: number }
  | { kind: 'reconcile'; rc: number; kept: number; added: number; updated: number; removed: number; failed: number; unmapped: number };

export interface DpOffloadCounter {
  calls: number;
  ok: number;
  /** -EOPNOTSUPP or a NULL callback: the host does it */
  unsupported: number;
  /** -ENOSPC: the module's table is full */
  nospace: number;
  failed: number;
  lastErrno: number;
}

export interface DpOffloadPortStats {
  port: number;
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  drops: number;
}

export interface DpOffloadFlow {
  key: Omit<DpFlowKey, 'ipver'> & { ipver: number };
  kind: number;
  /** -1: a port the module has no binding for */
  outPort: number;
  packets: number;
  bytes: number;
}

export interface DpOffloadStatus {
  module: string;
  adopt: boolean;
  /** 1 while the claim is queued, then 0 or -errno */
  claimRc: number;
  queued: number;
  /** requests refused by a full queue (the host kept that work) */
  queueFull: number;
  eventsLost: number;
  ops: Record<'claim' | 'port_add' | 'port_del' | 'bridge_add' | 'bridge_del' | 'flow_set' | 'flow_del' | 'reconcile' | 'soft_reset' | 'stats_get', DpOffloadCounter>;
  /** times the module's counters were read (every ~100 ms) */
  statsRounds: number;
  ports: DpOffloadPortStats[];
  flows: DpOffloadFlow[];
  flowsRc: number;
}

export interface FnHandle {
  readonly __brand: 'FnHandle';
}

export interface FnVfStats {
  vf: number;
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  drops: number;
  missed: number;
  fromHost: number;
  lost: number;
}

export interface FnFlow {
  vf: number;
  ipver: number;
  proto: number;
  sport: number;
  dport: number;
  src: Uint8Array;
  dst: Uint8Array;
  action: number;
  outVf: number;
  packets: number;
  bytes: number;
  setEpoch: number;
}

export interface FnStatus {
  vfs: number;
  maxFlows: number;
  capacity: number;
  ownerEpoch: number;
  ownerPid: number;
  claims: number;
  adopts: number;
  softResets: number;
  flowSets: number;
  flowDels: number;
  bridgeAdds: number;
  bridgeDels: number;
  portAdds: number;
  portDels: number;
  injectedFailures: number;
  vfStats: FnVfStats[];
  flows: FnFlow[];
  bridge: Array<{ mac: Uint8Array; vf: number }>;
}

/** -1 leaves a value as it is. ops: FN_OP_* bits (1 port, 2 bridge, 4 flow set, 8 flow del), 0 all. */
export interface FnInjection {
  failNext: number;
  failPpm: number;
  slowUs: number;
  ops: number;
  capacity: number;
}

export interface OffloadAddon {
  readonly DP_OFFLOAD_FORWARD: number;
  readonly DP_OFFLOAD_DROP: number;
  /**
   * Register an offload module with the engine: attach (module, fd: e.g. the
   * NIC's shared state; the caller keeps and may close it), start its thread,
   * queue a port_add per port, then (claim 1 fresh, 2 adopt, 0 not yet) the
   * claim and a bridge_add per MAC entry. Fresh: a soft reset follows; adopt:
   * take over from a predecessor, nothing wiped.
   * -ENOENT no such module, -EEXIST one is registered, -EPROTO a foreign NIC.
   */
  dpOffloadRegister(h: DpHandle, module: string, fd: number, instance: string, claim: 0 | 1 | 2, pid: number): 0 | Errno;
  /** Claim a module registered with claim 0 (a standby instance at commit): adopt wipes nothing. */
  dpOffloadClaim(h: DpHandle, adopt: boolean, pid: number): 0 | Errno;
  /** No more hooks; waits for a callback in progress; the module keeps what it holds. -ENOTCONN: none. */
  dpOffloadUnregister(h: DpHandle): 0 | Errno;
  /** Queue a flow set/delete: -ENOTCONN no module, -EAGAIN queue full, -EINVAL a value out of range. */
  dpOffloadFlowSet(h: DpHandle, key: DpFlowKey, action: DpFlowAction, cookie: bigint): 0 | Errno;
  dpOffloadFlowDel(h: DpHandle, key: DpFlowKey, cookie: bigint): 0 | Errno;
  /** Queue a reconcile of the module's flows with exactly these. */
  dpOffloadReconcile(h: DpHandle, flows: Array<{ key: DpFlowKey; action: DpFlowAction; cookie: bigint }>): 0 | Errno;
  dpOffloadSoftReset(h: DpHandle): 0 | Errno;
  /** The flow op's flow in the engine's flow table, its action enforced: -ENODEV no flow table, -EROFS not serving, -ENOSPC no room, -EINVAL. */
  dpFlowPin(h: DpHandle, key: DpFlowKey, action: DpFlowAction): 0 | Errno;
  /** -ENOENT: no such pinned flow. */
  dpFlowUnpin(h: DpHandle, key: DpFlowKey): 0 | Errno;
  /** The flow table's IPv4/IPv6 flows in engine ports (-ENODEV: no flow table). */
  dpFlowEntries(h: DpHandle): DpTableFlow[] | Errno;
  /** Read the module's counters now (else every ~100 ms). */
  dpOffloadRefresh(h: DpHandle): 0 | Errno;
  /** Readable when events wait (then dpOffloadEvents). The engine's own fd, valid until unregister. */
  dpOffloadEventFd(h: DpHandle): number | Errno;
  dpOffloadEvents(h: DpHandle): DpOffloadEvent[] | Errno;
  /** Snapshots only: never calls the module. */
  dpOffloadStatus(h: DpHandle): DpOffloadStatus | Errno;

  readonly FN_MAX_VF: number;
  readonly FN_MAX_FLOWS: number;
  /** The fake NIC: its shared state, vfs VFs (socketpairs) and its forwarding thread. */
  fnCreate(vfs: number, maxFlows: number): FnHandle | Errno;
  fnDestroy(h: FnHandle): 0 | Errno;
  /** The NIC's own fds: send duplicates, never close them. */
  fnFds(h: FnHandle): { shm: number; vm: number[]; host: number[] } | Errno;
  fnInject(h: FnHandle, inj: FnInjection): 0 | Errno;
  fnStatus(h: FnHandle): FnStatus | Errno;
}
