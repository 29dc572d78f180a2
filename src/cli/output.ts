import { snakeCase } from '../snake-case.js';

/** Where a command's result goes: stdout, as JSON or as lines for a person. */
export interface Output {
  json: boolean;
  /** print the result: a JSON document, or the human lines */
  result(doc: unknown, human: () => string[]): void;
}

export function output(json: boolean): Output {
  return {
    json,
    result(doc, human) {
      if (json) process.stdout.write(`${JSON.stringify(snakeCase(doc), null, 2)}\n`);
      else for (const line of human()) process.stdout.write(`${line}\n`);
    },
  };
}

/** Fixed-width columns for human output. */
export function table(header: string[], rows: Array<Array<string | number>>): string[] {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
}
