import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { EXIT } from '../errors.js';
import { logger, type Logger } from '../log.js';
import type { MemFileStore } from '../memfile/index.js';
import { acquireLock, Journal, lockHolderAlive, readLastUpgrade, readLock, upgradePaths } from './journal.js';
import { processAlive, stopProcess, toProcessRef, type ProcessRef } from '../process/index.js';
import { retireOld } from './retire.js';
import { Peer, type Hello, type Status } from './peer.js';

export interface RecoverReport {
  result: 'nothing_to_do' | 'committed' | 'rolled_back' | 'failed';
  upgradeId: string | null;
  /** the journal's last phase when the orchestrator stopped */
  phase: string | null;
  /** what recover found and did, in order */
  actions: string[];
  /** the instance serving the datapath afterwards */
  serving: { pid: number; role: string } | null;
  message?: string;
}

/** Exit codes: failed (neither instance can serve) needs the operator. */
export const RECOVER_EXIT: Record<RecoverReport['result'], number> = {
  nothing_to_do: EXIT.ok,
  committed: EXIT.ok,
  rolled_back: EXIT.failed,
  failed: EXIT.operator,
};

/**
 * Finish or undo an upgrade whose orchestrator died, from its journal and
 * from what the two instances say. The instances are the truth about the
 * rings (the baton): if the new one resumed, the upgrade is finished; if it
 * did not, it is undone. Either way exactly one instance is left serving.
 */
export async function recover(o: { control: string; stateDir?: string; store: MemFileStore; log?: Logger }): Promise<RecoverReport> {
  const log = o.log ?? logger('recover');
  const paths = upgradePaths(o.control, o.stateDir);
  const journal = Journal.open(paths.journal);
  if (journal === null) {
    const lock = readLock(paths.lock);
    if (lock !== null && !lockHolderAlive(lock)) fs.rmSync(paths.lock, { force: true });
    const actions = [...(lock ? [`removed the stale lock of pid ${lock.pid}`] : []), ...(await settlePool(o.store, log))];
    log.info({ result: 'nothing_to_do', actions }, 'recover finished');
    return { result: 'nothing_to_do', upgradeId: null, phase: null, actions, serving: null };
  }
  const doc = journal.doc;
  const unlock = acquireLock(paths.lock, { pid: process.pid, upgradeId: `recover-${randomUUID().slice(0, 8)}`, since: new Date().toISOString(), control: o.control }, log);
  // First the pool: a mem file create the orchestrator was killed in is undone here, and reported.
  const actions: string[] = await settlePool(o.store, log);
  const peers: Peer[] = [];
  const report: RecoverReport = { result: 'failed', upgradeId: doc.upgradeId, phase: doc.phase, actions, serving: null };
  try {
    const oldPid = (doc['old'] as { pid?: number } | undefined)?.pid ?? null;
    const newPid = typeof doc['newPid'] === 'number' ? doc['newPid'] : null;
    // By pid and start time where the journal has both: a pid reused since the crash is someone else's.
    const oldProc: number | ProcessRef | null = toProcessRef(doc['old']) ?? oldPid;
    const newProc: number | ProcessRef | null = toProcessRef({ pid: newPid, startTime: doc['newStartTime'] }) ?? newPid;
    const newControl = typeof doc['newControl'] === 'string' ? doc['newControl'] : null;
    const oldPeer = oldProc !== null && oldPid !== null && processAlive(oldProc) ? await peerWithPid('old', o.control, oldPid, peers) : null;
    let newPeer: { peer: Peer; hello: Hello } | null = null;
    if (newProc !== null && newPid !== null && processAlive(newProc)) {
      // Before commit the new instance listens on its standby socket; after it, on the datapath's.
      newPeer = (newControl ? await peerWithPid('new', newControl, newPid, peers) : null) ?? (await peerWithPid('new', o.control, newPid, peers));
    }
    actions.push(`old instance: ${oldPeer ? `pid ${oldPid}, ${oldPeer.hello.role}` : 'gone'}; new instance: ${newPeer ? `pid ${newPid}, ${newPeer.hello.role}` : newPid === null ? 'never started' : 'gone'}`);

    if (newPeer && (newPeer.hello.role === 'resumed' || newPeer.hello.role === 'active')) {
      // The new instance holds the rings: finish the upgrade.
      if (newPeer.hello.role === 'resumed') {
        await newPeer.peer.call('commit');
        actions.push('committed the new instance');
      }
      const retired = oldPeer
        ? await retireOld(oldPeer.peer, oldProc!, o.store, {
            note: (problem) => actions.push(`warning: ${problem}`),
            done: (action) => actions.push(action),
          })
        : { stopped: true };
      report.serving = { pid: newPid!, role: 'active' };
      if (retired.stopped) report.result = 'committed';
      else report.message = `the new instance (pid ${newPid}) serves, but the old one (pid ${oldPid}) could not be stopped; it serves nothing: stop it by hand, then run ziu recover again`;
    } else if (oldPeer) {
      // The new instance never took the rings (or died): undo.
      if (newProc !== null && processAlive(newProc)) {
        await stopProcess(newProc, 2000);
        actions.push(`stopped the new instance (pid ${newPid})`);
      }
      newPeer?.peer.close();
      const r = await oldPeer.peer.call('thaw', { force: true });
      actions.push(r.body.thawed ? 'thawed the old instance' : `the old instance was already ${oldPeer.hello.role === 'active' ? 'forwarding' : 'thawed'}`);
      if (typeof doc['newMem'] === 'string') {
        await o.store.remove(doc['newMem']).then(
          () => actions.push(`removed the new instance's memory (${String(doc['newMem'])})`),
          () => undefined,
        );
      }
      report.result = 'rolled_back';
      report.serving = { pid: oldPid!, role: 'active' };
      oldPeer.peer.close();
    } else {
      report.message = `neither instance can serve the datapath: the old one (pid ${oldPid ?? '?'}) is gone and the new one ${newPeer ? `is ${newPeer.hello.role}` : 'is gone'}; start a datapath on ${o.control} by hand`;
      newPeer?.peer.close();
    }
  } catch (err) {
    report.message = `recover stopped: ${(err as Error).message}`;
  } finally {
    for (const p of peers) p.close();
    if (report.result !== 'failed') journal.finish({ ...doc, recovered: report });
    unlock();
  }
  log.info({ result: report.result, actions }, 'recover finished');
  return report;
}

/**
 * Give back the hugepages that creates and removes killed half-way left
 * raised (their owners are gone), and debt whose holders are gone: an
 * orchestrator SIGKILLed while it prepared memory leaves both. Never throws:
 * a failure is an action that says so.
 */
async function settlePool(store: MemFileStore, log: Logger): Promise<string[]> {
  try {
    return (await store.settle({ what: 'recover', orphans: true, wait: true })).settlements.map((s) => s.text);
  } catch (err) {
    log.error({ err }, 'could not settle the hugepage pool');
    return [`warning: could not settle the hugepage pool: ${(err as Error).message}`];
  }
}

/** A peer at path whose hello names pid, or null (gone, or someone else there). */
async function peerWithPid(label: string, path: string, pid: number, opened?: Peer[]): Promise<{ peer: Peer; hello: Hello } | null> {
  let peer: Peer;
  try {
    peer = await Peer.connect(label, path);
  } catch {
    return null;
  }
  try {
    const hello = await peer.hello();
    if (hello.pid === pid) {
      opened?.push(peer);
      return { peer, hello };
    }
  } catch {
    // not answering: treat as unusable
  }
  peer.close();
  return null;
}

export interface DatapathOverview {
  control: string;
  hello: Hello;
  status: Status;
  lastUpgrade: Record<string, unknown> | null;
  /** an upgrade in progress or unfinished: its id and phase */
  pending: { upgradeId: string; phase: string; orchestratorAlive: boolean } | null;
}

/** What `ziu status` shows: the instance on a control socket, its ports, the last and any unfinished upgrade. */
export async function overview(control: string, stateDir?: string): Promise<DatapathOverview> {
  const peer = await Peer.connect('running', control);
  try {
    const hello = await peer.hello();
    const status = await peer.status();
    const paths = upgradePaths(control, stateDir);
    const j = Journal.read(paths.journal);
    const lock = readLock(paths.lock);
    return {
      control,
      hello,
      status,
      lastUpgrade: readLastUpgrade(control, stateDir),
      pending: j ? { upgradeId: j.upgradeId, phase: j.phase, orchestratorAlive: lock !== null && lockHolderAlive(lock) } : null,
    };
  } finally {
    peer.close();
  }
}

