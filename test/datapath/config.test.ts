import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkConfig, parseTap, parseVhostUser, readConfigFile } from '../../src/datapath/config.js';
import { tempDir } from '../helpers/tmp.js';

describe('datapath configuration', () => {
  it('parses --vhost-user with server (default) and client modes', () => {
    expect(parseVhostUser('vm1=/run/ziu/vm1.sock')).toEqual({ name: 'vm1', path: '/run/ziu/vm1.sock', mode: 'server' });
    expect(parseVhostUser('vm2=/tmp/a,b.sock,client')).toEqual({ name: 'vm2', path: '/tmp/a,b.sock', mode: 'client' });
  });

  it.each([
    ['vm1', "--vhost-user 'vm1': use <name>=<socket path>[,server|client]"],
    ['=/tmp/x', "--vhost-user '=/tmp/x': use <name>=<socket path>[,server|client]"],
    ['v m=/tmp/x', "--vhost-user 'v m=/tmp/x': port name 'v m' must be 1-32 of [A-Za-z0-9._-]"],
    [`vm=/${'x'.repeat(120)}`, `socket path '/${'x'.repeat(120)}' is 121 bytes; unix sockets allow at most 107`],
  ])('refuses --vhost-user %j', (text, message) => {
    expect(() => parseVhostUser(text)).toThrow(message);
  });

  it('parses and refuses --tap', () => {
    expect(parseTap('up=ziu-tap0')).toEqual({ name: 'up', ifname: 'ziu-tap0' });
    expect(() => parseTap('up=this-name-is-too-long')).toThrow("--tap 'up=this-name-is-too-long': use <name>=<interface name>");
  });

  it('checks the whole configuration and names the problem', () => {
    const base = { control: '/tmp/c.sock', memFiles: ['/dev/shm/m'], vhostUser: [parseVhostUser('a=/tmp/a.sock')] };
    expect(checkConfig(base)).toMatchObject({ control: '/tmp/c.sock', macEntries: 4096, taps: [] });
    expect(() => checkConfig({ ...base, control: undefined })).toThrow('--control <path> is required');
    expect(() => checkConfig({ ...base, memFiles: [] })).toThrow('at least one --mem-file is required');
    expect(() => checkConfig({ ...base, vhostUser: [] })).toThrow('no ports: give --vhost-user and/or --tap');
    expect(() => checkConfig({ ...base, vhostUser: [parseVhostUser('a=/tmp/a.sock'), parseVhostUser('a=/tmp/b.sock')] })).toThrow(
      "port name 'a' is used twice",
    );
    expect(() => checkConfig({ ...base, vhostUser: [parseVhostUser('a=/tmp/c.sock')] })).toThrow("socket path '/tmp/c.sock' is used twice");
    expect(() => checkConfig({ ...base, instance: '../x' })).toThrow("instance name '../x' contains '..'");
  });

  it('reads the same settings from YAML and JSON files, refusing unknown fields', () => {
    const t = tempDir();
    try {
      const y = path.join(t.dir, 'dp.yaml');
      fs.writeFileSync(y, 'control: /tmp/c.sock\nmemFiles: [/dev/shm/m]\nvhostUser:\n  - vm1=/tmp/vm1.sock\n  - { name: vm2, path: /tmp/vm2.sock, mode: client }\n');
      expect(checkConfig(readConfigFile(y)).vhostUser).toEqual([
        { name: 'vm1', path: '/tmp/vm1.sock', mode: 'server' },
        { name: 'vm2', path: '/tmp/vm2.sock', mode: 'client' },
      ]);
      const j = path.join(t.dir, 'dp.json');
      fs.writeFileSync(j, JSON.stringify({ control: '/tmp/c.sock', memfiles: [] }));
      expect(() => readConfigFile(j)).toThrow(`config file '${j}': unknown field 'memfiles'`);
    } finally {
      t.remove();
    }
  });
});
