import { createSocket } from 'unix-dgram';

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
  notify(fields: Record<string, string | number>): Promise<boolean> {
    const path = this.path;
    if (path === null) return Promise.resolve(false);
    const msg = Buffer.from(
      Object.entries(fields)
        .map(([k, v]) => `${k}=${v}`)
        .join('\n'),
    );
    return new Promise((resolve) => {
      const sock = createSocket('unix_dgram');
      let done = false;
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        sock.close();
        resolve(!err);
      };
      sock.on('error', finish);
      sock.send(msg, 0, msg.length, path, finish);
    });
  }
}
