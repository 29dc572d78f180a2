import { pino, destination, stdTimeFunctions, type Logger } from 'pino';

// One root logger writing JSON lines to stderr (stdout carries results).
// Level from ZIU_LOG_LEVEL; 'silent' turns logs off, e.g. in tests.
let context: () => Record<string, unknown> = () => ({});

const root: Logger = pino(
  {
    base: { pid: process.pid },
    mixin: () => context(),
    level: process.env['ZIU_LOG_LEVEL'] ?? 'info',
    timestamp: stdTimeFunctions.isoTime,
  },
  destination({ fd: 2, sync: true }),
);

/** The logger for one component ('hugepages', 'memfile', 'upgrade', ...). */
export function logger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ component, ...bindings });
}

/**
 * Fields every log line of this process carries while `fields` says so,
 * e.g. a datapath's upgrade id while it takes part in an upgrade.
 */
export function setLogContext(fields: () => Record<string, unknown>): void {
  context = fields;
}

export type { Logger };
