import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/tmp.js';
import { cpioNewc } from '../helpers/vm/cpio.js';
import { findStaticBusybox, moduleLoadOrder } from '../helpers/vm/initramfs.js';

const noCpio = spawnSync('cpio', ['--version']).error ? 'no GNU cpio to read the archive back' : null;
if (noCpio) console.log(`skipping the cpio read-back: ${noCpio}`);

describe('initramfs parts', () => {
  let tmp: { dir: string; remove: () => void } | null = null;
  afterEach(() => {
    tmp?.remove();
    tmp = null;
  });

  it.skipIf(noCpio !== null)('a newc archive that cpio lists and extracts: directories, files with their modes, a symlink, a device node', () => {
    tmp = tempDir('ziu-cpio-');
    const archive = cpioNewc([
      { type: 'dir', path: 'bin' },
      { type: 'file', path: 'bin/tool', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
      // sizes and names of every length mod 4, to exercise the padding
      { type: 'file', path: 'a', data: Buffer.from('x') },
      { type: 'file', path: 'bb', data: Buffer.from('yy') },
      { type: 'file', path: 'ccc', data: Buffer.from('zzz') },
      { type: 'file', path: 'empty', data: Buffer.alloc(0) },
      { type: 'symlink', path: 'bin/sh', target: 'tool' },
      { type: 'dir', path: 'dev' },
      { type: 'char', path: 'dev/console', major: 5, minor: 1 },
    ]);
    expect(archive.length % 4).toBe(0);
    const file = path.join(tmp.dir, 'a.cpio');
    fs.writeFileSync(file, archive);
    const listing = execFileSync('cpio', ['-itv', '-F', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(listing).toMatch(/^crw------- .* 5,\s+1 .* dev\/console$/m);
    expect(listing).toMatch(/^lrwxrwxrwx .* bin\/sh -> tool$/m);
    const out = path.join(tmp.dir, 'out');
    fs.mkdirSync(out);
    // Everything but the device node (making one needs root; the kernel makes it at boot).
    execFileSync('cpio', ['-id', '-F', file, '-f', 'dev/console'], { cwd: out, stdio: 'ignore' });
    expect(fs.readFileSync(path.join(out, 'bin/tool'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
    expect(fs.statSync(path.join(out, 'bin/tool')).mode & 0o777).toBe(0o755);
    expect(fs.readlinkSync(path.join(out, 'bin/sh'))).toBe('tool');
    expect(['a', 'bb', 'ccc', 'empty'].map((f) => fs.readFileSync(path.join(out, f), 'utf8'))).toEqual(['x', 'yy', 'zzz', '']);
  });

  it('cpio refuses names it could not unpack where they belong', () => {
    expect(() => cpioNewc([{ type: 'dir', path: '' }])).toThrow("cpio: bad entry name ''");
  });

  it('modules load dependencies first, from modules.dep; built-in drivers need none; a missing one is named', () => {
    tmp = tempDir('ziu-modules-');
    fs.writeFileSync(
      path.join(tmp.dir, 'modules.dep'),
      [
        'kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz',
        'kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz',
        'kernel/net/core/failover.ko.xz:',
        'kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz',
        'kernel/drivers/virtio/virtio_ring.ko.xz:',
        'kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz',
        'kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:',
        '',
      ].join('\n'),
    );
    expect(moduleLoadOrder(tmp.dir, ['virtio_pci', 'virtio_net']).map((f) => path.basename(f))).toEqual([
      'virtio_ring.ko.xz',
      'virtio.ko.xz',
      'virtio_pci_modern_dev.ko.xz',
      'virtio_pci.ko.xz',
      'failover.ko.xz',
      'net_failover.ko.xz',
      'virtio_net.ko.xz',
    ]);
    fs.writeFileSync(path.join(tmp.dir, 'modules.builtin'), 'kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n');
    expect(moduleLoadOrder(tmp.dir, ['virtio_pci']).map((f) => path.basename(f))).toEqual([]);
    expect(() => moduleLoadOrder(tmp!.dir, ['e1000'])).toThrow(`the guest kernel has no e1000 driver: neither built in nor in ${tmp.dir}/modules.dep`);
  });

  it('busybox must be static: a dynamically linked one is refused, saying what to install', () => {
    const dynamic = process.execPath;
    expect(findStaticBusybox([dynamic])).toEqual({ reason: `${dynamic} is dynamically linked (install busybox-static)` });
    expect(findStaticBusybox(['/nonexistent/busybox'])).toEqual({ reason: 'no busybox (install busybox-static)' });
  });
});
