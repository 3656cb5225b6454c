/** Exponential backoff with jitter: each wait is a random point in the upper half of the current step,
 * so clients that lost the same gateway at once do not come back at once. */
export class Backoff {
  private step: number;

  constructor(
    private readonly firstS: number,
    private readonly maxS: number,
    private readonly random: () => number = Math.random,
  ) {
    this.step = firstS;
  }

  /** The next wait in seconds; the step doubles up to the maximum. */
  next(): number {
    const wait = this.step * (0.5 + 0.5 * this.random());
    this.step = Math.min(this.step * 2, this.maxS);
    return wait;
  }

  reset(): void {
    this.step = this.firstS;
  }
}

export const sleep = (seconds: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, seconds * 1000)));
