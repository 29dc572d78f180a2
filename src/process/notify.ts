import fs from 'node:fs';
import { createSocket, type UnixDgramSocket } from 'unix-dgram';
import { hasCode, sysError, UsageError, ZiuError } from '../errors.js';
import type { Logger } from '../log.js';

// sockaddr_un.sun_path holds 108 bytes with the NUL; unix-dgram truncates silently.
const SUN_PATH_MAX = 107;

/** Bind the NOTIFY_SOCKET (unix datagram) a child's sd_notify messages come to; a stale one is replaced. */
export function bindNotify(path: string, what: string, log: Logger, onMessage: (msg: Buffer) => void): UnixDgramSocket {
  if (path.startsWith('@') || path.includes('\0')) {
    // unix-dgram copies the name with strncpy, which stops at the leading NUL of an abstract name.
    throw new UsageError(`notify socket '${path}' must be a filesystem path: abstract names cannot be bound here`);
  }
  if (Buffer.byteLength(path) > SUN_PATH_MAX) {
    throw new UsageError(`notify socket path '${path}' is longer than ${SUN_PATH_MAX} bytes (the limit of a unix socket address); use a shorter state directory`);
  }
  removeStaleSocket(path);
  const sock = createSocket('unix_dgram', onMessage);
  let bindErr: (Error & { errno?: number }) | undefined;
  const onBindError = (err: Error & { errno?: number }): void => {
    bindErr = err;
  };
  // unix-dgram reports a failed bind as an 'error' event emitted inside bind().
  sock.on('error', onBindError);
  sock.bind(path);
  sock.off('error', onBindError);
  if (bindErr !== undefined) {
    sock.close();
    const cause = typeof bindErr.errno === 'number' ? sysError(bindErr.errno, 'bind', { path }, bindErr) : bindErr;
    throw new ZiuError('ERR_ZIU_NOTIFY_SOCKET', `cannot bind the notify socket for the ${what}: ${cause.message}`, { cause });
  }
  sock.on('error', (err) => log.warn({ err, path }, 'notify socket error'));
  return sock;
}

/** Close the notify socket and remove its file; problems are only logged. */
export function closeNotify(sock: UnixDgramSocket, path: string, log: Logger): void {
  try {
    sock.close();
  } catch (err) {
    log.warn({ err, path }, 'closing the notify socket failed');
  }
  try {
    fs.unlinkSync(path);
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) log.warn({ err, path }, 'removing the notify socket failed');
  }
}

/** Remove a socket file left at path; anything else there is refused, not deleted. */
export function removeStaleSocket(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return;
    throw err;
  }
  // Left by a crashed orchestrator (the upgrade lock rules out a live one); anything else is not ours to delete.
  if (!st.isSocket()) throw new ZiuError('ERR_ZIU_NOTIFY_SOCKET', `notify socket path '${path}' exists and is not a socket; remove it or choose another path`);
  fs.unlinkSync(path);
}
