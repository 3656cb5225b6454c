/**
 * `replay()`: stored history of one prices, candles or signals channel played back over the stream (issue 21).
 *
 *     for await (const event of replay("ws://127.0.0.1:8001", apiKey, "prices:BTC-USD", start, end)) {
 *       console.log(event.data.timestamp, event.data.price);
 *     }
 *
 * One connection of its own per replay. Events are the live envelopes with `replay: true` and no
 * `seq`; the data carries the original times. It ends after the last event of the range
 * (`replay_done`); a refused request throws `StreamRefused` with the gateway's code, a replay the
 * gateway cut short throws it with `REPLAY_FAILED`, a closed connection `StreamClosed`. Leaving the
 * loop early closes the connection, which stops the replay.
 */
import { StreamClosed, StreamRefused } from "./errors.js";
import { defaultSocket, textOf, type SocketFactory } from "./socket.js";
import { STREAM_PATH } from "./stream.js";
import { EVENT_TYPES } from "./tracker.js";
import type { EventData, EventType } from "./types.js";

/** A stored event played back by `replay()`: the live envelope's type, channel and data. */
export class ReplayedEvent<T extends EventType = EventType> {
  readonly replay = true as const;

  constructor(
    readonly type: T,
    readonly channel: string,
    readonly data: EventData[T],
  ) {}
}

export type AnyReplayedEvent = { [K in EventType]: ReplayedEvent<K> }[EventType];

export interface ReplayOptions {
  /** A multiple of real time, or "max" (the default): as fast as the events are read. */
  speed?: number | "max";
  /** The WebSocket implementation (the global one, else the `ws` package). */
  WebSocket?: SocketFactory;
}

type Outcome = { message: Record<string, unknown> } | { error: Error } | { end: true };

/** The events of `channel` with times in `start <= t < end` (epoch milliseconds, ISO 8601 or Dates). */
export async function* replay(
  url: string,
  apiKey: string,
  channel: string,
  start: number | string | Date,
  end: number | string | Date,
  options: ReplayOptions = {},
): AsyncGenerator<AnyReplayedEvent, void, undefined> {
  const Factory = options.WebSocket ?? (await defaultSocket());
  const ws = new Factory(`${url.replace(/\/+$/, "")}${STREAM_PATH}?apiKey=${encodeURIComponent(apiKey)}`);
  const queue: Outcome[] = [];
  let wake: (() => void) | null = null;
  const push = (outcome: Outcome): void => {
    queue.push(outcome);
    wake?.();
    wake = null;
  };
  const time = (value: number | string | Date): number | string => (value instanceof Date ? value.getTime() : value);
  ws.addEventListener("open", () => {
    const request = { action: "replay", channel, start: time(start), end: time(end), speed: options.speed ?? "max" };
    ws.send(JSON.stringify(request));
  });
  ws.addEventListener("message", (event) => push({ message: JSON.parse(textOf(event.data)) as Record<string, unknown> }));
  ws.addEventListener("close", (event) => push({ error: new StreamClosed(event.code, event.reason) }));
  ws.addEventListener("error", () => undefined); // the close event follows
  try {
    for (;;) {
      while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      const outcome = queue.shift()!;
      if ("error" in outcome) throw outcome.error;
      if ("end" in outcome) return;
      const message = outcome.message;
      const kind = String(message.type);
      if (EVENT_TYPES.has(kind) && message.replay === true) {
        yield new ReplayedEvent(kind as EventType, String(message.channel), message.data as never) as AnyReplayedEvent;
      } else if (kind === "error") {
        throw new StreamRefused(String(message.code), String(message.message));
      } else if (kind === "replay_done") {
        return;
      } else if (kind === "replay_stopped") {
        throw new StreamRefused("REPLAY_FAILED", String(message.error ?? "the replay was stopped"));
      }
    }
  } finally {
    try {
      ws.close(1000, "replay over");
    } catch {
      // closing a socket that never opened
    }
  }
}
