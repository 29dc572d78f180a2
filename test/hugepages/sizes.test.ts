import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { formatBytes, parsePageSize, parseSize, PAGE_1G, PAGE_2M } from '../../src/hugepages/sizes.js';

describe('parsePageSize', () => {
  it.each([
    ['2M', PAGE_2M],
    ['2m', PAGE_2M],
    ['2MB', PAGE_2M],
    ['2048kB', PAGE_2M],
    ['1G', PAGE_1G],
    ['1GB', PAGE_1G],
    ['1048576kB', PAGE_1G],
  ])('%s -> %d', (text, bytes) => {
    expect(parsePageSize(text)).toBe(bytes);
  });

  it.each(['3M', '4K', '2.5M', '', 'huge', '-2M'])('rejects %j naming the value', (text) => {
    const call = (): number => parsePageSize(text);
    expect(call).toThrow(UsageError);
    expect(call).toThrow(`unknown page size '${text}': use 2M or 1G`);
  });
});

describe('parseSize', () => {
  it.each([
    ['64M', 64 * 2 ** 20],
    ['1G', 2 ** 30],
    ['512K', 512 * 1024],
    ['512k', 512 * 1024],
    ['4096', 4096],
    ['1.5G', 1.5 * 2 ** 30],
    ['2MiB', 2 * 2 ** 20],
    ['1024T', 2 ** 50],
    [' 8M ', 8 * 2 ** 20],
  ])('%j -> %d', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it('gives exact messages for bad sizes', () => {
    expect(() => parseSize('-1M')).toThrow(new UsageError("invalid size '-1M': must be greater than zero"));
    expect(() => parseSize('0')).toThrow("invalid size '0': must be greater than zero");
    expect(() => parseSize('0K')).toThrow("invalid size '0K': must be greater than zero");
    expect(() => parseSize('1.3K')).toThrow("invalid size '1.3K': 1331.2 is not a whole number of bytes");
    expect(() => parseSize('0.5')).toThrow("invalid size '0.5': 0.5 is not a whole number of bytes");
    expect(() => parseSize('1025T')).toThrow("invalid size '1025T': larger than the limit of 1024T (2^50 bytes)");
    expect(() => parseSize('12Q')).toThrow(
      "invalid size '12Q': use a number of bytes with an optional K, M, G or T suffix, e.g. 64M",
    );
    expect(() => parseSize('')).toThrow("invalid size '': use a number of bytes with an optional K, M, G or T suffix, e.g. 64M");
  });
});

describe('formatBytes', () => {
  it.each([
    [PAGE_2M, '2M'],
    [PAGE_1G, '1G'],
    [1.5 * 2 ** 30, '1.5G'],
    [512 * 1024, '512K'],
    [2 ** 40, '1T'],
    [100, '100B'],
    [1536, '1.5K'],
  ])('%d -> %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});
