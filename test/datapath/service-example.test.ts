import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkConfig, readConfigFile } from '../../src/datapath/config.js';
import { tempDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const unitText = fs.readFileSync(path.join(root, 'examples', 'ziu-datapath.service'), 'utf8');

/** Each key of the [Service] section and its values, in order. */
function serviceKeys(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const section = text.slice(text.indexOf('[Service]'), text.indexOf('[Install]'));
  for (const line of section.split('\n')) {
    const m = /^(\w+)=(.*)$/.exec(line);
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

describe('examples/ziu-datapath.service and examples/datapath.yaml', () => {
  it('the config file is one ziu-datapath accepts', () => {
    const c = checkConfig(readConfigFile(path.join(root, 'examples', 'datapath.yaml')));
    expect(c).toMatchObject({ control: '/run/ziu/dp.sock', memFiles: ['/dev/hugepages-ziu-2M/ziu-dp/packets'], worker: { cpus: [1], priority: 50 } });
    expect(c.vhostUser.map((v) => v.mode)).toEqual(['server', 'client']);
  });

  it('the unit is Type=notify with NotifyAccess=all, runs from the config file, and reloads by ziu upgrade --new <binary> on the same control socket', () => {
    const k = serviceKeys(unitText);
    expect(k.get('Type')).toEqual(['notify']);
    expect(k.get('NotifyAccess')).toEqual(['all']);
    expect(k.get('RuntimeDirectory')).toEqual(['ziu']);
    expect(k.get('ExecStart')).toEqual(['/usr/bin/ziu-datapath --config /etc/ziu/datapath.yaml']);
    const control = checkConfig(readConfigFile(path.join(root, 'examples', 'datapath.yaml'))).control;
    expect(control.startsWith('/run/ziu/')).toBe(true);
    expect(k.get('ExecReload')).toEqual([expect.stringMatching(new RegExp(`^/usr/bin/ziu upgrade --control ${control} --new /usr/bin/ziu-datapath( |$)`))]);
    expect(k.get('ExecStopPost')).toEqual(['/usr/bin/ziu memfile remove --unused']);
    // The first instance's memory is the file the config names.
    expect(k.get('ExecStartPre')).toEqual([expect.stringContaining('ziu memfile create ziu-dp/packets ')]);
    expect(k.has('Delegate')).toBe(false);
  });

  const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  const why = analyze.error ? `systemd-analyze not found (${analyze.error.message})` : null;
  if (why) console.warn(`skipping systemd-analyze verify of the example unit: ${why}`);
  it.skipIf(why !== null)('systemd-analyze verify finds nothing wrong with the unit (binaries stand-ins: ziu is not installed in /usr/bin here)', () => {
    const t = tempDir('ziu-unit-');
    try {
      const file = path.join(t.dir, 'ziu-datapath.service');
      fs.writeFileSync(file, unitText.replace(/\/usr\/bin\/ziu(-datapath)?(?=\s)/g, '/bin/true'));
      const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
      expect(r.stderr.trim(), r.stderr).toBe('');
      expect(r.status).toBe(0);
    } finally {
      t.remove();
    }
  });
});
