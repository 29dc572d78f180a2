import { afterEach, describe, expect, it } from 'vitest';
import { formatCpuList, onlineCpus } from '../../src/sched/placement.js';
import { procSched } from '../helpers/sched.js';
import { startRig, type Rig } from '../helpers/upgrade.js';

const SCHED_FIFO = 1;
const root = process.getuid?.() === 0;
const cpus = onlineCpus();
const why = !root ? 'not root: SCHED_FIFO needs CAP_SYS_NICE' : cpus.length < 2 ? 'one CPU: nothing to keep the control plane off' : null;
if (why) console.log(`skipping worker placement across handovers: ${why}`);

describe.skipIf(why !== null)('the packet worker keeps its CPU and SCHED_FIFO priority', () => {
  let rig: Rig | null = null;
  afterEach(async () => {
    await rig?.cleanup();
    rig = null;
  });
  const packetCpu = cpus.at(-1)!;
  const others = formatCpuList(cpus.filter((c) => c !== packetCpu));

  /** What /proc says of the serving instance: its worker on the packet CPU at FIFO 30, its other threads elsewhere. */
  async function expectPlaced(r: Rig): Promise<number> {
    // The control socket is the serving instance's: after a commit, the new one's.
    const s = await r.dp.status();
    expect(s.worker).not.toBeNull();
    const w = procSched(s.pid, s.worker!.applied.tid);
    expect(w).toEqual({ policy: SCHED_FIFO, rtPriority: 30, cpusAllowed: String(packetCpu) });
    expect(s.worker!.applied).toMatchObject({ policy: 'fifo', priority: 30, cpus: [packetCpu] });
    // The Node side of the datapath stays off the packet CPU.
    expect(procSched(s.pid, s.pid).cpusAllowed).toBe(others);
    expect(procSched(s.pid, s.pid).policy).toBe(0);
    return s.pid;
  }

  it('applied at start, taken by the new instance before it serves, and kept by the old one on rollback', async () => {
    rig = await startRig({ datapathArgs: ['--worker-cpus', String(packetCpu), '--worker-priority', '30'] });
    const first = await expectPlaced(rig);

    // The new instance is started without placement flags: it takes its predecessor's at import.
    const up = await rig.upgrade();
    expect(up.exitCode, up.stderr).toBe(0);
    const rep = up.report as { new: { pid: number; worker: { policy: string; priority: number; cpus: number[] } }; old: { worker: { policy: string } } };
    expect(rep.old.worker).toMatchObject({ policy: 'fifo', priority: 30, cpus: [packetCpu] });
    expect(rep.new.worker).toMatchObject({ policy: 'fifo', priority: 30, cpus: [packetCpu] });
    const second = await expectPlaced(rig);
    expect(second).not.toBe(first);
    expect(second).toBe(rep.new.pid);

    // A new instance that fails verify: the one serving keeps its worker exactly as it was.
    const failed = await rig.upgrade([], { ZIU_FAULT: 'no-forward' });
    expect(failed.exitCode, failed.stderr).toBe(1);
    expect(await expectPlaced(rig)).toBe(second);
    const probe = await rig.probe!.stop();
    expect(probe).toMatchObject({ lost: 0, duplicated: 0, notSent: 0 });
  }, 60_000);
});
