/**
 * A small HTTP/1.1 client for the load generator: keep-alive connections, one request in
 * flight on each, requests queued in order when every connection is busy. It does only what
 * the load generator needs (status codes; bodies framed by Content-Length or chunked, read and
 * dropped), and so costs a fraction of a general client's CPU per request: on 2 cores the load
 * generator shares the machine with what it measures, and every cycle it spends is taken from
 * the service and PostgreSQL.
 */
import { connect, type Socket } from 'node:net';

export interface Request {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

interface Waiting {
  bytes: Buffer;
  resolve: (status: number) => void;
  reject: (error: Error) => void;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/** Reads one response at a time from a connection's bytes. */
class ResponseParser {
  private buffer: Buffer = Buffer.alloc(0);
  private status = 0;
  /** Bytes of body still to come (Content-Length), or -1 while reading chunked framing. */
  private remaining: number | undefined;
  private closeAfter = false;

  /** Feeds bytes; returns the finished response's status and whether the server will close, or undefined. */
  push(chunk: Buffer): { status: number; close: boolean } | undefined {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    if (this.remaining === undefined) {
      const end = this.buffer.indexOf(CRLFCRLF);
      if (end < 0) return undefined;
      const head = this.buffer.toString('latin1', 0, end).split('\r\n');
      const statusLine = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]!);
      if (!statusLine) throw new Error(`not an HTTP/1.1 status line: ${JSON.stringify(head[0])}`);
      this.status = Number(statusLine[1]);
      let length: number | undefined;
      let chunked = false;
      this.closeAfter = head[0]!.startsWith('HTTP/1.0');
      for (const line of head.slice(1)) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim().toLowerCase();
        if (name === 'content-length') length = Number(value);
        else if (name === 'transfer-encoding') chunked = value.split(',').some((v) => v.trim() === 'chunked');
        else if (name === 'connection') this.closeAfter = value === 'close';
      }
      this.buffer = this.buffer.subarray(end + 4);
      if (chunked) this.remaining = -1;
      else if (length !== undefined && Number.isSafeInteger(length) && length >= 0) this.remaining = length;
      else throw new Error('a response without Content-Length or chunked framing');
    }
    return this.remaining === -1 ? this.chunks() : this.fixed();
  }

  private fixed(): { status: number; close: boolean } | undefined {
    if (this.buffer.length < this.remaining!) return undefined;
    if (this.buffer.length > this.remaining!) throw new Error('bytes after the response: the server answered what was not asked');
    return this.done();
  }

  /** Skips whole chunks; the last (size 0) and its trailer section end the response. */
  private chunks(): { status: number; close: boolean } | undefined {
    for (;;) {
      const lineEnd = this.buffer.indexOf('\r\n');
      if (lineEnd < 0) return undefined;
      const size = parseInt(this.buffer.toString('latin1', 0, lineEnd), 16);
      if (!Number.isSafeInteger(size) || size < 0) throw new Error('bad chunk size');
      if (size === 0) {
        const trailerEnd = this.buffer.indexOf('\r\n', lineEnd + 2);
        if (trailerEnd < 0) return undefined;
        // No trailers: the line after the last chunk is empty.
        if (trailerEnd !== lineEnd + 2) {
          const end = this.buffer.indexOf(CRLFCRLF, lineEnd);
          if (end < 0) return undefined;
          this.buffer = this.buffer.subarray(end + 4);
        } else {
          this.buffer = this.buffer.subarray(trailerEnd + 2);
        }
        if (this.buffer.length > 0) throw new Error('bytes after the response: the server answered what was not asked');
        return this.done();
      }
      if (this.buffer.length < lineEnd + 2 + size + 2) return undefined;
      this.buffer = this.buffer.subarray(lineEnd + 2 + size + 2);
    }
  }

  private done(): { status: number; close: boolean } {
    this.buffer = Buffer.alloc(0);
    this.remaining = undefined;
    return { status: this.status, close: this.closeAfter };
  }
}

class Connection {
  private socket: Socket | undefined;
  private parser = new ResponseParser();
  private current: Waiting | undefined;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly released: (connection: Connection) => void,
  ) {}

  send(waiting: Waiting): void {
    this.current = waiting;
    if (!this.socket) this.open();
    this.socket!.write(waiting.bytes);
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  private open(): void {
    const socket = connect({ host: this.host, port: this.port, noDelay: true });
    this.socket = socket;
    this.parser = new ResponseParser();
    socket.on('data', (chunk: Buffer) => {
      if (socket !== this.socket) return;
      let finished: { status: number; close: boolean } | undefined;
      try {
        if (!this.current) throw new Error('bytes from the server with no request in flight');
        finished = this.parser.push(chunk);
      } catch (error) {
        this.fail(error as Error);
        return;
      }
      if (!finished) return;
      const waiting = this.current!;
      this.current = undefined;
      if (finished.close) this.close();
      waiting.resolve(finished.status);
      this.released(this);
    });
    // Events of a socket this connection has already closed (and perhaps replaced) are stale.
    socket.on('error', (error) => socket === this.socket && this.fail(error));
    socket.on('close', () => socket === this.socket && this.fail(new Error('the server closed the connection')));
  }

  private fail(error: Error): void {
    if (this.socket) this.close();
    const waiting = this.current;
    this.current = undefined;
    if (!waiting) return;
    waiting.reject(error);
    this.released(this);
  }
}

/** Keep-alive connections to one server; `request` resolves to the response's status code. */
export class HttpPool {
  private readonly idle: Connection[] = [];
  private readonly all: Connection[] = [];
  private readonly queue: Waiting[] = [];
  private readonly hostHeader: string;

  constructor(url: string, connections: number) {
    const { hostname, port, protocol } = new URL(url);
    if (protocol !== 'http:') throw new Error(`${url}: only http is supported`);
    this.hostHeader = `${hostname}:${port}`;
    for (let i = 0; i < connections; i++) {
      const connection = new Connection(hostname, Number(port), (c) => this.release(c));
      this.all.push(connection);
      this.idle.push(connection);
    }
    // The first connections opened are used first, as a general pool would.
    this.idle.reverse();
  }

  request(request: Request): Promise<number> {
    let head = `${request.method} ${request.path} HTTP/1.1\r\nhost: ${this.hostHeader}\r\n`;
    for (const [name, value] of Object.entries(request.headers)) head += `${name}: ${value}\r\n`;
    const body = request.body ?? '';
    if (request.body !== undefined) head += `content-length: ${Buffer.byteLength(body)}\r\n`;
    const bytes = Buffer.from(`${head}\r\n${body}`);
    return new Promise((resolve, reject) => {
      const waiting = { bytes, resolve, reject };
      const connection = this.idle.pop();
      if (connection) connection.send(waiting);
      else this.queue.push(waiting);
    });
  }

  close(): void {
    for (const connection of this.all) connection.close();
  }

  private release(connection: Connection): void {
    const next = this.queue.shift();
    if (next) connection.send(next);
    else this.idle.push(connection);
  }
}
