import { pino, destination, stdTimeFunctions, type Logger } from 'pino';

// One root logger writing JSON lines to stderr (stdout carries results).
// Level from ZIU_LOG_LEVEL; 'silent' turns logs off, e.g. in tests.
const root: Logger = pino(
  {
    base: { pid: process.pid },
    level: process.env['ZIU_LOG_LEVEL'] ?? 'info',
    timestamp: stdTimeFunctions.isoTime,
  },
  destination({ fd: 2, sync: true }),
);

/** The logger for one component ('hugepages', 'memfile', 'upgrade', ...). */
export function logger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ component, ...bindings });
}

export type { Logger };
