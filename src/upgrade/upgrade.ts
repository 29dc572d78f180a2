import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { hasCode, relayedCode, ZiuError } from '../errors.js';
import { DEAD_MAN_MS, handoverInfoCodec, type HandoverInfo, type ReplyOf } from '../handover/messages/index.js';
import { isStateFormat, type StateFormat } from '../handover/state.js';
import { plan, readStatus, formatBytes, HUGETLBFS_MAGIC, PAGE_2M } from '../hugepages/index.js';
import { logger, type Logger } from '../log.js';
import type { MemFileStore } from '../memfile/index.js';
import { closeFds } from '../native/fds.js';
import { acquireLock, Journal, lockHolderAlive, readLock, upgradePaths } from './journal.js';
import { launchDetached, processAlive, processRef, stopProcess, waitGone, type ProcessRef } from '../process/index.js';
import { Peer, type Hello, type Status } from './peer.js';
import { checkOwnMemory, newCommand, type NewCommand } from './reuse.js';
import { retireOld } from './retire.js';
import type { MemoryPlan, Phase, UpgradeReport } from './report.js';
import { checkHealth, movingPorts, verifyNew } from './verify.js';
import { keepOff } from '../sched/placement.js';

export interface UpgradeOptions {
  /** the running (old) instance's control socket */
  control: string;
  /**
   * argv of the new datapath; the orchestrator adds --mem-file when it creates
   * the memory. A binary alone (no options) takes the old instance's flags (reuse.ts).
   */
  newCommand: string[];
  /** create and prepopulate this many bytes of memory for the new instance */
  mem?: number;
  pageSize?: number;
  verifyMs?: number;
  readyTimeoutMs?: number;
  deadManMs?: number;
  healthUrl?: string;
  stateDir?: string;
  store: MemFileStore;
  log?: Logger;
  upgradeId?: string;
  /** preflight only: report 'would-upgrade' or the refusal, change nothing (no process, mem file, pool change, lock or journal) */
  dryRun?: boolean;
  /** change nothing and report 'up-to-date' when the running instance runs the datapath and version the new command reports */
  skipIfCurrent?: boolean;
}

export const DEFAULTS: { verifyMs: number; readyTimeoutMs: number; deadManMs: number } = { verifyMs: 300, readyTimeoutMs: 10_000, deadManMs: DEAD_MAN_MS.default };

/** Errors of a control connection whose other end went away. */
/** A new instance that still answers gives the rings back within microseconds; this only bounds a hung one. */
const HANDBACK_TIMEOUT_MS = 1000;
const CONNECTION_LOST = new Set(['ERR_ZIU_PEER_CLOSED', 'ERR_ZIU_SOCKET_CLOSED', 'ECONNRESET', 'EPIPE']);

/** Thrown by preflight: nothing was changed. */
class Refusal extends ZiuError {}

/**
 * Test-only: ZIU_TEST_KILL_ORCHESTRATOR=<point> kills this process with
 * SIGKILL at that point, to show that the datapaths and `ziu recover` cope.
 */
function crashPoint(point: 'transfer' | 'freeze' | 'resume', oldPid?: number): void {
  if (process.env['ZIU_TEST_KILL_ORCHESTRATOR'] === point) process.kill(process.pid, 'SIGKILL');
  // ZIU_TEST_KILL_OLD=<point>: the old instance dies there instead (a crash of the datapath itself).
  if (process.env['ZIU_TEST_KILL_OLD'] === point && oldPid !== undefined) process.kill(oldPid, 'SIGKILL');
}

/**
 * One upgrade, phase by phase (docs/design.md): every phase timed and journaled;
 * any failure before commit rolls back to the old instance.
 */
export class Upgrade {
  readonly id: string;
  readonly o: UpgradeOptions & typeof DEFAULTS;
  readonly log: Logger;
  #report: UpgradeReport;
  #t0 = performance.now();
  #phase: Phase = 'preflight';
  #journal: Journal | null = null;
  #unlock: (() => void) | null = null;
  #old: Peer | null = null;
  #new: Peer | null = null;
  #oldHello: Hello | null = null;
  #newPid: number | null = null;
  /** the new instance as pid and start time: rollback never signals a pid that was reused */
  #newRef: ProcessRef | null = null;
  #oldRef: ProcessRef | null = null;
  #memInstance: string | null = null;
  #exported = false;
  /** the new instance holds every device (import succeeded) */
  #imported = false;
  #resumeSent = false;
  #format: StateFormat = 1;
  #paths: ReturnType<typeof upgradePaths>;
  /** the new instance's command line, resolved in preflight */
  #cmd: NewCommand | null = null;
  /** memory ziu creates for it: --mem, or as much as the old instance has when its configuration is reused */
  #mem: { bytes: number; pageSize: number } | null = null;
  /** the new instance committed but could not tell its service manager it is the main process now */
  #notMain = false;
  /** the new flow table format, when it differs from the old instance's (its table is converted) */
  #flowTo: number | null = null;

  constructor(o: UpgradeOptions) {
    this.o = { ...DEFAULTS, ...o };
    this.id = o.upgradeId ?? randomUUID().slice(0, 8);
    this.log = (o.log ?? logger('upgrade')).child({ upgradeId: this.id });
    this.#paths = upgradePaths(o.control, o.stateDir);
    this.#report = {
      result: 'failed',
      upgradeId: this.id,
      switchoverUs: null,
      phases: {},
      ports: [],
      old: null,
      new: null,
      stateFormat: null,
      deadManMs: this.o.deadManMs,
      memory: null,
      warnings: [],
      totalMs: 0,
    };
  }

  async run(): Promise<UpgradeReport> {
    let ending: 'up-to-date' | 'would-upgrade' | null;
    try {
      ending = await this.#step('preflight', () => this.#preflight());
    } catch (err) {
      return this.#refused(err);
    }
    if (ending !== null) return this.#finish(ending);
    let newArgv = this.o.newCommand;
    let oldStatus: Status | null = null;
    try {
      // The first of two samples of the old instance's traffic, a whole start-up apart: slow
      // ports (a guest's pings) must show up as moving too, or verify would let a new
      // instance that forwards nothing through.
      const early = { status: await this.#old!.status(), at: performance.now() };
      newArgv = await this.#step('reserve', () => this.#reserve());
      await this.#step('start', () => this.#start(newArgv));
      await this.#step('ready', () => this.#ready());
      oldStatus = await this.#step('transfer', () => this.#transfer());
      const atFreeze = await this.#old!.status();
      const moving = movingPorts(early.status, atFreeze, { windowMs: performance.now() - early.at, verifyMs: this.o.verifyMs });
      await this.#switchover();
      await this.#step('verify', async () => {
        this.#report.ports = await verifyNew(this.#new!, atFreeze, moving, this.o.verifyMs);
        if (this.#report.new) this.#report.new.worker = (await this.#new!.status()).worker?.applied ?? null;
        if (this.o.healthUrl) await checkHealth(this.o.healthUrl);
      });
      await this.#step('commit', () => this.#commitNew());
      await this.#noteOffload();
    } catch (err) {
      if (await this.#oldDied(err)) return this.#succeedOrphan(err, oldStatus);
      return this.#rollback(err);
    }
    return this.#retireOld();
  }

  /** A new instance with an offload module: how it took the NIC over, for the report. Never fails the upgrade. */
  async #noteOffload(): Promise<void> {
    try {
      const o = (await this.#new!.status())['offload'] as Record<string, unknown> | undefined;
      if (o) this.#report.offload = { module: o['module'], registration: o['registration'], adopted: o['adopted'], softResets: o['softResets'], reconcile: o['reconcile'], error: o['error'] };
    } catch {
      // the report says nothing about offload then
    }
  }

  // ---- the old instance died after it exported ----

  /** True when the new instance holds every device and the old instance is gone (not merely unreachable). */
  async #oldDied(err: unknown): Promise<boolean> {
    if (!this.#imported || this.#oldRef === null || this.#new === null) return false;
    if (!processAlive(this.#oldRef)) return true;
    // A connection lost at the moment the old instance dies may be seen a little before the
    // kernel has it gone: wait briefly then, and never otherwise (a rollback must not be delayed).
    return CONNECTION_LOST.has((err as { code?: string }).code ?? '') && waitGone(this.#oldRef, 100);
  }

  /**
   * The old instance died after export. A rollback has nothing to go back
   * to, and stopping the new instance, which holds every vhost-user socket,
   * memory region and ring, would disconnect every VM. So the new instance
   * takes over as the predecessor would have handed over: resume (the baton
   * may still say active: nobody froze it), verify, commit.
   */
  async #succeedOrphan(cause: unknown, oldStatus: Status | null): Promise<UpgradeReport> {
    const oldPid = this.#oldHello!.pid;
    const why = (cause as Error).message ?? String(cause);
    const note = `the old instance (pid ${oldPid}) died after it exported its devices (${why}); the new instance, which holds every device, took over instead of a rollback`;
    this.#report.warnings.push(note);
    this.log.warn({ oldPid, err: why }, 'old instance died after export: the new instance takes over');
    this.#journal?.update({ oldDied: note });
    try {
      this.#old?.close();
      this.#old = null;
      this.#resumeSent = true;
      const r = await this.#step('resume', () => this.#new!.call('resume', { changed: null, fds: [], predecessorGone: true }), { journal: false });
      this.#journal!.update({ phase: 'resume' });
      if (this.#newPid !== null) setNice(this.#newPid, getNice(process.pid) ?? 0);
      this.#report.switchoverUs = null;
      this.log.info({ thawedNs: r.body.thawedNs }, 'new instance serves after the old one died');
      await this.#step('verify', async () => {
        const now = await this.#new!.status();
        this.#report.ports = await verifyNew(this.#new!, oldStatus ?? now, new Set(), this.o.verifyMs);
      });
      await this.#step('commit', () => this.#commitNew());
    } catch (err) {
      this.#report.message = `${note}, but it could not take over: ${(err as Error).message}. It still holds every device and was left running; run: ziu recover --control ${this.o.control}`;
      return this.#finish('failed', { keepJournal: true });
    }
    // Its memory files: the ones the old instance said it had, if ziu made them.
    await retireOld(null, this.#oldRef ?? oldPid, this.o.store, {
      note: (msg) => this.#report.warnings.push(msg),
      done: () => undefined,
    }, oldStatus?.memFiles.map((m) => m.path) ?? []);
    return this.#finish('committed');
  }

  /** Run a phase: journaled before it starts, timed, and named in any error. */
  async #step<T>(name: Phase, fn: () => Promise<T>, opts: { journal?: boolean } = {}): Promise<T> {
    this.#phase = name;
    if (opts.journal !== false) {
      this.#journal?.update({ phase: name, phases: [...this.#journal.doc.phases, { name, startedAt: new Date().toISOString() }] });
    }
    const t = performance.now();
    try {
      return await fn();
    } finally {
      this.#report.phases[name] = round(performance.now() - t, 3);
    }
  }

  // ---- preflight: nothing changes until every check passed ----

  /**
   * Every check before the first change. Returns how the upgrade ends
   * without changing anything (up to date, or a dry run), else null with the
   * lock held and the journal started.
   */
  async #preflight(): Promise<'up-to-date' | 'would-upgrade' | null> {
    const o = this.o;
    if (o.newCommand.length === 0) throw new Refusal('ERR_ZIU_USAGE', '--new: the new datapath command line is empty');
    try {
      this.#old = await Peer.connect('old', o.control);
      this.#oldHello = await this.#old.hello();
    } catch (err) {
      throw refusal(err);
    }
    const h = this.#oldHello;
    this.#report.old = { pid: h.pid, version: h.version, instance: h.instance, control: o.control };
    this.#oldRef = processRef(h.pid);
    if (h.role !== 'active') {
      throw new Refusal('ERR_ZIU_HANDOVER_STATE', `the old instance (pid ${h.pid}) is ${h.role}, not active: another upgrade is under way or unfinished (see 'ziu status', 'ziu recover')`);
    }
    // Off the packet cores: we, and all we start (it inherits our mask: --handover-info,
    // the new instance while its runtime starts), never compete with the old worker for its CPU.
    const packetCpus = h.worker?.cpus ?? null;
    const ourCpus = packetCpus === null ? null : keepOff(packetCpus);
    if (ourCpus !== null) this.log.info({ packetCpus, ourCpus }, 'orchestrator and new instance kept off the packet CPUs');
    let oldMemFiles: Status['memFiles'];
    try {
      this.#cmd = newCommand(o.newCommand, h, { mem: o.mem !== undefined });
      this.#report.newCommand = this.#cmd;
      oldMemFiles = (await this.#old.status()).memFiles;
      checkOwnMemory(this.#cmd, oldMemFiles.map((m) => m.path));
    } catch (err) {
      throw refusal(err);
    }
    const cmd = this.#cmd;
    if (o.mem !== undefined) this.#mem = { bytes: o.mem, pageSize: o.pageSize ?? PAGE_2M };
    else if (cmd.memory === 'same-as-old') this.#mem = await this.#sameMemoryAs(oldMemFiles);
    const info = await newCommandInfo(cmd.argv, cmd.cwd);
    // Datapath and version, as both say them: a rebuild that kept its version string needs a forced upgrade.
    const upToDate = info.datapath === h.datapath && info.version === h.version;
    this.#report.preflight = { target: info, upToDate, memory: null };
    if (upToDate && o.skipIfCurrent) {
      this.log.info({ version: h.version }, 'the running instance already runs this version: nothing to do');
      return 'up-to-date';
    }
    const formats = h.stateFormats.export.filter((f): f is StateFormat => info.stateFormats.import.includes(f) && isStateFormat(f));
    if (formats.length === 0) {
      throw new Refusal(
        'ERR_ZIU_STATE_FORMAT',
        `incompatible state formats: the old instance (${h.version}) exports ${h.stateFormats.export.join(', ')}, the new datapath (${info.version}) imports ${info.stateFormats.import.join(', ')}`,
      );
    }
    if (info.protocol !== h.protocol) {
      throw new Refusal('ERR_ZIU_PROTOCOL', `handover protocol ${h.protocol} on the old instance, ${info.protocol} on the new datapath`);
    }
    this.#format = formats.reduce((a, b) => (b > a ? b : a));
    this.#report.stateFormat = this.#format;
    this.#checkTables(h, info);
    if (this.#mem !== null) this.#report.preflight.memory = await this.#checkMemory(this.#mem.bytes, this.#mem.pageSize);
    if (o.dryRun) {
      this.#checkUnlocked();
      return 'would-upgrade';
    }
    try {
      this.#unlock = acquireLock(this.#paths.lock, { pid: process.pid, upgradeId: this.id, since: new Date().toISOString(), control: o.control }, this.log);
      this.#journal = Journal.create(this.#paths.journal, {
        version: 1,
        upgradeId: this.id,
        control: o.control,
        phase: 'preflight',
        phases: [],
        old: { ...this.#report.old, startTime: this.#oldRef?.startTime ?? null },
        deadManMs: o.deadManMs,
      });
    } catch (err) {
      this.#unlock?.();
      this.#unlock = null;
      throw refusal(err);
    }
    return null;
  }

  /** Reused configuration, no --mem: as many bytes as the old instance's mem files, on its page size. */
  async #sameMemoryAs(files: Status['memFiles']): Promise<{ bytes: number; pageSize: number }> {
    const first = files[0];
    if (first === undefined) {
      throw new Refusal('ERR_ZIU_USAGE', `the old instance (pid ${this.#oldHello!.pid}) reports no mem files, so the new one's size is unknown: give --mem <size>`);
    }
    let pageSize = PAGE_2M;
    try {
      const st = await this.o.store.host.statfs(first.path);
      if (st.type === HUGETLBFS_MAGIC) pageSize = st.bsize;
    } catch {
      // not ours to stat: the default page size
    }
    return { bytes: files.reduce((n, f) => n + f.bytes, 0), pageSize };
  }

  /** A dry run's word for the lock and the journal: what taking them would say, without taking them. */
  #checkUnlocked(): void {
    try {
      const holder = readLock(this.#paths.lock);
      if (holder !== null && lockHolderAlive(holder)) {
        throw new Refusal('ERR_ZIU_LOCKED', `another upgrade of ${holder.control} is running: pid ${holder.pid}, upgrade ${holder.upgradeId}, since ${holder.since} (lock ${this.#paths.lock})`);
      }
      const unfinished = Journal.read(this.#paths.journal);
      if (unfinished !== null) {
        throw new Refusal(
          'ERR_ZIU_JOURNAL_EXISTS',
          `journal ${this.#paths.journal} of an unfinished upgrade (${unfinished.upgradeId}, phase ${unfinished.phase}) is in the way; run 'ziu recover' first`,
        );
      }
    } catch (err) {
      throw refusal(err);
    }
  }

  /**
   * The new datapath must read the old instance's table formats (else it
   * could not take the tables: refused here, nothing changed). A different
   * flow format it serves means a conversion: a table file of its own.
   */
  #checkTables(h: Hello, info: HandoverInfo): void {
    const t = h.tables ?? null;
    if (t === null) {
      this.#report.tables = null;
      return;
    }
    const f = info.tableFormats;
    if (f === undefined) {
      this.#report.warnings.push(`the new datapath (${info.version}) does not say which table formats it reads: it will not take the old instance's tables and starts with empty ones`);
      this.#report.tables = null;
      return;
    }
    for (const kind of ['bridge', 'flow'] as const) {
      if (!f[kind].read.includes(t[kind].format)) {
        throw new Refusal(
          'ERR_ZIU_TABLE_FORMAT',
          `the old instance's ${kind} table${t[kind].path ? ` (${t[kind].path})` : ''} is in format ${t[kind].format}; the new datapath (${info.version}) reads ${kind} formats ${f[kind].read.join(', ')}`,
        );
      }
    }
    const converted = f.flow.write !== t.flow.format;
    if (converted) this.#flowTo = f.flow.write;
    this.#report.tables = { bridge: 'adopted', flow: converted ? 'converted' : 'adopted', flowFormat: { old: t.flow.format, new: f.flow.write }, path: converted ? null : t.flow.path };
  }

  /** Whether --mem fits (a refusal if not), and how: what a dry run reports. */
  async #checkMemory(bytes: number, pageSize: number): Promise<MemoryPlan> {
    const store = this.o.store;
    const { backing } = await store.chooseBacking(pageSize);
    if (backing === 'tmpfs') {
      // tmpfs memory is the host's page cache: it must fit in what the mount has left.
      let dir = store.tmpfsDir;
      while (!fs.existsSync(dir)) dir = path.dirname(dir);
      const st = fs.statfsSync(dir);
      const avail = st.bavail * st.bsize;
      if (bytes > avail) {
        throw new Refusal('ERR_ZIU_MEM_SHORT', `--mem ${formatBytes(bytes)} does not fit: ${dir} (tmpfs) has ${formatBytes(avail)} free`);
      }
      return { bytes, pageSize, backing, verdict: 'fits-now', rows: [] };
    }
    if (backing !== 'hugetlbfs') return { bytes, pageSize, backing, verdict: 'fits-now', rows: [] };
    const p = plan(await readStatus(store.host), [{ pageSize, bytes }]);
    if (p.verdict === 'does-not-fit') {
      const row = p.rows.find((r) => r.verdict === 'does-not-fit');
      throw new Refusal('ERR_ZIU_HUGEPAGES_SHORT', `--mem ${formatBytes(bytes)} does not fit beside the old instance: ${row?.reason ?? 'not enough hugepages'}`);
    }
    return { bytes, pageSize, backing, verdict: p.verdict, rows: p.rows };
  }

  // ---- reserve, start, ready: the new instance comes up beside the old ----

  async #reserve(): Promise<string[]> {
    const o = this.o;
    let argv = this.#cmd!.argv;
    if (this.#mem !== null) {
      this.#memInstance = `upgrade-${this.id}`;
      this.#journal!.update({ newMem: this.#memInstance });
      const m = await o.store.create({ instance: this.#memInstance, role: 'packets', size: this.#mem.bytes, pageSize: this.#mem.pageSize, backing: 'auto' });
      this.#report.memory = { instance: this.#memInstance, path: m.path!, bytes: m.bytes, pageSize: m.pageSize, backing: m.backing, prepopulateMs: round(m.prepopulateMs, 3), notes: m.notes };
      argv = [...argv, '--mem-file', m.path!];
    }
    // Another flow format: the new instance converts the old table into one of its own, a file
    // of the same size made here beside its memory (hugepages, or tmpfs as mem files fall back).
    // (A reused configuration names the old table: this --flow-table, given last, is the one taken.)
    const old = this.#oldHello!.tables ?? null;
    if (this.#flowTo !== null && old !== null && old.flow.path !== null) {
      this.#memInstance ??= `upgrade-${this.id}`;
      this.#journal!.update({ newMem: this.#memInstance });
      const t = await o.store.create({ instance: this.#memInstance, role: 'flow', size: old.flow.bytes, pageSize: this.#mem?.pageSize ?? o.pageSize ?? PAGE_2M, backing: 'auto' });
      if (this.#report.tables) this.#report.tables.path = t.path;
      argv = [...argv, '--flow-table', t.path!];
    }
    return argv;
  }

  get #standbyControl(): string {
    return path.join(this.#paths.dir, `${this.id}.control.sock`);
  }

  async #start(argv: string[]): Promise<void> {
    const dir = this.#paths.dir;
    const service = this.#cmd!.notifySocket;
    const launched = await launchDetached({
      argv,
      cwd: this.#cmd!.cwd,
      // Its NOTIFY_SOCKET is ours until it commits; from then on it reports to the service manager.
      env: { ZIU_HANDOVER: 'standby', ZIU_CONTROL_PATH: this.#standbyControl, ZIU_UPGRADE_ID: this.id, ...(service ? { ZIU_SERVICE_NOTIFY_SOCKET: service } : {}) },
      readyTimeoutMs: this.o.readyTimeoutMs,
      logFile: path.join(dir, `${this.id}.new.log`),
      notifyPath: path.join(dir, `${this.id}.notify.sock`),
      log: this.log,
      // The pid goes in the journal as soon as it is known: recover must find it even if we die now.
      onSpawn: (pid: number) => {
        this.#newPid = pid;
        this.#newRef = processRef(pid);
        // Starting a runtime is CPU-heavy; on a small host it must not starve the instance that forwards.
        setNice(pid, BACKGROUND_NICE);
        this.#journal!.update({ newPid: pid, newStartTime: this.#newRef?.startTime ?? null, newControl: this.#standbyControl });
      },
    });
    this.#newPid = launched.pid;
  }

  async #ready(): Promise<void> {
    this.#new = await Peer.connect('new', this.#standbyControl);
    const h = await this.#new.hello();
    this.#report.new = { pid: h.pid, version: h.version, instance: h.instance, control: h.control };
    if (h.role !== 'standby') throw new ZiuError('ERR_ZIU_HANDOVER_STATE', `the new instance (pid ${h.pid}) is ${h.role}, not standby`);
    if (!h.stateFormats.import.includes(this.#format)) {
      throw new ZiuError('ERR_ZIU_STATE_FORMAT', `the new instance imports ${h.stateFormats.import.join(', ')}, not state format ${this.#format} as --handover-info said`);
    }
  }

  // ---- transfer, freeze, resume: the handover ----

  async #transfer(): Promise<Status> {
    const before = await this.#old!.status();
    if (this.#report.old) this.#report.old.worker = before.worker?.applied ?? null;
    const x = await this.#old!.call('export', { format: this.#format, upgradeId: this.id });
    this.#exported = true;
    try {
      // The old worker's placement travels with the state: the new worker takes it before the rings.
      const worker = this.#oldHello!.worker;
      await this.#new!.call('import', { format: x.body.format, state: x.body.state, tables: x.body.tables ?? null, fds: x.body.fds, upgradeId: this.id, ...(worker ? { worker } : {}) }, x.fds);
      this.#imported = true;
    } finally {
      closeFds(x.fds);
    }
    crashPoint('transfer', this.#oldHello!.pid);
    return before;
  }

  /** freeze -> resume, back to back: the only part on the traffic path. */
  async #switchover(): Promise<void> {
    // The new instance's worker may take the rings the moment the old one
    // freezes (direct takeover): from here on a rollback must stop it first.
    this.#resumeSent = true;
    // It may take the rings the moment the old one freezes, and must then serve and answer within the
    // dead-man bound: from here on the priority the old instance has (its start-up is behind it).
    if (this.#newPid !== null) setNice(this.#newPid, getNice(this.#oldHello!.pid) ?? 0);
    const frozen = await this.#step('freeze', () => this.#old!.call('freeze', { deadManMs: this.o.deadManMs }));
    crashPoint('freeze');
    let resumed;
    try {
      resumed = await this.#step('resume', () => {
        const changed = frozen.body.changed;
        return this.#new!.call('resume', { changed, fds: changed?.fds ?? [] }, frozen.fds);
        // Not journaled before: an fsync here would sit in the traffic gap. The
        // journal says 'freeze', and recover asks the instances which side holds the rings.
      }, { journal: false });
    } finally {
      closeFds(frozen.fds);
    }
    const { firstPassNs: first, thawedNs: thawed, takenOver } = resumed.body;
    const froze = frozen.body.frozenNs;
    this.#report.switchoverUs = first > 0n ? round(Number(first - froze) / 1000, 1) : null;
    if (first > 0n) {
      this.#report.switchoverParts = {
        freezeToThawUs: round(Number(thawed - froze) / 1000, 1),
        thawToFirstPassUs: round(Number(first - thawed) / 1000, 1),
        directTakeover: takenOver,
      };
    }
    this.#journal!.update({ phase: 'resume', switchoverUs: this.#report.switchoverUs });
    crashPoint('resume');
  }

  // ---- commit ----

  async #commitNew(): Promise<void> {
    const r = await this.#new!.call('commit');
    if (this.#report.new && r.body.control !== undefined) this.#report.new.control = r.body.control;
    if (r.body.mainPidNotified === false) this.#notMain = true;
    this.#journal!.update({ committed: true });
  }

  /**
   * The new instance serves and owns the devices: the old one lets go and
   * exits, its memory goes back. An old instance that cannot be stopped, or
   * anything unexpected here, is for the operator (exit 3, journal kept):
   * the new instance serves, but the host is not as an upgrade leaves it.
   */
  async #retireOld(): Promise<UpgradeReport> {
    const t = performance.now();
    const oldPid = this.#oldHello!.pid;
    if (this.#notMain) {
      // Under systemd the old instance is still the main process: its exit would stop the service, and the new instance
      // with it. It commits (it stops accepting on the control socket, and tells the service nothing more) but stays.
      try {
        await this.#old!.call('commit');
      } catch (err) {
        this.#report.warnings.push(`the old instance (pid ${oldPid}) did not commit: ${(err as Error).message}`);
      }
      this.#report.message =
        `committed: the new instance (pid ${this.#newPid ?? '?'}) serves every device, but could not tell the service manager (${this.#cmd?.notifySocket}) ` +
        `that it is the main process now (MAINPID=), so the old instance (pid ${oldPid}) was left running: its exit would stop the service. ` +
        `It serves nothing. Once 'systemctl show -p MainPID <unit>' names pid ${this.#newPid ?? '?'}, stop it by hand, then run: ziu recover --control ${this.o.control}`;
      return this.#finish('failed', { keepJournal: true });
    }
    let stopped: boolean;
    try {
      ({ stopped } = await retireOld(this.#old!, this.#oldRef ?? oldPid, this.o.store, {
        note: (msg) => {
          this.#report.warnings.push(msg);
          this.log.warn(msg);
        },
        done: () => undefined,
      }));
    } catch (err) {
      this.#report.warnings.push(`retiring the old instance (pid ${oldPid}) failed: ${(err as Error).message}`);
      stopped = false;
    }
    this.#report.phases['commit'] = round((this.#report.phases['commit'] ?? 0) + performance.now() - t, 3);
    if (stopped) await this.#retireOldFlowTable();
    if (!stopped) {
      this.#report.message =
        `committed: the new instance (pid ${this.#newPid ?? '?'}) serves every device, but the old instance (pid ${oldPid}) was not retired ` +
        `(${this.#report.warnings.at(-1) ?? 'see the warnings'}). It serves nothing; stop it by hand, then run: ziu recover --control ${this.o.control}`;
      return this.#finish('failed', { keepJournal: true });
    }
    return this.#finish('committed');
  }

  /**
   * After a format change the old flow table serves nobody: if ziu made its
   * file, it goes (its pages back to the pool). The bridge table stays: the
   * new instance maps the very same file.
   */
  async #retireOldFlowTable(): Promise<void> {
    const path = this.#oldHello?.tables?.flow.path ?? null;
    if (this.#report.tables?.flow !== 'converted' || path === null) return;
    try {
      const f = (await this.o.store.list()).find((x) => x.path === path);
      if (f) await this.o.store.remove(f.instance, f.role);
      else this.#report.warnings.push(`the old flow table ${path} (format ${this.#report.tables.flowFormat.old}) is no longer used; ziu did not make it, so it is left for you to remove`);
    } catch (err) {
      this.#report.warnings.push(`could not remove the old flow table ${path}: ${(err as Error).message}`);
    }
  }

  // ---- rollback ----

  /**
   * Undo: the old instance serves again and the new one is gone. Whatever
   * goes wrong on the way (an instance that cannot be stopped, a journal
   * that cannot be written) ends in 'failed' with the journal kept and the
   * lock released (exit 3), never in 'rolled_back' while traffic may be stopped.
   */
  async #rollback(err: unknown): Promise<UpgradeReport> {
    const phase = this.#phase;
    const e = err as { code?: string; message?: string };
    this.#report.rollback = { phase, reason: e.message ?? String(err), code: e.code ?? 'ERR_ZIU_INTERNAL' };
    this.log.warn({ phase, err: e.message }, 'rolling back');
    const t = performance.now();
    try {
      return await this.#undo(t);
    } catch (ue) {
      this.#report.phases['rollback'] = round(performance.now() - t, 3);
      this.#report.message = `rollback did not finish: ${(ue as Error).message}. Traffic may be stopped. Run: ziu recover --control ${this.o.control}`;
      this.log.error({ err: (ue as Error).message }, 'rollback did not finish');
      return this.#finish('failed', { keepJournal: true });
    }
  }

  async #undo(t: number): Promise<UpgradeReport> {
    this.#journal?.update({ phase: 'rollback', rollback: this.#report.rollback });
    let thawError: Error | null = null;
    // Once resume was sent the new instance may hold the rings. If it still answers, it gives them
    // back with what it changed (handback); otherwise it must be gone before the old one takes them.
    const handed = this.#resumeSent ? await this.#handback() : null;
    if (this.#resumeSent && handed === null && this.#newPid !== null) {
      try {
        await stopProcess(this.#newRef ?? this.#newPid, 2000);
      } catch (se) {
        throw new ZiuError(
          'ERR_ZIU_STOP',
          `the new instance (pid ${this.#newPid}) could not be stopped (${(se as Error).message}), so the old one was not thawed: both would serve the rings`,
          { cause: se },
        );
      }
    }
    if (this.#exported) {
      try {
        await this.#thawOld(handed);
      } catch (te) {
        thawError = te as Error;
      } finally {
        if (handed) closeFds(handed.fds);
      }
    }
    this.#new?.close();
    let stuck: Error | null = null;
    try {
      if (this.#newPid !== null) await stopProcess(this.#newRef ?? this.#newPid, 2000);
    } catch (se) {
      // It serves nothing (handed back, or never resumed), but it holds memory and duplicate fds.
      stuck = se as Error;
    }
    if (this.#memInstance !== null && stuck === null) {
      try {
        await this.o.store.remove(this.#memInstance);
      } catch (re) {
        if (!hasCode(re, 'ERR_ZIU_NO_MEMFILE')) this.#report.warnings.push(`could not remove the new instance's memory: ${(re as Error).message}`);
      }
    }
    this.#report.phases['rollback'] = round(performance.now() - t, 3);
    if (stuck !== null && !thawError) {
      this.#report.message =
        `rolled back: the old instance serves again, but the new instance (pid ${this.#newPid}) could not be stopped (${stuck.message}). ` +
        `It serves nothing; stop it by hand, then run: ziu recover --control ${this.o.control}`;
      return this.#finish('failed', { keepJournal: true });
    }
    if (thawError) {
      this.#report.message = `rollback failed: the old instance did not take its devices back (${thawError.message}). Traffic may be stopped. Run: ziu recover --control ${this.o.control}`;
      // The journal stays for `ziu recover`.
      return this.#finish('failed', { keepJournal: true });
    }
    return this.#finish('rolled_back');
  }

  /**
   * Ask the new instance to give the rings back with the state of every
   * device it consumed messages of (docs/handover-protocol.md, handback).
   * null if it cannot (gone, hung, never took the rings): then it is stopped
   * and the old instance resets those devices instead.
   */
  async #handback(): Promise<{ body: ReplyOf<'handback'>; fds: number[] } | null> {
    if (this.#new === null || this.#newRef === null || !processAlive(this.#newRef)) return null;
    try {
      return await this.#new.call('handback', undefined, [], HANDBACK_TIMEOUT_MS);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'the new instance could not hand the rings back; stopping it instead');
      return null;
    }
  }

  async #thawOld(handed: { body: ReplyOf<'handback'>; fds: number[] } | null): Promise<void> {
    const changed = handed?.body.changed ?? null;
    const req = { force: this.#resumeSent, changed, fds: changed?.fds ?? [] };
    let old = this.#old!;
    let r;
    try {
      r = await old.call('thaw', req, handed?.fds ?? []);
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_ZIU_HANDOVER_STATE') throw err;
      // The connection may have broken with the failure: one fresh attempt.
      old.close();
      old = await Peer.connect('old', this.o.control);
      this.#old = old;
      r = await old.call('thaw', req, handed?.fds ?? []);
    }
    const { readopted = [], reset = [] } = r.body;
    if (this.#report.rollback) this.#report.rollback.devices = { handedBack: handed !== null, readopted, reset };
    if (reset.length > 0) {
      this.#report.warnings.push(
        `the new instance had consumed vhost-user messages of ${reset.join(', ')} and could not hand them back: ` +
          `the old instance reset ${reset.length === 1 ? 'that device' : 'those devices'} (their frontends reconnect)`,
      );
    }
  }

  // ---- endings ----

  #refused(err: unknown): UpgradeReport {
    const e = err as { code?: string; message?: string };
    this.#report.message = e.message ?? String(err);
    this.#report.rollback = undefined;
    (this.#report as UpgradeReport & { code?: string }).code = e.code ?? 'ERR_ZIU_INTERNAL';
    this.#old?.close();
    this.#unlock?.();
    return this.#finish('refused');
  }

  #finish(result: UpgradeReport['result'], opts: { keepJournal?: boolean } = {}): UpgradeReport {
    this.#report.result = result;
    this.#report.totalMs = round(performance.now() - this.#t0, 3);
    this.#old?.close();
    this.#new?.close();
    try {
      if (this.#journal && !opts.keepJournal) this.#journal.finish(this.#report as unknown as Record<string, unknown>);
      else this.#journal?.update({ result });
    } catch (err) {
      // The report still goes out and the lock is still released; the journal may say less.
      this.#report.warnings.push(`could not write the journal: ${(err as Error).message}`);
    } finally {
      this.#unlock?.();
      this.#unlock = null;
    }
    this.log.info({ result, switchoverUs: this.#report.switchoverUs, totalMs: this.#report.totalMs }, 'upgrade finished');
    return this.#report;
  }
}

export async function upgrade(o: UpgradeOptions): Promise<UpgradeReport> {
  return new Upgrade(o).run();
}


/** What the new datapath binary says it speaks (`<command> --handover-info`); a refusal if it cannot say. */
export async function newCommandInfo(argv: string[], cwd?: string): Promise<HandoverInfo> {
  const [file, ...args] = argv;
  let stdout: string;
  try {
    const p = execa(file!, [...args, '--handover-info'], { timeout: 10_000, env: { ZIU_LOG_LEVEL: 'silent' }, ...(cwd !== undefined ? { cwd } : {}) });
    if (p.pid !== undefined) setNice(p.pid, BACKGROUND_NICE);
    const r = await p;
    stdout = r.stdout;
  } catch (cause) {
    const c = cause as { code?: string; exitCode?: number; stderr?: string; originalMessage?: string };
    if (c.code === 'ENOENT') throw new Refusal('ERR_ZIU_NEW_COMMAND', `new datapath command '${file}' not found`, { cause });
    if (c.code === 'EACCES') throw new Refusal('ERR_ZIU_NEW_COMMAND', `new datapath command '${file}' is not executable`, { cause });
    const why = c.stderr?.trim().split('\n').at(-1) ?? c.originalMessage ?? String(cause);
    throw new Refusal('ERR_ZIU_NEW_COMMAND', `'${argv.join(' ')} --handover-info' failed (exit ${c.exitCode ?? '?'}): ${why}`, { cause });
  }
  try {
    return handoverInfoCodec.decode(JSON.parse(stdout.trim().split('\n').at(-1) ?? ''));
  } catch {
    // not JSON, or not handover info: said below
  }
  throw new Refusal('ERR_ZIU_NEW_COMMAND', `'${file} --handover-info' did not print the handover protocol and state formats as JSON: is it a datapath that speaks the ziu handover protocol?`);
}

/** Niceness for what the orchestrator starts before it serves traffic (the new instance, --handover-info). */
const BACKGROUND_NICE = 10;

/**
 * Every thread of the process: on Linux a nice value is a thread's, and
 * setpriority(pid) sets only the main thread's. Threads created after a
 * renice inherit it, those created before keep theirs. Best effort: without
 * CAP_SYS_NICE a priority cannot be raised back, which only costs speed.
 */
function setNice(pid: number, nice: number): void {
  let tids: number[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    return; // gone already
  }
  for (const tid of tids) {
    try {
      os.setPriority(tid, nice);
    } catch {
      // not permitted or already gone
    }
  }
}

function getNice(pid: number): number | null {
  try {
    return os.getPriority(pid);
  } catch {
    return null;
  }
}

function refusal(err: unknown): Refusal {
  if (err instanceof Refusal) return err;
  const e = err as { code?: string; message?: string };
  return new Refusal(relayedCode(e.code), e.message ?? String(err), { cause: err });
}


function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

