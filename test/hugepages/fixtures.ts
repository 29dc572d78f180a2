// Shared /proc texts for the hugepage tests, with the arithmetic spelled out
// where a test asserts on it.

/**
 * Node 0: DMA ignored; DMA32 order 9 = 2, order 10 = 752 -> 2 + 752*2 = 1506;
 * Normal order 9 = 25, order 10 = 57 -> 25 + 114 = 139; 1645 2M blocks.
 * Max-order bytes: (752 + 57) x 4 MiB = 3236 MiB.
 * Node 1: Normal 4 + 10*2 = 24, Movable 1 + 2*2 = 5; 29 2M blocks, (10 + 2) x 4 MiB = 48 MiB.
 * Tabs and trailing spaces as some kernels and editors leave them.
 */
export const BUDDYINFO = [
  'Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 ',
  'Node 0, zone    DMA32      1      1      4      2      5      4      3      3      4      2    752 ',
  'Node 0, zone   Normal   1244   2787    604   1112    834    380    195     98     45     25     57 ',
  'Node 1, zone   Normal    100     50     20     10      5      3      2      1      7      4     10',
  'Node 1, zone\tMovable\t0 0 0 0 0 0 0 0 0 1 2   ',
  '',
].join('\n');

export const MOUNTS = [
  'sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0',
  'hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0',
  'nodev /mnt/huge\\0401g hugetlbfs rw,relatime,pagesize=1024M 0 0',
  'none /mnt/plain hugetlbfs rw,relatime 0 0',
  'tmpfs /run tmpfs rw,nosuid,nodev,size=3263752k,mode=755 0 0',
  '',
].join('\n');

export const MEMINFO_1G_DEFAULT = 'MemTotal:       16318760 kB\nHugepagesize:    1048576 kB\n';
