import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { HttpPool } from '../bench/http-client.js';

/**
 * The benchmark's HTTP client against a raw TCP server that writes its answers byte by byte
 * where it likes: every framing the client claims to read, split at awkward places.
 */
describe('bench HTTP client', { timeout: 20_000 }, () => {
  let server: Server;
  let url: string;
  const seen: string[] = [];
  const sockets = new Set<Socket>();

  // Each answer is sent in pieces, with a pause between them, so the client sees partial heads and bodies.
  const answers: Record<string, { pieces: string[]; close?: boolean }> = {
    '/length': { pieces: ['HTTP/1.1 201 Created\r\nContent-Le', 'ngth: 11\r\n\r\nhello', ' world'] },
    '/chunked': { pieces: ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel', 'lo\r\n6\r\n world\r\n0\r', '\n\r\n'] },
    '/trailers': { pieces: ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n', '\r\n'] },
    '/empty': { pieces: ['HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n'] },
    '/close': { pieces: ['HTTP/1.1 409 Conflict\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno'], close: true },
    '/unframed': { pieces: ['HTTP/1.1 200 OK\r\n\r\nbody'] },
  };

  before(async () => {
    server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      let buffer = '';
      // Answers go out in order, each whole before the next begins, as HTTP/1.1 requires.
      let answering = Promise.resolve();
      socket.on('data', (chunk) => {
        buffer += chunk.toString('latin1');
        answering = answering.then(answerAll);
      });
      const answerAll = async () => {
        for (;;) {
          const end = buffer.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buffer.slice(0, end);
          const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
          if (buffer.length < end + 4 + length) return;
          seen.push(buffer.slice(0, end + 4 + length));
          buffer = buffer.slice(end + 4 + length);
          const path = head.split(' ')[1]!;
          const answer = answers[path]!;
          for (const piece of answer.pieces) {
            socket.write(piece);
            await new Promise((r) => setTimeout(r, 5));
          }
          if (answer.close) socket.end();
        }
      };
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  it('reads Content-Length and chunked answers (with trailers) split anywhere, on one kept-alive connection', async () => {
    const pool = new HttpPool(url, 1);
    try {
      assert.equal(await pool.request({ method: 'POST', path: '/length', headers: { 'content-type': 'application/json' }, body: '{"a":"é"}' }), 201);
      assert.equal(await pool.request({ method: 'GET', path: '/chunked', headers: {} }), 200);
      assert.equal(await pool.request({ method: 'GET', path: '/trailers', headers: {} }), 200);
      assert.equal(await pool.request({ method: 'GET', path: '/empty', headers: { authorization: 'Bearer t' } }), 204);
      assert.equal(sockets.size, 1, 'every request went over the one connection');
      // The body's length is counted in bytes, not characters.
      assert.match(seen[0]!, /^POST \/length HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\ncontent-type: application\/json\r\ncontent-length: 10\r\n\r\n\{"a":"/);
    } finally {
      pool.close();
    }
  });

  it('queues requests beyond its connections and answers each in turn; reconnects after Connection: close', async () => {
    const pool = new HttpPool(url, 2);
    try {
      const paths = ['/length', '/chunked', '/close', '/empty', '/length', '/trailers', '/close', '/chunked'];
      const statuses = await Promise.all(paths.map((path) => pool.request({ method: 'GET', path, headers: {} })));
      assert.deepEqual(statuses, [201, 200, 409, 204, 201, 200, 409, 200]);
    } finally {
      pool.close();
    }
  });

  it('refuses an answer it cannot frame instead of guessing, and carries on', async () => {
    const pool = new HttpPool(url, 1);
    try {
      await assert.rejects(pool.request({ method: 'GET', path: '/unframed', headers: {} }), /without Content-Length or chunked/);
      assert.equal(await pool.request({ method: 'GET', path: '/empty', headers: {} }), 204);
    } finally {
      pool.close();
    }
  });
});
