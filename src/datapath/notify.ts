import os from 'node:os';
import { createSocket } from 'unix-dgram';

const { ENOENT, ECONNREFUSED } = os.constants.errno;

/**
 * Readiness as systemd's sd_notify: newline-separated KEY=VALUE datagrams to
 * the unix datagram socket named by $NOTIFY_SOCKET (READY=1, STATUS=...,
 * STOPPING=1). Without NOTIFY_SOCKET it does nothing, as sd_notify does. The
 * orchestrator owns the socket, so a datagram that cannot be delivered only
 * means nobody is waiting for it any more.
 */
export class Notifier {
  readonly path: string | null;

  constructor(env: NodeJS.ProcessEnv = process.env) {
    const p = env['NOTIFY_SOCKET'];
    // An abstract socket ('@name') is spelled with a leading NUL on the wire.
    this.path = p ? (p.startsWith('@') ? `\0${p.slice(1)}` : p) : null;
  }

  /** A notifier for this socket path (as NOTIFY_SOCKET spells it); null: one that sends nothing. */
  static to(socket: string | null): Notifier {
    return new Notifier(socket ? { NOTIFY_SOCKET: socket } : {});
  }

  /** Resolves true once the datagram is in the socket's queue; false if it could not be sent (never rejects). */
  async notify(fields: Record<string, string | number>): Promise<boolean> {
    return (await this.send(fields)) === 'sent';
  }

  /**
   * As notify, saying why not: 'absent' when nobody listens on the socket
   * (ENOENT, ECONNREFUSED: the launcher that waited for our readiness is
   * gone, and no service manager, whose socket lives as long as it does,
   * is behind it), 'failed' for anything else (a full queue among them).
   */
  async send(fields: Record<string, string | number>): Promise<'sent' | 'absent' | 'failed'> {
    const path = this.path;
    if (path === null) return 'absent';
    const msg = Buffer.from(
      Object.entries(fields)
        .map(([k, v]) => `${k}=${v}`)
        .join('\n'),
    );
    return new Promise((resolve) => {
      const sock = createSocket('unix_dgram');
      let done = false;
      const finish = (err?: Error & { code?: unknown }): void => {
        if (done) return;
        done = true;
        sock.close();
        const errno = typeof err?.code === 'number' ? Math.abs(err.code) : null;
        resolve(!err ? 'sent' : errno === ENOENT || errno === ECONNREFUSED || err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? 'absent' : 'failed');
      };
      sock.on('error', finish);
      sock.send(msg, 0, msg.length, path, finish);
    });
  }
}
