import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { UsageError, ZiuError } from '../errors.js';
import type { Logger } from '../log.js';
import { bindNotify, closeNotify } from './notify.js';
import { killQuietly, stopGroup } from './stop.js';

export interface LaunchOptions {
  /** argv[0] = executable (looked up in PATH), rest = args */
  argv: string[];
  /** added to process.env */
  env?: Record<string, string>;
  /** its working directory (default ours) */
  cwd?: string;
  /** deadline for READY=1 */
  readyTimeoutMs: number;
  /**
   * child's stdout+stderr appended here (the child outlives us, so not a pipe);
   * without it they are ours, as for a test whose output should show the child's
   */
  logFile?: string;
  /** where to bind the NOTIFY_SOCKET (unix datagram) we own; removed when done */
  notifyPath: string;
  /**
   * keep listening after READY=1 until the child exits, so that later notices
   * (STATUS=, STOPPING=1) reach `notices`; by default the socket goes at READY=1
   */
  keepNotify?: boolean;
  /** what the child is, in messages and logs (default 'new datapath') */
  what?: string;
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
  /** resolves once it has exited (never rejects); our child, so its exit status is known */
  exited: Promise<Exit>;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

// How many lines of the child's log go into an error message.
const TAIL_LINES = 5;

/**
 * Start a command (a datapath) in its own session, detached from us, and
 * resolve once it sends READY=1 on the notify socket we own (sd_notify). On
 * any failure the child is gone when this rejects, so the caller never has to
 * clean up a half-started instance.
 */
export async function launchDetached(opts: LaunchOptions): Promise<Launched> {
  const { argv, log } = opts;
  const what = opts.what ?? 'new datapath';
  const [file, ...args] = argv;
  if (file === undefined || file === '') throw new UsageError(`launchDetached: argv must name the ${what} command`);
  if (!Number.isFinite(opts.readyTimeoutMs) || opts.readyTimeoutMs <= 0) {
    throw new UsageError(`launchDetached: readyTimeoutMs must be a positive number of milliseconds, got ${opts.readyTimeoutMs}`);
  }
  const cmd = commandLine(argv);
  if (opts.signal?.aborted) {
    throw new ZiuError('ERR_ZIU_ABORTED', `starting the ${what} ${cmd} was aborted before it was spawned`, { cause: opts.signal.reason });
  }

  const notices: string[] = [];
  let status: string | null = null;
  let ready: (() => void) | null = null;
  const sock = bindNotify(opts.notifyPath, what, log, (msg) => {
    const text = msg.toString('utf8');
    notices.push(text);
    const lines = text.split('\n');
    for (const line of lines) if (line.startsWith('STATUS=')) status = line.slice('STATUS='.length);
    if (lines.includes('READY=1')) ready?.();
  });

  try {
    const child = spawnDetached(file, args, opts);
    const pid = await spawned(child, file, what);
    // From here on the child must not keep us alive, nor may its death throw.
    child.unref();
    child.on('error', (err) => log.warn({ pid, err }, `${what} process error`));
    const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const started = Date.now();
    log.info({ pid, argv }, `spawned ${what}`);
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
        log.info({ pid, ms: waited, status }, `${what} ready after ${waited} ms`);
        // Kept for the notices after READY=1, the socket goes when the child does.
        if (opts.keepNotify) void exited.then(() => closeNotify(sock, opts.notifyPath, log));
        else closeNotify(sock, opts.notifyPath, log);
        return { pid, status, notices, exited };
      case 'exit': {
        // Helpers it forked would hold the new instance's memory: a failed start leaves nothing.
        killQuietly(-pid, 'SIGKILL');
        const how = outcome.signal !== null ? `was killed by ${outcome.signal}` : `exited with code ${outcome.code}`;
        throw new ZiuError(
          'ERR_ZIU_NEW_EXITED',
          `${what} ${cmd} (pid ${pid}) ${how} before it was ready (no READY=1 after ${waited} ms); fix what its log says and retry. ${logTail(opts.logFile)}`,
        );
      }
      case 'timeout': {
        const ended = await stopGroup(pid, what, log);
        throw new ZiuError(
          'ERR_ZIU_READY_TIMEOUT',
          `${what} ${cmd} (pid ${pid}) sent no READY=1 within ${opts.readyTimeoutMs} ms and was stopped (${ended}); ` +
            `check that it supports NOTIFY_SOCKET readiness, or raise the ready timeout if it starts slowly. ${logTail(opts.logFile)}`,
        );
      }
      case 'abort': {
        const ended = await stopGroup(pid, what, log);
        throw new ZiuError('ERR_ZIU_ABORTED', `starting the ${what} ${cmd} (pid ${pid}) was aborted after ${waited} ms; it was stopped (${ended})`, {
          cause: opts.signal?.reason,
        });
      }
    }
  } catch (err) {
    closeNotify(sock, opts.notifyPath, log);
    throw err;
  } finally {
    ready = null;
  }
}

function spawnDetached(file: string, args: string[], opts: LaunchOptions): ChildProcess {
  const env = { ...process.env, ...opts.env, NOTIFY_SOCKET: opts.notifyPath };
  const cwd = opts.cwd;
  if (opts.logFile === undefined) return spawn(file, args, { detached: true, stdio: ['ignore', 'inherit', 'inherit'], env, cwd });
  const logFd = fs.openSync(opts.logFile, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
  try {
    // uv_spawn forks and execs synchronously, so the child holds its own copy of logFd once spawn() returns.
    return spawn(file, args, {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env,
      cwd,
    });
  } finally {
    fs.closeSync(logFd);
  }
}

/** The pid once the exec succeeded; a failed exec (ENOENT, EACCES) leaves no process behind. */
function spawned(child: ChildProcess, file: string, name: string): Promise<number> {
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
      reject(new ZiuError('ERR_ZIU_NEW_COMMAND', `${name} command '${file}' ${what}`, { cause: err }));
    };
    child.once('spawn', onSpawn);
    child.once('error', onError);
  });
}

/** The last lines of the child's log, for an error message a person can act on. */
function logTail(logFile: string | undefined): string {
  if (logFile === undefined) return 'Its output went to our stderr.';
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
