import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSocket, type UnixDgramSocket } from 'unix-dgram';
import { hasCode, sysError, UsageError, ZiuError } from '../errors.js';
import type { Logger } from '../log.js';

export interface LaunchOptions {
  /** argv[0] = executable (looked up in PATH), rest = args */
  argv: string[];
  /** added to process.env */
  env?: Record<string, string>;
  /** deadline for READY=1 */
  readyTimeoutMs: number;
  /** child's stdout+stderr appended here (the child outlives us, so not a pipe) */
  logFile: string;
  /** where to bind the NOTIFY_SOCKET (unix datagram) we own; removed when done */
  notifyPath: string;
  log: Logger;
  /** abort waiting (e.g. the orchestrator is rolling back) */
  signal?: AbortSignal;
  /** called as soon as the pid is known, before readiness (to journal it: we may die while waiting) */
  onSpawn?: (pid: number) => void;
}

export interface Launched {
  pid: number;
  /** last STATUS= line received, if any */
  status: string | null;
  /** every notify datagram received, in order */
  notices: string[];
}

// A child that ignores SIGTERM on a failed start gets this long before SIGKILL.
const KILL_GRACE_MS = 1000;
// How many lines of the child's log go into an error message.
const TAIL_LINES = 5;
// sockaddr_un.sun_path holds 108 bytes with the NUL; unix-dgram truncates silently.
const SUN_PATH_MAX = 107;

/**
 * Start a datapath in its own session, detached from us, and resolve once it
 * sends READY=1 on the notify socket we own (sd_notify). On any failure the
 * child is gone when this rejects, so the caller never has to clean up a
 * half-started instance.
 */
export async function launchDetached(opts: LaunchOptions): Promise<Launched> {
  const { argv, log } = opts;
  const [file, ...args] = argv;
  if (file === undefined || file === '') throw new UsageError('launchDetached: argv must name the new datapath command');
  if (!Number.isFinite(opts.readyTimeoutMs) || opts.readyTimeoutMs <= 0) {
    throw new UsageError(`launchDetached: readyTimeoutMs must be a positive number of milliseconds, got ${opts.readyTimeoutMs}`);
  }
  const cmd = commandLine(argv);
  if (opts.signal?.aborted) {
    throw new ZiuError('ERR_ZIU_ABORTED', `starting the new datapath ${cmd} was aborted before it was spawned`, { cause: opts.signal.reason });
  }

  const notices: string[] = [];
  let status: string | null = null;
  let ready: (() => void) | null = null;
  const sock = bindNotify(opts.notifyPath, log, (msg) => {
    const text = msg.toString('utf8');
    notices.push(text);
    const lines = text.split('\n');
    for (const line of lines) if (line.startsWith('STATUS=')) status = line.slice('STATUS='.length);
    if (lines.includes('READY=1')) ready?.();
  });

  try {
    const child = spawnDetached(file, args, opts);
    const pid = await spawned(child, file);
    // From here on the child must not keep us alive, nor may its death throw.
    child.unref();
    child.on('error', (err) => log.warn({ pid, err }, 'new datapath process error'));
    const started = Date.now();
    log.info({ pid, argv }, 'spawned new datapath');
    opts.onSpawn?.(pid);

    type Outcome = { kind: 'ready' } | { kind: 'exit'; code: number | null; signal: NodeJS.Signals | null } | { kind: 'timeout' } | { kind: 'abort' };
    let onExit: ((code: number | null, signal: NodeJS.Signals | null) => void) | undefined;
    let onAbort: (() => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await new Promise<Outcome>((resolve) => {
      ready = () => resolve({ kind: 'ready' });
      onExit = (code, signal) => resolve({ kind: 'exit', code, signal });
      child.once('exit', onExit);
      onAbort = () => resolve({ kind: 'abort' });
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      timer = setTimeout(() => resolve({ kind: 'timeout' }), opts.readyTimeoutMs);
      // A READY=1 that raced ahead of the listener above is already in notices.
      if (notices.some((n) => n.split('\n').includes('READY=1'))) resolve({ kind: 'ready' });
    });
    ready = null;
    clearTimeout(timer);
    if (onExit) child.off('exit', onExit);
    if (onAbort) opts.signal?.removeEventListener('abort', onAbort);
    const waited = Date.now() - started;

    switch (outcome.kind) {
      case 'ready':
        log.info({ pid, ms: waited, status }, `new datapath ready after ${waited} ms`);
        return { pid, status, notices };
      case 'exit': {
        // Helpers it forked would hold the new instance's memory: a failed start leaves nothing.
        killQuietly(-pid, 'SIGKILL');
        const how = outcome.signal !== null ? `was killed by ${outcome.signal}` : `exited with code ${outcome.code}`;
        throw new ZiuError(
          'ERR_ZIU_NEW_EXITED',
          `new datapath ${cmd} (pid ${pid}) ${how} before it was ready (no READY=1 after ${waited} ms); fix what its log says and retry. ${logTail(opts.logFile)}`,
        );
      }
      case 'timeout': {
        const ended = await stopGroup(pid, log);
        throw new ZiuError(
          'ERR_ZIU_READY_TIMEOUT',
          `new datapath ${cmd} (pid ${pid}) sent no READY=1 within ${opts.readyTimeoutMs} ms and was stopped (${ended}); ` +
            `check that it supports NOTIFY_SOCKET readiness, or raise the ready timeout if it starts slowly. ${logTail(opts.logFile)}`,
        );
      }
      case 'abort': {
        const ended = await stopGroup(pid, log);
        throw new ZiuError('ERR_ZIU_ABORTED', `starting the new datapath ${cmd} (pid ${pid}) was aborted after ${waited} ms; it was stopped (${ended})`, {
          cause: opts.signal?.reason,
        });
      }
    }
  } finally {
    ready = null;
    closeNotify(sock, opts.notifyPath, log);
  }
}

/**
 * Send SIGTERM, wait up to graceMs for the process to be gone, then SIGKILL and
 * wait again. Resolves how it ended. Works for a pid we did not spawn (recover).
 */
export async function stopProcess(pid: number, graceMs: number): Promise<'exited' | 'killed' | 'not-running'> {
  checkPid(pid);
  return terminate(pid, pid, graceMs);
}

/**
 * True if a process with this pid exists (kill(pid, 0); EPERM counts as alive)
 * and is not a zombie: a child of ours that died stays in the process table
 * until it is reaped, yet it is gone for every purpose here.
 */
export function processAlive(pid: number): boolean {
  checkPid(pid);
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (hasCode(err, 'EPERM')) return true;
    if (hasCode(err, 'ESRCH')) return false;
    throw err;
  }
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    // It existed a moment ago: ENOENT means it has just been reaped.
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ESRCH')) return false;
    return true;
  }
  // The command name in parentheses may itself contain ') ', so the state is after the last one.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

function checkPid(pid: number): void {
  // 0 and negative pids address process groups (-1: every process we may signal).
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new UsageError(`pid must be a positive integer, got ${pid}`);
}

/** Signal `target` (a pid, or -pgid for a whole group) and watch `pid` until it is gone. */
async function terminate(target: number, pid: number, graceMs: number): Promise<'exited' | 'killed' | 'not-running'> {
  if (!processAlive(pid)) return 'not-running';
  if (!signal(target, 'SIGTERM')) return 'exited';
  if (await waitGone(pid, graceMs)) return 'exited';
  signal(target, 'SIGKILL');
  // SIGKILL cannot be ignored, but a process in uninterruptible sleep (D) dies only when the syscall returns.
  if (await waitGone(pid, Math.max(graceMs, KILL_GRACE_MS))) return 'killed';
  throw new ZiuError('ERR_ZIU_STOP', `process ${pid} is still there after SIGKILL; it is probably stuck in the kernel (see /proc/${pid}/stack), stop it by hand`);
}

/** false if there was nothing left to signal */
function signal(target: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(target, sig);
    return true;
  } catch (err) {
    if (hasCode(err, 'ESRCH')) return false;
    throw err;
  }
}

function killQuietly(target: number, sig: NodeJS.Signals): void {
  try {
    process.kill(target, sig);
  } catch {
    // nothing left in the group: the usual case
  }
}

/** Wait up to ms for pid to be gone (exited, or a zombie); true if it is. */
export async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!processAlive(pid)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
}

/** Stop a child we launched: its whole process group, so no helper it forked survives. */
async function stopGroup(pid: number, log: Logger): Promise<string> {
  try {
    const how = await terminate(-pid, pid, KILL_GRACE_MS);
    killQuietly(-pid, 'SIGKILL');
    return how === 'killed' ? 'SIGKILL after SIGTERM was ignored' : 'SIGTERM';
  } catch (err) {
    log.error({ pid, err }, 'could not stop the new datapath');
    return `it may still run: ${(err as Error).message}`;
  }
}

function spawnDetached(file: string, args: string[], opts: LaunchOptions): ChildProcess {
  const logFd = fs.openSync(opts.logFile, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
  try {
    // uv_spawn forks and execs synchronously, so the child holds its own copy of logFd once spawn() returns.
    return spawn(file, args, {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, ...opts.env, NOTIFY_SOCKET: opts.notifyPath },
    });
  } finally {
    fs.closeSync(logFd);
  }
}

/** The pid once the exec succeeded; a failed exec (ENOENT, EACCES) leaves no process behind. */
function spawned(child: ChildProcess, file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onSpawn = (): void => {
      child.off('error', onError);
      resolve(child.pid as number);
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      child.off('spawn', onSpawn);
      const code = err.code ?? 'UNKNOWN';
      const what =
        code === 'ENOENT'
          ? `not found (spawn ENOENT); install it or give its full path`
          : code === 'EACCES'
            ? `is not executable (spawn EACCES); check its permissions and the mount's noexec`
            : `could not be started (spawn ${code})`;
      reject(new ZiuError('ERR_ZIU_NEW_COMMAND', `new datapath command '${file}' ${what}`, { cause: err }));
    };
    child.once('spawn', onSpawn);
    child.once('error', onError);
  });
}

function bindNotify(path: string, log: Logger, onMessage: (msg: Buffer) => void): UnixDgramSocket {
  if (path.startsWith('@') || path.includes('\0')) {
    // unix-dgram copies the name with strncpy, which stops at the leading NUL of an abstract name.
    throw new UsageError(`notify socket '${path}' must be a filesystem path: abstract names cannot be bound here`);
  }
  if (Buffer.byteLength(path) > SUN_PATH_MAX) {
    throw new UsageError(`notify socket path '${path}' is longer than ${SUN_PATH_MAX} bytes (the limit of a unix socket address); use a shorter state directory`);
  }
  removeStaleSocket(path);
  const sock = createSocket('unix_dgram', onMessage);
  let bindErr: (Error & { errno?: number }) | undefined;
  const onBindError = (err: Error & { errno?: number }): void => {
    bindErr = err;
  };
  // unix-dgram reports a failed bind as an 'error' event emitted inside bind().
  sock.on('error', onBindError);
  sock.bind(path);
  sock.off('error', onBindError);
  if (bindErr !== undefined) {
    sock.close();
    const cause = typeof bindErr.errno === 'number' ? sysError(bindErr.errno, 'bind', { path }, bindErr) : bindErr;
    throw new ZiuError('ERR_ZIU_NOTIFY_SOCKET', `cannot bind the notify socket for the new datapath: ${cause.message}`, { cause });
  }
  sock.on('error', (err) => log.warn({ err, path }, 'notify socket error'));
  return sock;
}

function removeStaleSocket(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return;
    throw err;
  }
  // Left by a crashed orchestrator (the upgrade lock rules out a live one); anything else is not ours to delete.
  if (!st.isSocket()) throw new ZiuError('ERR_ZIU_NOTIFY_SOCKET', `notify socket path '${path}' exists and is not a socket; remove it or choose another path`);
  fs.unlinkSync(path);
}

function closeNotify(sock: UnixDgramSocket, path: string, log: Logger): void {
  try {
    sock.close();
  } catch (err) {
    log.warn({ err, path }, 'closing the notify socket failed');
  }
  try {
    fs.unlinkSync(path);
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) log.warn({ err, path }, 'removing the notify socket failed');
  }
}

/** The last lines of the child's log, for an error message a person can act on. */
function logTail(logFile: string): string {
  let text: string;
  try {
    const fd = fs.openSync(logFile, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(size, 8192);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      text = buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    return `Its log ${logFile} cannot be read (${(err as Error).message}).`;
  }
  const lines = text.split('\n').filter((l) => l.trim() !== '').slice(-TAIL_LINES);
  if (lines.length === 0) return `Its log ${logFile} is empty.`;
  return `Last lines of ${logFile}:\n${lines.map((l) => `  ${l}`).join('\n')}`;
}

/** argv as one quoted string, its arguments double-quoted where a shell would need it. */
function commandLine(argv: string[]): string {
  return `'${argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `"${a.replace(/["\\$`]/g, '\\$&')}"`)).join(' ')}'`;
}
