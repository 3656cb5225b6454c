/**
 * A client of the WebSocket gateway's `/public/v1/stream` that reconnects and resumes.
 *
 *     const stream = await LiveStream.connect("ws://127.0.0.1:8001", apiKey);
 *     await stream.subscribe("candles:BTC-USD:1m", "prices:BTC-USD");
 *     for await (const item of stream) {
 *       if (item instanceof SeqGap) { ... }  // item.afterSeq < seq < item.nextSeq are gone for good
 *       else console.log(item.type, item.channel, item.seq, item.data);
 *     }
 *
 * It ports the Python SDK's `perseus_sdk.stream.LiveStream`:
 *
 * - **Reconnects** after every drop that retrying can fix (network, gateway restart, 4008, 4009, 4029,
 *   1013), with backoff and jitter from 0.1 s up to `maxBackoffS`, and subscribes again with `resume` =
 *   the last `seq` it handed over per channel, so the gateway replays exactly what was missed.
 * - **Exactly once, holes refilled**: events a resume brings twice are dropped. When a channel's seqs
 *   jump on an open connection (the gateway skipped events while this client read too slowly), the
 *   channel is subscribed again with `resume` and the missed events are handed over in order; only
 *   what the history no longer holds reaches the caller, as one `SeqGap` before the next event.
 * - **Limits of the protocol**: subscribes go in messages of at most 20 channels; more than 50
 *   channels throw a `RangeError` here.
 * - **Final closes end it**: 4001 (key missing, invalid or revoked) and 1009 throw `StreamClosed` from
 *   the iterator and from waiting calls. A refused subscribe throws `StreamRefused`; the stream goes on.
 *
 * A consumer that stops reading: once `buffer` items wait, the socket stops reading (`ws`'s `pause()`),
 * so the gateway skips events and closes with 4009, and the reconnect resumes from the last event
 * handed over, as the Python SDK does. A WebSocket that cannot pause (browsers, Node 22's global one)
 * is closed by the client instead, and opened again with `resume` once the consumer has caught up to
 * half the buffer: memory stays bounded either way, and nothing is lost silently.
 *
 * Differences from the Python SDK, where a runtime forces them: the key goes as `?apiKey=` (a
 * browser's WebSocket cannot set headers), and a connection that receives nothing, not even the
 * gateway's 30 s heartbeat, for `idleTimeoutS` is taken as dead (a browser cannot send pings).
 */
import { Backoff } from "./backoff.js";
import { StreamClosed, StreamRefused } from "./errors.js";
import { defaultSocket, OPEN, textOf, type SocketFactory, type SocketLike } from "./socket.js";
import { EVENT_TYPES, Refill, SeqTracker, type EventMessage, type ResumeGapMessage, type StreamItem } from "./tracker.js";

export const STREAM_PATH = "/public/v1/stream";
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([4001, 1009]);
export const CHANNELS_PER_MESSAGE = 20;
export const MAX_CHANNELS = 50;
const ANSWER_TYPES: ReadonlySet<string> = new Set(["subscribed", "unsubscribed", "error"]);
const FIRST_BACKOFF_S = 0.1;
// A close code of the application range: the client closes a connection it gave up on.
const CLIENT_GAVE_UP = 4000;

export interface LiveStreamOptions {
  /** The longest wait between reconnect attempts (default 30). */
  maxBackoffS?: number;
  /** Items held for a consumer that reads slower than they come (default 10,000). */
  buffer?: number;
  /** The WebSocket class (default: the global one, else the `ws` package). Tests pass fakes. */
  WebSocket?: SocketFactory;
  /** Last seqs seen per channel, saved from `positions()` earlier: subscribing them resumes there. */
  resume?: Record<string, number>;
  /** How long one connection attempt may take (default 10). */
  openTimeoutS?: number;
  /** A connection silent this long is taken as dead and replaced (default 75; heartbeats come every 30). */
  idleTimeoutS?: number;
}

interface Answer {
  type: string;
  code?: string;
  message?: string;
  channels?: string[];
}

interface Pending {
  resolve(answer: Answer): void;
  reject(error: Error): void;
}

/** The connection a message went out on was lost before its answer came. */
class Dropped extends Error {}

/** One WebSocket connection and the answers it still owes, in order (the gateway answers each message). */
class Connection {
  readonly answers: Pending[] = [];
  paused = false;
  idle: ReturnType<typeof setTimeout> | undefined;
  seen = 0; // when the last message came (ms)

  constructor(readonly ws: SocketLike) {}
}

/** A level that can be waited for: connected, or ended for good. */
class Signal {
  private isSet = false;
  private waiters: Array<() => void> = [];

  set(): void {
    this.isSet = true;
    for (const wake of this.waiters.splice(0)) wake();
  }

  clear(): void {
    this.isSet = false;
  }

  wait(): Promise<void> {
    return this.isSet ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** A FIFO without `Array.shift`'s copying on long queues. */
class Queue<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

export class LiveStream implements AsyncIterable<StreamItem> {
  /** Connections opened after the first one. */
  reconnects = 0;

  private readonly url: string;
  private readonly maxBackoffS: number;
  private readonly buffer: number;
  private readonly openTimeoutS: number;
  private readonly idleTimeoutS: number;
  private factory: SocketFactory | undefined;
  private readonly tracker = new SeqTracker();
  private readonly subscribed = new Set<string>(); // acknowledged, in order
  private readonly items = new Queue<StreamItem>();
  private readonly readers: Array<{ resolve(r: IteratorResult<StreamItem>): void; reject(e: Error): void }> = [];
  private readonly ready = new Signal();
  private readonly backoff: Backoff;
  private conn: Connection | null = null;
  private final: StreamClosed | null = null;
  private suspended = false; // closed by this client because the consumer is behind (no pause())
  private retry: ReturnType<typeof setTimeout> | undefined;

  /** Connects once (a wrong address fails here); later drops are retried. */
  static async connect(url: string, apiKey: string, options: LiveStreamOptions = {}): Promise<LiveStream> {
    const stream = new LiveStream(url, apiKey, options);
    await stream.open();
    return stream;
  }

  constructor(url: string, apiKey: string, options: LiveStreamOptions = {}) {
    this.url = `${url.replace(/\/+$/, "")}${STREAM_PATH}?apiKey=${encodeURIComponent(apiKey)}`;
    this.maxBackoffS = options.maxBackoffS ?? 30;
    this.buffer = Math.max(1, options.buffer ?? 10_000);
    this.openTimeoutS = options.openTimeoutS ?? 10;
    this.idleTimeoutS = options.idleTimeoutS ?? 75;
    this.factory = options.WebSocket;
    this.backoff = new Backoff(FIRST_BACKOFF_S, this.maxBackoffS);
    for (const [channel, seq] of Object.entries(options.resume ?? {})) this.tracker.last.set(channel, seq);
  }

  /** The channels subscribed, in order. */
  get channels(): string[] {
    return [...this.subscribed];
  }

  /** The last seq handed over per subscribed channel: pass it as `resume` to carry on from there later. */
  positions(): Record<string, number> {
    return this.tracker.resumeOf(this.subscribed);
  }

  /** Subscribe (resuming channels seen before); throws `StreamRefused` when the gateway refuses. */
  async subscribe(...channels: string[]): Promise<void> {
    const adding = [...new Set(channels)].filter((c) => !this.subscribed.has(c));
    if (this.subscribed.size + adding.length > MAX_CHANNELS) {
      throw new RangeError(`a connection holds at most ${MAX_CHANNELS} channels`);
    }
    for (const chunk of chunks(adding)) {
      await this.ask("subscribe", chunk);
      for (const channel of chunk) this.subscribed.add(channel);
    }
  }

  async unsubscribe(...channels: string[]): Promise<void> {
    const leaving = [...new Set(channels)].filter((c) => this.subscribed.has(c));
    for (const channel of leaving) this.subscribed.delete(channel); // a reconnect from now on does not bring them back
    this.tracker.forget(leaving);
    for (const chunk of chunks(leaving)) await this.ask("unsubscribe", chunk);
  }

  /** Ends the stream: iterators finish once they have taken what was received, waiting calls throw. */
  close(): void {
    const conn = this.conn;
    if (conn !== null) {
      this.dropped(conn);
      closeQuietly(conn.ws, 1000, "closed by the client");
    }
    this.end(new StreamClosed(1000, "closed by the client"));
  }

  /** Iterating does not close the stream when the loop is left (`break`): call `close()`. */
  [Symbol.asyncIterator](): AsyncIterator<StreamItem> {
    return { next: () => this.next() };
  }

  /** The next event or gap; waits for one. */
  next(): Promise<IteratorResult<StreamItem>> {
    const item = this.items.shift();
    if (item !== undefined) {
      this.drained();
      return Promise.resolve({ value: item, done: false });
    }
    if (this.final !== null) return this.stop(this.final);
    return new Promise((resolve, reject) => this.readers.push({ resolve, reject }));
  }

  // --- the connection --------------------------------------------------------------------------

  /** Open a connection and subscribe again to every channel, resumed where the caller is. */
  private async open(): Promise<void> {
    this.factory ??= await defaultSocket();
    const Factory = this.factory;
    await new Promise<void>((resolve, reject) => {
      const conn = new Connection(new Factory(this.url));
      let settled = false;
      const fail = (error: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        closeQuietly(conn.ws, 1000, "not opened");
        reject(error);
      };
      const timer = setTimeout(() => fail(new Error(`no connection to ${redacted(this.url)} within ${this.openTimeoutS} s`)), this.openTimeoutS * 1000);
      conn.ws.addEventListener("open", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (this.final !== null) {
          closeQuietly(conn.ws, 1000, "closed by the client");
          reject(this.final);
          return;
        }
        this.attach(conn);
        resolve();
      });
      conn.ws.addEventListener("error", () => fail(new Error(`cannot connect to ${redacted(this.url)}`)));
      conn.ws.addEventListener("close", (event) => {
        if (!settled) fail(new Error(`closed before it opened (${event.code} ${event.reason})`));
        else this.closed(conn, event.code, event.reason);
      });
      conn.ws.addEventListener("message", (event) => this.received(conn, event.data));
    });
  }

  private attach(conn: Connection): void {
    this.conn = conn;
    this.tracker.resumed();
    for (const chunk of chunks([...this.subscribed])) this.resubscribe(conn, chunk);
    this.ready.set();
    this.watch(conn);
    if (this.items.length >= this.buffer) this.throttle();
  }

  /** The gateway closed `conn` (or it failed): retry unless the close is final. */
  private closed(conn: Connection, code: number, reason: string): void {
    if (this.conn !== conn) return; // already given up on
    this.dropped(conn);
    if (this.final !== null) return;
    if (FINAL_CLOSE_CODES.has(code)) {
      this.end(new StreamClosed(code, reason));
      return;
    }
    if (!this.suspended) this.reconnect(this.backoff.next());
  }

  /** Forget `conn`: what it still owed fails as dropped, so waiting calls ask again on the next one. */
  private dropped(conn: Connection): void {
    if (this.conn === conn) {
      this.conn = null;
      if (this.final === null) this.ready.clear(); // ended: waiting calls must wake up and throw
    }
    clearTimeout(conn.idle);
    for (const pending of conn.answers.splice(0)) pending.reject(new Dropped());
  }

  /** Close `conn` from this side and carry on as if the gateway had dropped it. */
  private abandon(conn: Connection, reason: string): void {
    closeQuietly(conn.ws, CLIENT_GAVE_UP, reason);
    this.closed(conn, CLIENT_GAVE_UP, reason);
  }

  private reconnect(waitS: number): void {
    clearTimeout(this.retry);
    this.retry = setTimeout(() => {
      if (this.final !== null || this.conn !== null) return;
      this.open().then(
        () => {
          this.reconnects += 1;
          this.backoff.reset();
        },
        () => {
          if (this.final === null) this.reconnect(this.backoff.next());
        },
      );
    }, waitS * 1000);
  }

  /** A silent connection is taken as dead: the gateway's heartbeat comes every 30 s. One timer per
   * connection, re-armed for what is left when it fires, not one per message. */
  private watch(conn: Connection): void {
    clearTimeout(conn.idle);
    if (conn.paused) return; // silent because this client stopped reading, not because it is dead
    conn.seen = Date.now();
    const limitMs = this.idleTimeoutS * 1000;
    const arm = (ms: number): void => {
      conn.idle = setTimeout(() => {
        const quiet = Date.now() - conn.seen;
        if (quiet >= limitMs) this.abandon(conn, `nothing received for ${this.idleTimeoutS} s`);
        else arm(limitMs - quiet);
      }, ms);
    };
    arm(limitMs);
  }

  private received(conn: Connection, data: unknown): void {
    if (this.conn !== conn) return;
    conn.seen = Date.now();
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(textOf(data)) as Record<string, unknown>;
    } catch {
      return; // not JSON: nothing the protocol sends
    }
    const kind = typeof message.type === "string" ? message.type : "";
    if (EVENT_TYPES.has(kind)) {
      for (const item of this.tracker.accept(message as unknown as EventMessage)) {
        if (item instanceof Refill) this.refill(conn, item.channel);
        else this.hand(item);
      }
    } else if (kind === "resume_gap") {
      for (const gap of this.tracker.resumeGap(message as unknown as ResumeGapMessage)) this.hand(gap);
    } else if (ANSWER_TYPES.has(kind)) {
      conn.answers.shift()?.resolve(message as unknown as Answer);
    }
    // heartbeats need nothing more: any message re-arms the idle watch above
  }

  // --- the consumer ----------------------------------------------------------------------------

  private hand(item: StreamItem): void {
    const reader = this.readers.shift();
    if (reader !== undefined) {
      reader.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
    if (this.items.length >= this.buffer) this.throttle();
  }

  /** The consumer is `buffer` items behind: stop reading until it catches up. */
  private throttle(): void {
    const conn = this.conn;
    if (conn === null || conn.paused) return;
    if (conn.ws.pause !== undefined && conn.ws.resume !== undefined) {
      conn.ws.pause();
      conn.paused = true;
      clearTimeout(conn.idle);
      return;
    }
    this.suspended = true; // no reconnect until drained(): the resume then brings what was missed
    this.abandon(conn, "the consumer is behind; resuming later");
  }

  private drained(): void {
    if (this.items.length > this.buffer / 2) return;
    const conn = this.conn;
    if (conn?.paused) {
      conn.paused = false;
      conn.ws.resume?.();
      this.watch(conn);
    }
    if (this.suspended) {
      this.suspended = false;
      if (this.final === null && this.conn === null) this.reconnect(0);
    }
  }

  private end(final: StreamClosed): void {
    if (this.final !== null) return;
    this.final = final;
    clearTimeout(this.retry);
    this.ready.set();
    for (const reader of this.readers.splice(0)) this.stop(final).then(reader.resolve, reader.reject);
  }

  private stop(final: StreamClosed): Promise<IteratorResult<StreamItem>> {
    return final.code === 1000 ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(final);
  }

  // --- messages and answers --------------------------------------------------------------------

  /** Send `message` on `conn`; its answer (the gateway answers every message, in order). */
  private expect(conn: Connection, message: object): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      conn.answers.push({ resolve, reject });
      try {
        conn.ws.send(JSON.stringify(message));
      } catch {
        // a socket that cannot send is closing: its close event fails the answer as dropped
      }
    });
  }

  private message(action: "subscribe" | "unsubscribe", channels: string[]): object {
    const resume = action === "subscribe" ? this.tracker.resumeOf(channels) : {};
    return Object.keys(resume).length ? { action, channels, resume } : { action, channels };
  }

  /** Send on the current connection and wait for the answer, again on the next one if it drops first. */
  private async ask(action: "subscribe" | "unsubscribe", channels: string[]): Promise<Answer> {
    for (;;) {
      await this.ready.wait();
      if (this.final !== null) throw this.final;
      const conn = this.conn;
      if (conn === null || conn.ws.readyState !== OPEN) {
        // dropped, or closing (a close frame came; its close event follows once the socket ends): wait a
        // timer turn, not a microtask, so the socket's I/O runs and the close (final or not) is seen
        await new Promise((resolve) => setTimeout(resolve, 10));
        continue;
      }
      let answer: Answer;
      try {
        answer = await this.expect(conn, this.message(action, channels));
      } catch (error) {
        if (error instanceof Dropped) continue;
        throw error;
      }
      if (answer.type === "error") throw new StreamRefused(answer.code ?? "ERROR", answer.message ?? "refused");
      return answer;
    }
  }

  private refill(conn: Connection, channel: string): void {
    if (!this.subscribed.has(channel)) return; // not while the caller is leaving it
    this.expect(conn, this.message("unsubscribe", [channel])).catch(() => undefined);
    this.resubscribe(conn, [channel]);
  }

  /** Subscribe again, resuming from the last seqs handed over; a refusal drops the connection to retry. */
  private resubscribe(conn: Connection, channels: string[]): void {
    this.expect(conn, this.message("subscribe", channels)).then(
      (answer) => {
        if (answer.type === "error") this.abandon(conn, "resubscribe refused"); // refused what it accepted before
      },
      () => undefined, // dropped again: the next connection subscribes again
    );
  }
}

function chunks(channels: string[]): string[][] {
  const out: string[][] = [];
  for (let i = 0; i < channels.length; i += CHANNELS_PER_MESSAGE) out.push(channels.slice(i, i + CHANNELS_PER_MESSAGE));
  return out;
}

function closeQuietly(ws: SocketLike, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // already closed, or still connecting in an implementation that refuses that
  }
}

function redacted(url: string): string {
  return url.replace(/apiKey=[^&]*/, "apiKey=…");
}
