/** What the stream hands over and what it tracks per channel. No I/O. */
import type { EventData, EventType } from "./types.js";

/** `candle_close`, `trade_signal`, `price_update` or `indicator_update` on `channel` (the name it was subscribed as). */
export class LiveEvent<T extends EventType = EventType> {
  constructor(
    readonly type: T,
    readonly channel: string,
    readonly seq: number,
    readonly data: EventData[T],
  ) {}
}

/** One of the three event types, narrowed by `type` in a `switch`. */
export type AnyLiveEvent = { [K in EventType]: LiveEvent<K> }[EventType];

/** The events of `channel` after `afterSeq` and before `nextSeq` will never arrive. */
export class SeqGap {
  readonly type = "seq_gap" as const;

  constructor(
    readonly channel: string,
    readonly afterSeq: number,
    readonly nextSeq: number,
  ) {}
}

export type StreamItem = AnyLiveEvent | SeqGap;

/** For the stream, not the caller: subscribe `channel` again with `resume` to fetch a hole. */
export class Refill {
  constructor(readonly channel: string) {}
}

export const EVENT_TYPES: ReadonlySet<string> = new Set<EventType>([
  "candle_close",
  "trade_signal",
  "price_update",
  "indicator_update",
]);

export interface EventMessage {
  type: string;
  channel: string;
  seq: number;
  data?: unknown;
}

export interface ResumeGapMessage {
  channel: string;
  first_available_seq: number;
}

/**
 * The last seq handed over per channel: duplicates dropped, holes refilled or said.
 *
 * A jump in a channel's seqs asks for a `Refill` and, until the event right after the last one
 * arrives, drops that channel's events (the resumed subscription brings them again, in order). A
 * `resume_gap` from the gateway is a `SeqGap`: the replay then starts at its `first_available_seq`.
 */
export class SeqTracker {
  readonly last = new Map<string, number>();
  readonly refilling = new Set<string>();

  accept(message: EventMessage): Array<AnyLiveEvent | Refill> {
    const { channel } = message;
    const seq = Number(message.seq);
    const last = this.last.get(channel);
    if (last !== undefined && seq !== last + 1) {
      if (seq <= last || this.refilling.has(channel)) return []; // replayed twice, or past a hole the refill brings
      this.refilling.add(channel);
      return [new Refill(channel)];
    }
    this.refilling.delete(channel);
    this.last.set(channel, seq);
    const data = (message.data ?? {}) as EventData[EventType];
    return [new LiveEvent(message.type as EventType, channel, seq, data) as AnyLiveEvent];
  }

  /** The history did not reach back to the resume: the replay starts at `first_available_seq`. */
  resumeGap(message: ResumeGapMessage): SeqGap[] {
    const { channel } = message;
    const first = Number(message.first_available_seq);
    const last = this.last.get(channel);
    if (last === undefined || first <= last + 1) return [];
    this.last.set(channel, first - 1);
    return [new SeqGap(channel, last, first)];
  }

  /** A new connection resumes every channel from its last seq: no refill is pending any more. */
  resumed(): void {
    this.refilling.clear();
  }

  resumeOf(channels: Iterable<string>): Record<string, number> {
    const resume: Record<string, number> = {};
    for (const channel of channels) {
      const last = this.last.get(channel);
      if (last !== undefined) resume[channel] = last;
    }
    return resume;
  }

  forget(channels: Iterable<string>): void {
    for (const channel of channels) {
      this.last.delete(channel);
      this.refilling.delete(channel);
    }
  }
}
