/**
 * A task that runs on a schedule and on demand, never twice at once in this process: a run
 * asked for while one is going joins it. `stop` ends the schedule and waits for a run in
 * progress. The timer does not keep the process alive.
 */
export class Periodic<T> {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<T> | undefined;

  constructor(
    private readonly task: () => Promise<T>,
    /** A scheduled run that fails is reported here; the next one retries. */
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Runs `task` (by default the scheduled one) unless a run is going, which is joined instead. */
  run(task: () => Promise<T> = this.task): Promise<T> {
    this.running ??= task().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Runs every `intervalMs`; 0 or less schedules nothing. */
  start(intervalMs: number): void {
    if (intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => void this.run().catch(this.onError), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }
}
