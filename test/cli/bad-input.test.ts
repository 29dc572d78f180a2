import { describe, expect, it } from 'vitest';
import { hostSnapshot, pool, realHugepagesUnavailable } from '../helpers/hugepages.js';
import { tempDir } from '../helpers/tmp.js';
import { cannotRunAs, ziu } from './helpers.js';

// Every bad input: exit 2, one line on stderr naming the problem, nothing changed.
describe('bad input is refused with exit 2 and a one-line message', () => {
  it.each([
    [['memfile', 'create', 'vr1/flow', '--size', '64M', '--page-size', '3M'], "ziu: unknown page size '3M': use 2M or 1G"],
    [['memfile', 'create', 'vr1/flow', '--size', '3X'], "ziu: invalid size '3X': use a number of bytes with an optional K, M, G or T suffix, e.g. 64M"],
    [['memfile', 'create', 'vr1/flow', '--size', '-5M'], "ziu: '-5M' is negative: counts and sizes must be 0 or more"],
    [['memfile', 'create', 'vr1/flow', '--size', '2048T'], "ziu: invalid size '2048T': larger than the limit of 1024T (2^50 bytes)"],
    [['memfile', 'create', '/flow', '--size', '2M'], 'ziu: instance name is empty'],
    [['memfile', 'create', 'vr1/', '--size', '2M'], 'ziu: role name is empty'],
    [['memfile', 'create', 'vr1/../../etc', '--size', '2M'], "ziu: mem file name 'vr1/../../etc' contains '..'"],
    [['memfile', 'create', 'vr1/fl*w', '--size', '2M'], "ziu: role name 'fl*w' has characters outside [A-Za-z0-9._-]"],
    [['memfile', 'create', 'vr1/flow', '--size', '2M', '--backing', 'disk'], "ziu: unknown backing 'disk': use auto, hugetlbfs, tmpfs"],
    [['memfile', 'create', 'vr1/flow'], "ziu: required option '--size <size>' not specified (see --help)"],
    [['memfile', 'remove', 'v..r'], "ziu: instance name 'v..r' contains '..'"],
    [['memfile', 'list', '--instance', 'a b'], "ziu: instance name 'a b' has characters outside [A-Za-z0-9._-]"],
    [['hugepages', 'reserve', '-5'], "ziu: '-5' is negative: counts and sizes must be 0 or more"],
    [['hugepages', 'reserve', '1.5'], "ziu: invalid page count '1.5': use a whole number of pages, 0 or more"],
    [['hugepages', 'reserve', '4', '--page-size', '4M'], "ziu: unknown page size '4M': use 2M or 1G"],
    [['hugepages', 'reserve', '4', '--node', 'one'], "ziu: invalid NUMA node 'one': use a node number such as 0"],
    [['hugepages', 'plan', '1G', '--page-size', '3M'], "ziu: unknown page size '3M': use 2M or 1G"],
    [['hugepages', 'frobnicate'], "ziu: unknown command 'frobnicate' (see --help)"],
  ])('ziu %j', async (args, message) => {
    const r = await ziu(args);
    expect(r.stderr.trimEnd()).toBe(message);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
  });

  it('a huge page count names the machine memory it exceeds', async () => {
    const r = await ziu(['hugepages', 'reserve', '99999999']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^ziu: page count '99999999' x 2M is more than the machine's [\d.]+G$/);
  });

  it('with --json, stdout carries the error as one JSON document', async () => {
    const r = await ziu(['memfile', 'create', 'vr1/flow', '--size', '64M', '--page-size', '3M', '--json']);
    expect(r.exitCode).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'ERR_ZIU_USAGE', message: "unknown page size '3M': use 2M or 1G" } });
  });

  it('--help on every command exits 0 and explains it', async () => {
    for (const args of [['--help'], ['hugepages', '--help'], ['hugepages', 'plan', '--help'], ['memfile', 'create', '--help']]) {
      const r = await ziu(args);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(/^Usage: ziu/);
    }
  });
});

const notRoot = cannotRunAs(65534);
describe.skipIf(notRoot !== null)('commands that need root, run as an unprivileged user', () => {
  it.each([
    [['hugepages', 'reserve', '4'], 'ziu: hugepages reserve needs root (running as uid 65534)'],
    [['hugepages', 'release'], 'ziu: hugepages release needs root (running as uid 65534)'],
    [
      ['memfile', 'create', 'vr1/flow', '--size', '2M', '--backing', 'hugetlbfs'],
      'ziu: creating a hugetlbfs mem file needs root (it writes nr_hugepages and mounts hugetlbfs): run as root or use --backing tmpfs',
    ],
  ])('ziu %j', async (args, message) => {
    const before = realHugepagesUnavailable() === null ? pool() : null;
    const r = await ziu(args, { asUser: 65534, env: { ZIU_LOG_LEVEL: 'warn', ZIU_STATE_DIR: '/tmp/ziu-nobody-state' } });
    expect(r.stderr.trimEnd()).toBe(message);
    expect(r.exitCode).toBe(2);
    if (before) expect(pool()).toEqual(before);
  });
});

const noHugepages = realHugepagesUnavailable();
describe.skipIf(noHugepages !== null)('a mount that is not hugetlbfs', () => {
  it('is refused with exit 2 and the reservation made for the file is undone', async () => {
    const snap = hostSnapshot();
    const state = tempDir();
    try {
      const before = pool();
      // /dev/shm is a tmpfs mount: ziu must not put "hugepage" files there
      const r = await ziu(['memfile', 'create', 'vr1/flow', '--size', '4M', '--backing', 'hugetlbfs'], {
        env: { ZIU_LOG_LEVEL: 'silent', ZIU_HUGEPAGE_DIR_2M: '/dev/shm', ZIU_STATE_DIR: state.dir },
      });
      expect(r.stderr.trimEnd()).toBe("ziu: /dev/shm is a tmpfs mount (from tmpfs), not hugetlbfs");
      expect(r.exitCode).toBe(2);
      expect(pool()).toEqual(before);
    } finally {
      snap.restore();
      state.remove();
    }
  });
});
