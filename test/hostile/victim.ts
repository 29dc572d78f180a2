import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { expect } from 'vitest';
import { startProbe, type ProbeReport, type RunningProbe } from '../../src/probe/index.js';
import { Peer } from '../../src/upgrade/peer.js';
import { startDatapath, type DatapathOptions, type RunningDatapath } from '../helpers/datapath.js';
import { openFds } from '../helpers/fds.js';

/** uid and gid of 'nobody': the other local user of the hostile tests. */
export const NOBODY = 65534;
export const isRoot = process.getuid?.() === 0;
export const NOT_ROOT = 'needs root: runs a datapath as root and plants files as uid 65534 (nobody)';

/** Run a shell command as uid/gid 65534 with no groups: the other local user doing the bad thing. */
export async function asNobody(script: string): Promise<void> {
  await execa('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'sh', '-ec', script], { stdin: 'ignore' });
}

/**
 * The switch that must not notice: a real ziu-datapath with the probe sending
 * a -> b through it, its log in a file, and its fd count at rest.
 */
export interface Victim {
  dp: RunningDatapath;
  probe: RunningProbe;
  logFile: string;
  baselineFds: number;
  /** status answers within 100 ms, the fd count is back at its baseline (waits up to 2 s for it) */
  checkHealthy(): Promise<void>;
  /** the datapath's log lines so far */
  log(): string;
  /** stop the probe and the datapath; the probe's report */
  stop(): Promise<ProbeReport>;
}

export async function startVictim(o: DatapathOptions = {}): Promise<Victim> {
  const logFile = path.join(fs.mkdtempSync('/tmp/ziu-victim-log-'), 'dp.log');
  const dp = await startDatapath({ env: { ZIU_LOG_LEVEL: 'info' }, ...o, logFile });
  const probe = await startProbe({ tx: dp.sock['a']!, rx: dp.sock['b']!, rate: 2000, size: 128, ringSize: 1024 });
  await new Promise((r) => setTimeout(r, 200));
  const baselineFds = openFds(dp.pid);
  return {
    dp,
    probe,
    logFile,
    baselineFds,
    log: () => fs.readFileSync(logFile, 'utf8'),
    async checkHealthy() {
      const peer = await Peer.connect('hostile-test', dp.control);
      try {
        const t0 = performance.now();
        const st = await peer.status();
        expect(performance.now() - t0, 'status answers within 100 ms').toBeLessThan(100);
        expect(st.ports.filter((p) => p.name === 'a' || p.name === 'b').every((p) => p.connected)).toBe(true);
      } finally {
        peer.close();
      }
      let fds = openFds(dp.pid);
      for (const deadline = Date.now() + 2000; fds !== baselineFds && Date.now() < deadline; fds = openFds(dp.pid)) await new Promise((r) => setTimeout(r, 10));
      expect(fds, 'the datapath fd count is back at its baseline').toBe(baselineFds);
    },
    async stop() {
      try {
        return await probe.stop();
      } finally {
        await dp.stop().catch(() => undefined);
        fs.rmSync(path.dirname(logFile), { recursive: true, force: true });
      }
    },
  };
}
