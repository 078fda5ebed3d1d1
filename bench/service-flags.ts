import { readFileSync } from 'node:fs';

/**
 * The node flags the service runs with, as `npm start` gives them (package.json
 * config.node_flags), so that the benchmark and the chaos run start the service exactly as it
 * is started in production.
 */
export function serviceNodeFlags(): string[] {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { config?: { node_flags?: string } };
  return (pkg.config?.node_flags ?? '').split(' ').filter(Boolean);
}
