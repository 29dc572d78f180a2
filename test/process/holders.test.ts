import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fileId, processesHolding, processRef, waitGone } from '../../src/process/index.js';
import { tempDir } from '../helpers/tmp.js';

const MAP_FILE = path.resolve(import.meta.dirname, '..', 'fixtures', 'map-file.mjs');

describe('processesHolding: who keeps an unlinked file alive', () => {
  let tmp: ReturnType<typeof tempDir>;
  const children: ChildProcess[] = [];
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
    tmp.remove();
  });

  it('finds a process that maps the file and one that holds it open, also after unlink, and nobody once they exit', async () => {
    const file = path.join(tmp.dir, 'mem');
    fs.writeFileSync(file, Buffer.alloc(16384));
    const id = fileId(fs.statSync(file, { bigint: true }));
    expect(processesHolding(id)).toEqual([]);

    const mapper = spawn('node', [MAP_FILE, file], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(mapper);
    await once(mapper.stdout!, 'data');
    const fd = fs.openSync(file, 'r');
    const opener = spawn('sleep', ['60'], { stdio: [fd, 'ignore', 'ignore'] });
    fs.closeSync(fd); // the child's copy is the one that counts
    children.push(opener);
    await new Promise((r) => setTimeout(r, 100));
    fs.unlinkSync(file);

    const held = processesHolding(id).sort((a, b) => a.pid - b.pid);
    expect(held).toEqual([processRef(mapper.pid!), processRef(opener.pid!)].sort((a, b) => a!.pid - b!.pid));

    mapper.stdin!.end();
    opener.kill('SIGKILL');
    expect(await waitGone(mapper.pid!, 5000)).toBe(true);
    expect(await waitGone(opener.pid!, 5000)).toBe(true);
    expect(processesHolding(id)).toEqual([]);
  });
});
