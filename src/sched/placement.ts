/**
 * Where packet threads run: CPU affinity and SCHED_FIFO, as vswitches are
 * deployed (forwarding threads on chosen cores, often real-time; VMs and the
 * control plane elsewhere). Used for the datapath's worker, the probe's loops
 * (the VM's vCPUs) and to keep the orchestrator and a starting instance off
 * the packet cores. Threads are placed by tid (native/sched.c) and read back
 * from the kernel, so what a report says is what the kernel applied.
 */
import fs from 'node:fs';
import os from 'node:os';
import { sysError, UsageError } from '../errors.js';
import { check, native } from '../native/index.js';

/** What an operator asked for; null fields leave the thread as it is. */
export interface Placement {
  /** CPUs the thread may run on */
  cpus: number[] | null;
  /** SCHED_FIFO priority 1..99; null: SCHED_OTHER */
  priority: number | null;
}

export const NO_PLACEMENT: Placement = { cpus: null, priority: null };

export type Policy = 'other' | 'fifo' | 'rr' | 'batch' | 'idle';

/** What the kernel says a thread has. */
export interface Applied {
  tid: number;
  policy: Policy;
  priority: number;
  cpus: number[];
}

/** The outcome of placing a thread: what was asked, what the kernel has, and why they differ. */
export interface PlacementReport {
  requested: Placement;
  applied: Applied;
  /** null when everything asked was applied; else what was not, and why (e.g. no CAP_SYS_NICE) */
  fallback: string | null;
}

const POLICIES: Record<number, Policy> = { 0: 'other', 1: 'fifo', 2: 'rr', 3: 'batch', 5: 'idle' };

/** The CPUs this machine has online, from sysfs (a list like "0-3,6"). */
export function onlineCpus(): number[] {
  try {
    return expandCpuList(fs.readFileSync('/sys/devices/system/cpu/online', 'utf8').trim());
  } catch {
    return Array.from({ length: os.availableParallelism() }, (_, i) => i);
  }
}

function expandCpuList(text: string): number[] {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new Error(`bad CPU list '${text}'`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a || b - a > 4096) throw new Error(`bad CPU range '${part}'`);
    for (let c = a; c <= b; c++) out.add(c);
  }
  return [...out].sort((x, y) => x - y);
}

/** "1", "0-1", "1,3": CPUs that exist here, or a UsageError naming the flag. */
export function parseCpuList(text: string, flag: string, online: readonly number[] = onlineCpus()): number[] {
  let cpus: number[];
  try {
    cpus = expandCpuList(text);
  } catch {
    throw new UsageError(`${flag} '${text}': use a CPU list such as 1, 0-1 or 1,3 (online: ${formatCpuList(online)})`);
  }
  const missing = cpus.filter((c) => !online.includes(c));
  if (missing.length > 0) {
    throw new UsageError(`${flag} '${text}': CPU ${missing.join(', ')} does not exist here (online: ${formatCpuList(online)})`);
  }
  return cpus;
}

/** A SCHED_FIFO priority, 1..99. */
export function parsePriority(text: string | number, flag: string): number {
  const n = typeof text === 'number' ? text : /^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN;
  const max = native.SCHED_FIFO_MAX;
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${flag} '${text}': a SCHED_FIFO priority is a whole number from 1 to ${max}`);
  return n;
}

export function formatCpuList(cpus: readonly number[]): string {
  const sorted = [...cpus].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The scheduling the kernel has for one thread. */
export function readPlacement(tid: number): Applied {
  const r = check(native.schedGet(tid), 'sched_getscheduler', { fd: tid });
  return { tid, policy: POLICIES[r.policy] ?? 'other', priority: r.priority, cpus: r.cpus };
}

/**
 * Place one thread. Affinity first, then policy; a policy the kernel refuses
 * for want of privilege (EPERM) is a fallback said in the report, not a
 * failure: the thread keeps SCHED_OTHER on the CPUs it got. Anything else
 * (EINVAL: no such CPU) throws.
 */
export function placeThread(tid: number, want: Placement, what: string): PlacementReport {
  let fallback: string | null = null;
  if (want.cpus !== null) {
    const r = native.schedSet(tid, want.cpus, -1, 0);
    if (r < 0) {
      const cause = sysError(r, 'sched_setaffinity');
      throw new UsageError(`${what}: cannot pin to CPUs ${formatCpuList(want.cpus)}: ${cause.message}`, { cause });
    }
  }
  if (want.priority !== null) {
    const r = native.schedSet(tid, [], 1, want.priority);
    if (r === -1 /* EPERM */) fallback = `SCHED_FIFO ${want.priority} refused (no CAP_SYS_NICE or RLIMIT_RTPRIO): running SCHED_OTHER`;
    else if (r < 0) {
      const cause = sysError(r, 'sched_setscheduler');
      throw new UsageError(`${what}: cannot set SCHED_FIFO ${want.priority}: ${cause.message}`, { cause });
    }
  }
  return { requested: want, applied: readPlacement(tid), fallback };
}

/** Every thread of this process, by tid. */
export function ownThreads(): number[] {
  return fs
    .readdirSync('/proc/self/task')
    .map(Number)
    .filter((t) => Number.isInteger(t) && t > 0);
}

/**
 * Keep this process's threads (all but `except`) off the given CPUs, where
 * others remain: the control plane never competes with a packet thread for
 * its core. Threads created later inherit the mask of the thread that made
 * them. Returns the CPUs the rest now runs on, or null when nothing changed.
 */
export function keepOff(cpus: readonly number[], except: readonly number[] = []): number[] | null {
  const rest = onlineCpus().filter((c) => !cpus.includes(c));
  if (cpus.length === 0 || rest.length === 0) return null;
  for (const tid of ownThreads()) {
    if (except.includes(tid)) continue;
    // A thread may exit between the listing and the call: ESRCH is fine.
    native.schedSet(tid, rest, -1, 0);
  }
  return rest;
}

/** A placement from a message (JSON): checked like the flags, or a ZiuError naming where it came from. */
export function checkPlacement(v: unknown, where: string): Placement {
  if (typeof v !== 'object' || v === null) throw new UsageError(`${where}: a placement is {cpus, priority}`);
  const o = v as Record<string, unknown>;
  const cpus = o['cpus'];
  const priority = o['priority'];
  if (cpus !== null && (!Array.isArray(cpus) || cpus.length === 0 || !cpus.every((c) => Number.isInteger(c)))) {
    throw new UsageError(`${where}: cpus must be null or a list of CPU numbers`);
  }
  if (priority !== null && typeof priority !== 'number') throw new UsageError(`${where}: priority must be null or 1..${native.SCHED_FIFO_MAX}`);
  return {
    cpus: cpus === null ? null : parseCpuList((cpus as number[]).join(','), `${where}: cpus`),
    priority: priority === null ? null : parsePriority(priority, `${where}: priority`),
  };
}

/** True when a placement asks for anything. */
export function isPlaced(p: Placement): boolean {
  return p.cpus !== null || p.priority !== null;
}

/** The one-line form of a placement: "cpus 1, SCHED_FIFO 50". */
export function describePlacement(p: Placement | Applied): string {
  const parts: string[] = [];
  if ('policy' in p) {
    parts.push(`cpus ${formatCpuList(p.cpus)}`, p.policy === 'fifo' || p.policy === 'rr' ? `SCHED_${p.policy.toUpperCase()} ${p.priority}` : `SCHED_${p.policy.toUpperCase()}`);
  } else {
    parts.push(p.cpus === null ? 'any cpu' : `cpus ${formatCpuList(p.cpus)}`, p.priority === null ? 'SCHED_OTHER' : `SCHED_FIFO ${p.priority}`);
  }
  return parts.join(', ');
}

/** The priorities of the deployment ziu bench and ziu demo use by default (docs/datapath.md: why). */
export const DEFAULT_WORKER_PRIORITY = 50;
export const DEFAULT_VM_PRIORITY = 40;
/** VM frames per second per CPU that real-time VM threads may carry and still leave the CPU room (a probe costs 10-25 us of CPU a frame on a virtualised host) */
export const RT_VM_BUDGET_PPS = 20_000;

/**
 * As vswitches are deployed: the packet worker alone on the last CPU at
 * SCHED_FIFO 50, the VMs' threads (and everything else) on the other CPUs,
 * at SCHED_FIFO 40 while there is a CPU per VM, as pinned vCPUs are. More VMs
 * than CPUs, or VM traffic beyond RT_VM_BUDGET_PPS per CPU, are left to the
 * scheduler on every CPU: real-time VM threads that fill their CPUs would
 * keep every ordinary thread off them, a new instance's start-up among them,
 * and so would ordinary ones squeezed onto the CPUs the worker leaves
 * (measured on 2 cores: 4 pairs x 10 kpps, or 1 pair x 100 kpps, then
 * outlast the 10 s ready timeout). Only as root and with two CPUs or more; otherwise no
 * placement, and `note` says why.
 */
export function autoPlacement(vms = 1, ratePerVm = 0, cpus: readonly number[] = onlineCpus()): { worker: Placement; vm: Placement; note: string | null } {
  if (process.getuid?.() !== 0) return { worker: NO_PLACEMENT, vm: NO_PLACEMENT, note: 'not root: no CPU pinning or SCHED_FIFO for the packet threads' };
  if (cpus.length < 2) return { worker: NO_PLACEMENT, vm: NO_PLACEMENT, note: 'one CPU: the packet worker and the VMs share it, no placement' };
  const last = cpus.at(-1)!;
  const vmCpus = cpus.filter((c) => c !== last);
  return {
    worker: { cpus: [last], priority: DEFAULT_WORKER_PRIORITY },
    vm: vms <= vmCpus.length && vms * ratePerVm <= RT_VM_BUDGET_PPS * vmCpus.length ? { cpus: vmCpus, priority: DEFAULT_VM_PRIORITY } : NO_PLACEMENT,
    note: null,
  };
}
