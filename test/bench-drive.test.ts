import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { drive } from '../bench/stats.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Blocks the event loop, as a long GC pause or a descheduled process would. */
function stall(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

/**
 * The benchmark's request loop, shared by every driver. What it must get right is what it
 * counts: every request due in the measured window, with its latency from the moment it was
 * due, so that a stall shows in the percentiles instead of pausing the clock.
 */
describe('bench drive', { timeout: 30_000 }, () => {
  it('open loop: sends every request due in the window, and a stall delays all that fell due during it', async () => {
    let calls = 0;
    const result = await drive({ connections: 1, rate: 200, warmupMs: 200, durationMs: 1_000 }, async () => {
      calls++;
      // Inside the measured window: the loop stops for 300 ms while 60 more requests fall due.
      if (calls === 100) stall(300);
      await sleep(1);
      return 201;
    });
    // 200 per second for one second, whatever happened in between (a request or two at the
    // edges may fall either side of the window).
    assert.ok(result.requests >= 195 && result.requests <= 201, `requests ${result.requests}`);
    assert.equal(result.ok, result.requests);
    assert.deepEqual(result.statuses, { '201': result.requests });
    // About 60 requests came due during the stall, 40 of them at least 100 ms before it ended:
    // more than the slowest 5%. A loop that timed from sending would show one slow request.
    assert.ok(result.p95 >= 100, `p95 ${result.p95} ms`);
    assert.ok(result.max >= 300, `max ${result.max} ms`);
  });

  it('closed loop: each client sends its next request when the last is answered, and failures count as errors', async () => {
    let inFlight = 0;
    let mostInFlight = 0;
    let calls = 0;
    const result = await drive({ connections: 4, warmupMs: 100, durationMs: 500 }, async () => {
      inFlight++;
      mostInFlight = Math.max(mostInFlight, inFlight);
      await sleep(10);
      inFlight--;
      if (++calls % 10 === 0) throw new TypeError('refused');
      return 200;
    });
    assert.equal(mostInFlight, 4);
    assert.ok(result.requests > 0 && result.requests <= 4 * 50, `requests ${result.requests}`);
    assert.equal(result.errors, result.statuses['error:TypeError']);
    assert.ok(result.errors > 0);
    assert.equal(result.ok + result.errors, result.requests);
    // Throughput counts successes only.
    assert.equal(result.throughput, Math.round((result.ok / result.durationMs) * 1000));
    assert.ok(result.p50 >= 10, `p50 ${result.p50} ms`);
  });
});
