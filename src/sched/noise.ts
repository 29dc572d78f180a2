/**
 * The host's noise floor, measured beside the traffic: on each CPU a thread at
 * SCHED_FIFO 99 (the highest; SCHED_OTHER without privilege) sleeps to a
 * fixed schedule and records how late it wakes. No user-space thread can
 * delay it, so a late wake-up is the kernel's or the hypervisor's: a gap of
 * that size on the VM side lies outside the switch.
 */
import { check, native } from '../native/index.js';
import type { NoiseHandle } from '../native/native.js';
import { onlineCpus } from './placement.js';

export interface CpuNoise {
  cpu: number;
  /** the SCHED_FIFO priority it had (0: SCHED_OTHER, not permitted) */
  priority: number;
  samples: number;
  maxUs: number;
  p99Us: number;
  meanUs: number;
  /** wake-ups more than 1 ms late */
  over1ms: number;
  /** the late wake-up's scheduled time, CLOCK_MONOTONIC ms */
  maxAtMs: number;
}

export interface NoiseMeter {
  stop(): CpuNoise[];
}

export const NOISE_PRIORITY = 99;
export const NOISE_PERIOD_US = 1000;

const us = (ns: number): number => Math.round(ns / 100) / 10;

/** One meter thread per CPU (default: every online CPU); stop() joins them and reports. */
export function startNoise(cpus: readonly number[] = onlineCpus(), periodUs = NOISE_PERIOD_US): NoiseMeter {
  const started: Array<{ cpu: number; h: NoiseHandle }> = [];
  try {
    for (const cpu of cpus) started.push({ cpu, h: check(native.noiseStart(cpu, NOISE_PRIORITY, periodUs * 1000), 'noise thread', {}) });
  } catch (err) {
    for (const s of started) native.noiseStop(s.h);
    throw err;
  }
  let result: CpuNoise[] | null = null;
  return {
    stop: () =>
      (result ??= started.map(({ cpu, h }) => {
        const r = native.noiseStop(h);
        return { cpu, priority: r.priority, samples: r.samples, maxUs: us(r.maxNs), p99Us: us(r.p99Ns), meanUs: us(r.meanNs), over1ms: r.over1ms, maxAtMs: r.maxAtNs / 1e6 };
      })),
  };
}
