import { UsageError } from '../errors.js';

const NAME = /^[A-Za-z0-9._-]+$/;

/**
 * Check one path component of a mem file name (an instance id or a role).
 * These become directory and file names under the hugetlbfs mount, so
 * anything that could climb out of it or surprise a shell is refused.
 */
export function checkNamePart(kind: 'instance' | 'role', value: string): string {
  if (value.length === 0) throw new UsageError(`${kind} name is empty`);
  if (value === '.' || value === '..' || value.includes('..')) {
    throw new UsageError(`${kind} name '${value}' contains '..'`);
  }
  if (!NAME.test(value)) {
    throw new UsageError(`${kind} name '${value}' has characters outside [A-Za-z0-9._-]`);
  }
  if (value.length > 128) throw new UsageError(`${kind} name '${value.slice(0, 16)}...' is longer than 128 characters`);
  return value;
}

export interface MemFileName {
  instance: string;
  role: string;
}

/** Parse "<instance>/<role>", e.g. "vr-2024.1/pool-0". */
export function parseMemFileName(text: string): MemFileName {
  if (text.split('/').includes('..')) throw new UsageError(`mem file name '${text}' contains '..'`);
  const slash = text.indexOf('/');
  if (slash < 0) throw new UsageError(`mem file name '${text}' must be <instance>/<role>, e.g. vr1/pool-0`);
  const instance = text.slice(0, slash);
  const role = text.slice(slash + 1);
  if (role.includes('/')) throw new UsageError(`mem file name '${text}' must be <instance>/<role> with one '/'`);
  return { instance: checkNamePart('instance', instance), role: checkNamePart('role', role) };
}
