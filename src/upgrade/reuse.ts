import fs from 'node:fs';
import path from 'node:path';
import { ZiuError } from '../errors.js';
import type { Hello } from './peer.js';

/** How the new instance is started, as the report tells it (`new_command`). */
export interface NewCommand {
  /**
   * 'reused': --new named only a binary, and the running instance's flags
   * (hello.launch) were added to it; 'given': --new was the whole command line
   */
  source: 'reused' | 'given';
  /** what is run, before the orchestrator adds --mem-file for --mem */
  argv: string[];
  /** where it runs: the old instance's directory for a reused command line, else ours */
  cwd: string;
  /**
   * the service manager's notify socket it reports to once it commits
   * (ZIU_SERVICE_NOTIFY_SOCKET): the old instance's, or for an old instance
   * that does not say, our own NOTIFY_SOCKET (ExecReload under NotifyAccess=all)
   */
  notifySocket: string | null;
  /** its memory: --mem, as much as the old instance has (reused, no --mem), or its own --mem-file in the command line */
  memory: 'given' | 'same-as-old' | 'in-command';
}

/**
 * A command line with no option of its own, such as `ziu-datapath` or
 * `/opt/ziu-2/bin/ziu-datapath` (or an interpreter and its script): it says
 * which binary, and the running instance says how to run it.
 */
export function isBareCommand(argv: readonly string[]): boolean {
  return argv.length > 0 && argv.every((a) => a !== '' && !a.startsWith('-'));
}

/**
 * The new instance's command line. A bare one takes the old instance's flags
 * and working directory from its hello; its own words that are paths are
 * made absolute first, since it then runs in that directory. What is never
 * reused: the old instance's --mem-file (the old one reports its flags without
 * it), and so its memory, which --mem or the same size as the old one's replaces.
 */
export function newCommand(given: readonly string[], old: Hello, o: { mem: boolean; env?: NodeJS.ProcessEnv; cwd?: string }): NewCommand {
  const env = o.env ?? process.env;
  const here = o.cwd ?? process.cwd();
  // No launch at all: an older datapath. Then the only service manager we know of is ours.
  const notifySocket = old.launch ? old.launch.notifySocket : env['NOTIFY_SOCKET'] || null;
  if (!isBareCommand(given)) return { source: 'given', argv: [...given], cwd: here, notifySocket, memory: o.mem ? 'given' : 'in-command' };
  const launch = old.launch;
  if (launch === null) {
    throw new ZiuError(
      'ERR_ZIU_NO_LAUNCH',
      `--new '${given.join(' ')}' names only a binary, but the old instance (${old.datapath} ${old.version}, pid ${old.pid}) does not report ` +
        `how it was started (no launch in its hello: it predates that): give the new instance's whole command line, ` +
        `e.g. --new '${given.join(' ')} --control ${old.control} --vhost-user <name>=<socket> ...' with --mem`,
    );
  }
  let cwdOk = false;
  try {
    cwdOk = fs.statSync(launch.cwd).isDirectory();
  } catch {
    // said below
  }
  if (!cwdOk) {
    throw new ZiuError('ERR_ZIU_NO_LAUNCH', `the old instance (pid ${old.pid}) runs in ${launch.cwd}, which is no directory any more: its relative paths cannot be reused; give the whole command line`);
  }
  const words = given.map((w) => (w.includes('/') ? path.resolve(here, w) : w));
  return { source: 'reused', argv: [...words, ...launch.args], cwd: launch.cwd, notifySocket, memory: o.mem ? 'given' : 'same-as-old' };
}

/** The --mem-file paths on a command line (both spellings). */
export function memFileArgs(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--mem-file' && argv[i + 1] !== undefined) out.push(argv[++i]!);
    else if (a.startsWith('--mem-file=')) out.push(a.slice('--mem-file='.length));
  }
  return out;
}

/**
 * Refuse a new command line that would map a file the old instance maps:
 * the new instance writes its header into its first mem file while the old
 * one forwards from it.
 */
export function checkOwnMemory(cmd: NewCommand, oldMemFiles: readonly string[]): void {
  const real = (p: string): string => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  const old = new Set(oldMemFiles.map(real));
  for (const f of memFileArgs(cmd.argv)) {
    if (old.has(real(path.resolve(cmd.cwd, f)))) {
      throw new ZiuError('ERR_ZIU_SHARED_MEMFILE', `--new gives the new instance --mem-file ${f}, which the old instance maps: the two would write the same memory. Give it its own (--mem <size>)`);
    }
  }
}
