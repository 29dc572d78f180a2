import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OPS, type Op } from '../../src/handover/messages/index.js';
import { encodeControl } from '../../src/control/protocol.js';

/** A body as it crosses the control socket: encoded to JSON text and parsed back. */
function wire(doc: Record<string, unknown>): unknown {
  return JSON.parse(encodeControl(doc).subarray(4).toString('utf8'));
}

describe('handover messages: typed, encoded and validated in one place', () => {
  it('every request and reply survives the wire unchanged', () => {
    const samples: { [K in Op]?: { request?: unknown; reply: unknown } } = {
      hello: {
        reply: { protocol: 1, datapath: 'ziu-datapath', version: '0.1.0', stateFormats: { export: [1, 2], import: [1, 2] }, instance: 'dp', pid: 42, role: 'active', control: '/run/dp.sock', worker: null, launch: { args: ['--config', 'dp.yaml'], cwd: '/etc/ziu', notifySocket: '/run/systemd/notify' } },
      },
      export: { request: { format: 2, upgradeId: 'u1' }, reply: { format: 2, state: { format: 2, control: '/c', vhostUser: {}, taps: {} }, fds: ['control/listener', 'handover/baton'] } },
      import: { request: { format: 1, state: {}, upgradeId: 'u1', worker: null, fds: ['a/socket'] }, reply: { devices: ['a', 'b'] } },
      freeze: {
        request: { deadManMs: 200 },
        reply: { frozenNs: 0x1b2f3c4d5e6fn, rings: { a: [{ q: 0, lastAvail: 7, usedIdx: 7, started: true }, { q: 1, lastAvail: 0, usedIdx: null, started: false }] }, changed: { format: 2, state: {}, fds: ['c/listener'] }, signalled: false },
      },
      resume: { request: { changed: null, fds: [] }, reply: { thawedNs: 5n, firstPassNs: 0n, takenOver: true } },
      thaw: { request: { force: true }, reply: { thawed: true, thawedNs: 99n, role: 'active' } },
      commit: { request: {}, reply: { role: 'active', control: '/run/dp.sock', mainPidNotified: null } },
      abort: { request: {}, reply: { role: 'standby' } },
      shutdown: { request: {}, reply: { stopping: true } },
    };
    for (const [op, s] of Object.entries(samples) as Array<[Op, { request?: unknown; reply: unknown }]>) {
      const codec = OPS[op] as { request: { encode(v: unknown): Record<string, unknown>; decode(d: unknown): unknown }; reply: { encode(v: unknown): Record<string, unknown>; decode(d: unknown): unknown } };
      if (s.request !== undefined) expect(codec.request.decode(wire(codec.request.encode(s.request))), `${op} request`).toEqual(s.request);
      expect(codec.reply.decode(wire(codec.reply.encode(s.reply))), `${op} reply`).toEqual(s.reply);
    }
  });

  it('a reply that is not what the protocol says is refused, naming the field', () => {
    expect(() => OPS.resume.reply.decode({ thawedNs: '0x10', firstPassNs: 12.5, takenOver: true })).toThrow('resume reply.firstPassNs: expected a u64');
    expect(() => OPS.freeze.reply.decode({ frozenNs: '0x1', rings: { a: [{ q: 0, lastAvail: -1, usedIdx: 0, started: true }] }, changed: null, signalled: true })).toThrow(
      'freeze reply.rings.a.list[0].lastAvail: expected a non-negative integer',
    );
    expect(() => OPS.hello.reply.decode({ protocol: 1, version: '1', stateFormats: { export: [1] } })).toThrow('hello reply.stateFormats.import: missing');
    const hello = { protocol: 1, version: '1', stateFormats: { export: [1], import: [1] }, instance: 'dp', pid: 42, role: 'active', control: '/c' };
    expect(OPS.hello.reply.decode(hello)).toMatchObject({ worker: null, launch: null });
    expect(() => OPS.hello.reply.decode({ ...hello, launch: { args: ['--config', 'x'], cwd: 'etc' } })).toThrow('hello reply.launch.cwd: expected an absolute path');
    expect(() => OPS.hello.reply.decode({ ...hello, launch: { args: [1], cwd: '/' } })).toThrow('hello reply.launch.args: expected a list of strings');
    expect(() => OPS.export.reply.decode({ format: 7, state: {}, fds: [] })).toThrow(expect.objectContaining({ code: 'ERR_ZIU_STATE_FORMAT' }));
    expect(() => OPS.import.request.decode({ format: 1, state: {}, fds: [3] })).toThrow(expect.objectContaining({ code: 'ERR_ZIU_CONTROL_BAD_MESSAGE' }));
    expect(() => OPS.freeze.request.decode({ deadManMs: 0 })).toThrow('at least 1 ms');
  });

  it('docs/handover-protocol.md describes exactly these messages: every op has a section, every field it documents exists and every field exists in the page', () => {
    const page = fs.readFileSync(new URL('../../docs/handover-protocol.md', import.meta.url), 'utf8');
    const messages = page.slice(page.indexOf('## 5. Messages'), page.indexOf('## 6. fd names'));
    const sections = new Map<string, string>();
    for (const part of messages.split(/^### /m).slice(1)) sections.set(part.slice(0, part.indexOf(' ')), part);
    expect([...sections.keys()].sort()).toEqual(Object.keys(OPS).sort());
    for (const [op, text] of sections) {
      const codec = OPS[op as Op];
      const fields = new Set([...codec.request.fields, ...codec.reply.fields]);
      // Fields the page's tables list for this op.
      const tables = [...text.matchAll(/^\| field \|[^]*?(?=\n\n|$)/gm)].map((m) => m[0]);
      const documented = tables.flatMap((t) => [...t.matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]!));
      for (const f of documented) expect(fields, `docs: ${op} documents '${f}'`).toContain(f);
      // Keys of the request and reply examples.
      for (const m of text.matchAll(/\{"(?:op|ok)":[^\n`]*\}/g)) {
        for (const k of m[0].matchAll(/[{,]\s*"(\w+)":/g)) {
          const key = k[1]!;
          if (key === 'op' || key === 'ok' || key === 'error') continue;
          // top-level keys only: nested objects' keys are checked by their own codec
          if (fields.has(key) || !topLevel(m[0], k.index!)) continue;
          expect.fail(`docs: the ${op} example has a field '${key}' no codec knows`);
        }
      }
      // Every field the code speaks is named in the op's section, in prose or in an example.
      for (const f of fields) expect(text.includes(`\`${f}\``) || text.includes(`"${f}":`), `docs: ${op} never names '${f}'`).toBe(true);
    }
  });
});

/** True when the key at `at` sits at depth 1 of the JSON text. */
function topLevel(json: string, at: number): boolean {
  let depth = 0;
  for (let i = 0; i <= at; i++) {
    if (json[i] === '{' || json[i] === '[') depth++;
    else if (json[i] === '}' || json[i] === ']') depth--;
  }
  return depth === 1;
}
