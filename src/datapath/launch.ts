import { setTimeout as sleep } from 'node:timers/promises';
import { ControlClient } from '../control/client.js';
import { launchDetached, stopProcess, type Exit, type LaunchOptions } from '../process/index.js';
import { datapathArgv } from './bin.js';

// After a shutdown that did not end it, SIGTERM gets this long before SIGKILL.
const TERM_GRACE_MS = 2000;

export interface DatapathLaunchOptions extends Omit<LaunchOptions, 'argv'> {
  /** its control socket (--control) */
  control: string;
  /** every other ziu-datapath flag: ports, --mem-file, --instance, workerArgs() */
  args: string[];
}

/** A ziu-datapath we started, ready (READY=1). */
export interface LaunchedDatapath {
  /** the node process running bin/ziu-datapath.js itself, no wrapper */
  pid: number;
  control: string;
  /** its sd_notify datagrams (with keepNotify up to its exit: STOPPING=1 comes last) */
  notices: string[];
  exited: Promise<Exit>;
  /**
   * Shut it down over its control socket; if it is still there after graceMs,
   * SIGTERM, then SIGKILL. Resolves its exit status.
   */
  stop(graceMs?: number): Promise<Exit>;
}

/**
 * Start this package's ziu-datapath with the current node and wait for its
 * READY=1: the one way the demo, the bench, the scripts and the tests start
 * a datapath. A start that fails leaves no process behind (launchDetached).
 */
export async function launchDatapath(o: DatapathLaunchOptions): Promise<LaunchedDatapath> {
  const { control, args, ...launch } = o;
  const l = await launchDetached({ ...launch, argv: [...datapathArgv(), '--control', control, ...args] });
  return { pid: l.pid, control, notices: l.notices, exited: l.exited, stop: (graceMs = 5000) => stopDatapath(l.pid, control, l.exited, graceMs) };
}

async function stopDatapath(pid: number, control: string, exited: Promise<Exit>, graceMs: number): Promise<Exit> {
  // Once it has exited its pid may be another process's: never signal it then.
  if (await within(exited, 0)) return exited;
  try {
    const c = await ControlClient.connect(control);
    try {
      await c.call({ op: 'shutdown' });
    } finally {
      c.close();
    }
  } catch {
    // no control socket (any more): signals below
  }
  if (!(await within(exited, graceMs))) {
    await stopProcess(pid, TERM_GRACE_MS);
    // The exit event comes with SIGCHLD, which alone does not keep the loop alive (the child is unref'd): wait under a timer.
    await within(exited, TERM_GRACE_MS);
  }
  return exited;
}

/** true if p settles within ms */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  const timeout = new AbortController();
  const settled = await Promise.race([p.then(() => true), sleep(ms, false, { signal: timeout.signal }).catch(() => false)]);
  timeout.abort();
  return settled;
}
