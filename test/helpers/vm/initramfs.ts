import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { cpioNewc, type CpioEntry } from './cpio.js';
import type { GuestKernel } from './kernel.js';

/** The drivers the guest needs for a virtio-net-pci NIC; their dependencies come from modules.dep. */
export const GUEST_DRIVERS = ['virtio_pci', 'virtio_net'];

/** busybox-static's binary, or why there is none: the initramfs has no libc, so it must be static. */
export function findStaticBusybox(candidates = ['/bin/busybox', '/usr/bin/busybox']): string | { reason: string } {
  for (const p of candidates) {
    if (!fs.existsSync(p)) continue;
    const real = fs.realpathSync(p);
    // The ELF and program headers sit at the start.
    const head = Buffer.alloc(64 << 10);
    const fd = fs.openSync(real, 'r');
    const n = fs.readSync(fd, head, 0, head.length, 0);
    fs.closeSync(fd);
    if (isStaticElf(head.subarray(0, n))) return real;
    return { reason: `${p} is dynamically linked (install busybox-static)` };
  }
  return { reason: 'no busybox (install busybox-static)' };
}

/** An ELF executable without a PT_INTERP program header needs no dynamic loader. */
function isStaticElf(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  if (phoff + phnum * phentsize > elf.length) return false;
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === 3) return false;
  return true;
}

/**
 * The module files to load for `drivers`, dependencies first, from
 * modules.dep (whose lists are transitive). Drivers built into the kernel
 * (modules.builtin) need none.
 */
export function moduleLoadOrder(modulesDir: string, drivers: string[]): string[] {
  const dep = new Map<string, string[]>();
  for (const line of fs.readFileSync(path.join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m) dep.set(m[1]!, m[2]!.split(/\s+/).filter(Boolean));
  }
  const builtinFile = path.join(modulesDir, 'modules.builtin');
  const builtin = new Set(fs.existsSync(builtinFile) ? fs.readFileSync(builtinFile, 'utf8').split('\n').filter(Boolean).map(moduleName) : []);
  const byName = new Map([...dep.keys()].map((k) => [moduleName(k), k]));
  const order: string[] = [];
  const visit = (file: string): void => {
    if (order.includes(file)) return;
    // modules.dep lists a module's dependencies with the last to be loaded first.
    for (const d of [...(dep.get(file) ?? [])].reverse()) visit(d);
    order.push(file);
  };
  for (const driver of drivers) {
    if (builtin.has(driver)) continue;
    const file = byName.get(driver);
    if (!file) throw new Error(`the guest kernel has no ${driver} driver: neither built in nor in ${modulesDir}/modules.dep`);
    visit(file);
  }
  return order;
}

/** "kernel/drivers/net/virtio_net.ko.xz" -> "virtio_net" (modprobe treats - and _ alike). */
function moduleName(file: string): string {
  return path.basename(file).replace(/\.ko(\.(xz|gz|zst))?$/, '').replace(/-/g, '_');
}

/** A module's bytes, decompressed: busybox's insmod may not read .ko.xz, .ko.gz or .ko.zst. */
function moduleBytes(file: string): Buffer {
  const raw = fs.readFileSync(file);
  if (file.endsWith('.ko')) return raw;
  if (file.endsWith('.gz')) return zlib.gunzipSync(raw);
  if (file.endsWith('.xz')) return execFileSync('xz', ['-dc'], { input: raw, maxBuffer: 1 << 28 });
  if (file.endsWith('.zst')) return execFileSync('zstd', ['-dc'], { input: raw, maxBuffer: 1 << 28 });
  throw new Error(`unknown module compression: ${file}`);
}

/**
 * The guest's /init (busybox ash). It loads the NIC's modules, brings eth0
 * up with the address from `ziu.ip=` on the kernel command line, prints
 * @@READY <uptime>@@ and then runs each line read from the serial console,
 * without echo, for as long as the console is open.
 */
export function initScript(modules: string[]): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${modules.join(' ')}; do insmod /lib/modules/$m.ko || echo "@@INSMOD-FAILED $m@@"; done
for a in $(cat /proc/cmdline); do case $a in ziu.ip=*) addr=\${a#ziu.ip=};; esac; done
ip link set lo up
ip link set eth0 up && ip addr add "$addr" dev eth0 || echo "@@NO-ETH0@@"
exec </dev/ttyS0 >/dev/ttyS0 2>&1
stty -echo
echo "@@READY $(cut -d' ' -f1 /proc/uptime)@@"
while read -r line; do eval "$line"; done
poweroff -f
`;
}

export interface Initramfs {
  path: string;
  bytes: number;
  /** the modules /init loads, in order */
  modules: string[];
}

/** Write the guest's initramfs (uncompressed newc cpio) to `dir`: busybox, /init, the NIC's modules, /dev/console. */
export function buildInitramfs(k: GuestKernel, busybox: string, dir: string): Initramfs {
  const files = moduleLoadOrder(k.modulesDir, GUEST_DRIVERS);
  const modules = files.map(moduleName);
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'proc', 'sys', 'tmp', 'lib', 'lib/modules'].map((p): CpioEntry => ({ type: 'dir', path: p })),
    // The kernel opens /dev/console for init's stdio before any devtmpfs is mounted.
    { type: 'char', path: 'dev/console', major: 5, minor: 1 },
    { type: 'file', path: 'bin/busybox', data: fs.readFileSync(busybox), mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'file', path: 'init', data: Buffer.from(initScript(modules)), mode: 0o755 },
    ...files.map((f, i): CpioEntry => ({ type: 'file', path: `lib/modules/${modules[i]}.ko`, data: moduleBytes(path.join(k.modulesDir, f)) })),
  ];
  const archive = cpioNewc(entries);
  const out = path.join(dir, 'initramfs.cpio');
  fs.writeFileSync(out, archive);
  return { path: out, bytes: archive.length, modules };
}
