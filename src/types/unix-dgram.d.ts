// The part of unix-dgram (no bundled types) that ziu uses.
declare module 'unix-dgram' {
  import type { EventEmitter } from 'node:events';

  export interface UnixDgramSocket extends EventEmitter {
    bind(path: string): void;
    connect(path: string): void;
    send(buf: Buffer, callback?: (err?: Error) => void): void;
    send(buf: Buffer, offset: number, length: number, path: string, callback?: (err?: Error) => void): void;
    close(): void;
    on(event: 'message', listener: (msg: Buffer, rinfo: { path?: string; size: number }) => void): this;
    on(event: 'error', listener: (err: Error & { code?: string; errno?: number }) => void): this;
    on(event: 'listening' | 'connect' | 'writable', listener: () => void): this;
    on(event: 'congestion', listener: (buf: Buffer) => void): this;
  }

  export function createSocket(
    type: 'unix_dgram',
    listener?: (msg: Buffer, rinfo: { path?: string; size: number }) => void,
  ): UnixDgramSocket;
}
