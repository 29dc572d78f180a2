import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { sysError, type SyscallTarget } from '../errors.js';
import type { Errno, NativeAddon } from './native.js';

// The addon lives in build/Release at the package root, both when running
// from src/ (vitest) and from dist/ (the installed CLI).
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const require = createRequire(import.meta.url);

function load(): NativeAddon {
  const file = path.join(root, 'build', 'Release', 'ziu_native.node');
  try {
    return require(file) as NativeAddon;
  } catch (cause) {
    throw new Error(`cannot load the ziu native addon from ${file}: run 'npm install' (it builds it with node-gyp)`, {
      cause,
    });
  }
}

export const native: NativeAddon = load();

/** Unwrap an addon result: a negative number is -errno and becomes a thrown SystemError. */
export function check<T>(result: T | Errno, syscall: string, target: SyscallTarget = {}): T {
  if (typeof result === 'number' && result < 0) throw sysError(result, syscall, target);
  return result as T;
}

/** Close an fd the caller owns; errors are reported, never retried. */
export function closeFd(fd: number): void {
  check(native.close(fd), 'close', { fd });
}

export type { NativeAddon, RecvResult, PeerCred, StatResult, PollHandle } from './native.js';
