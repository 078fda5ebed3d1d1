import { spawn, spawnSync } from 'node:child_process';
import { freePort } from './free-port.js';

export interface RedisServer {
  url: string;
  /** Kills the server at once, as a crash would. */
  kill(): void;
}

export function redisInstalled(): boolean {
  return spawnSync('redis-server', ['--version']).status === 0;
}

/** A throwaway redis-server on a free loopback port, nothing persisted; resolves once it answers PING. */
export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const server = { url: `redis://127.0.0.1:${port}`, kill: () => void child.kill('SIGKILL') };
  for (let i = 0; i < 200; i++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping']).stdout?.toString().trim() === 'PONG') return server;
    await new Promise((r) => setTimeout(r, 50));
  }
  server.kill();
  throw new Error('redis-server did not start');
}
