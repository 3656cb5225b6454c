// A WebSocket double driven by the test: it plays the gateway's side of the protocol on request.
import type { SocketFactory, SocketLike } from "../../src/index.js";

type Listener = (event: any) => void;

export interface FakeGatewayOptions {
  /** Whether sockets have ws's pause()/resume() (browsers' do not). */
  pausable?: boolean;
  /** Answer subscribe/unsubscribe at once (the default), as the gateway does. */
  autoAnswer?: boolean;
}

export interface Sent {
  action: string;
  channels: string[];
  resume?: Record<string, number>;
}

export class FakeGateway {
  readonly sockets: FakeSocket[] = [];
  /** Connections are refused (error, then close 1006) while this is true. */
  down = false;
  /** Channels a subscribe is refused for (INVALID_CHANNEL). */
  readonly invalid = new Set<string>();
  readonly pausable: boolean;
  autoAnswer: boolean;

  constructor(options: FakeGatewayOptions = {}) {
    this.pausable = options.pausable ?? true;
    this.autoAnswer = options.autoAnswer ?? true;
  }

  get WebSocket(): SocketFactory {
    const gateway = this;
    return class extends FakeSocket {
      constructor(url: string) {
        super(gateway, url);
      }
    };
  }

  get last(): FakeSocket {
    const socket = this.sockets.at(-1);
    if (!socket) throw new Error("no connection yet");
    return socket;
  }

  /** Waits until `count` connections were made and the last one is open. */
  async connections(count: number, withinMs = 2000): Promise<FakeSocket> {
    await until(() => this.sockets.length >= count && this.last.readyState === 1, withinMs, `${count} connections`);
    return this.last;
  }
}

export class FakeSocket implements SocketLike {
  readyState = 0;
  readonly sent: Sent[] = [];
  readonly closedWith: Array<[number | undefined, string | undefined]> = [];
  pauses = 0;
  resumes = 0;
  isPaused = false;
  pause?: () => void;
  resume?: () => void;
  private readonly listeners = new Map<string, Listener[]>();
  private held: unknown[] = [];

  constructor(
    readonly gateway: FakeGateway,
    readonly url: string,
  ) {
    gateway.sockets.push(this);
    if (gateway.pausable) {
      this.pause = () => {
        this.pauses++;
        this.isPaused = true;
      };
      this.resume = () => {
        this.resumes++;
        this.isPaused = false;
        for (const message of this.held.splice(0)) this.emit("message", { data: JSON.stringify(message) });
      };
    }
    setImmediate(() => {
      if (gateway.down) {
        this.readyState = 3;
        this.emit("error", new Error("refused"));
        this.emit("close", { code: 1006, reason: "" });
      } else {
        this.readyState = 1;
        this.emit("open", {});
      }
    });
  }

  addEventListener(type: string, listener: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  send(text: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    const message = JSON.parse(text) as Sent;
    this.sent.push(message);
    if (!this.gateway.autoAnswer) return;
    setImmediate(() => this.answer(message));
  }

  /** What the gateway answers to `message`. */
  answer(message: Sent): void {
    const refused = message.channels.filter((c) => this.gateway.invalid.has(c));
    if (message.action === "subscribe" && refused.length) {
      this.deliver({ type: "error", code: "INVALID_CHANNEL", message: `unknown channel ${refused[0]}` });
    } else {
      this.deliver({ type: `${message.action}d`, channels: message.channels });
    }
  }

  close(code?: number, reason?: string): void {
    this.closedWith.push([code, reason]);
    if (this.readyState === 3) return;
    this.readyState = 2;
    setImmediate(() => this.drop(code ?? 1005, reason ?? ""));
  }

  /** A message from the gateway (held while paused, as a socket that is not read). */
  deliver(message: unknown): void {
    if (this.readyState !== 1) return;
    if (this.isPaused) this.held.push(message);
    else this.emit("message", { data: JSON.stringify(message) });
  }

  event(channel: string, seq: number, price = `${seq}.5`): void {
    this.deliver({ type: "price_update", channel, seq, data: { price, symbol: "BTC-USD" } });
  }

  /** The connection ends with `code` (the gateway closed it, or it failed). */
  drop(code = 1006, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.emit("close", { code, reason });
  }

  subscribes(): Sent[] {
    return this.sent.filter((m) => m.action === "subscribe");
  }

  private emit(type: string, event: unknown): void {
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }
}

export async function until(check: () => boolean, withinMs: number, what: string): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** The next `count` items, within `withinMs`. */
export async function take<T>(iterator: { next(): Promise<IteratorResult<T>> }, count: number, withinMs = 2000): Promise<T[]> {
  const items: T[] = [];
  const deadline = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`only ${items.length} of ${count} items within ${withinMs} ms`)), withinMs).unref(),
  );
  while (items.length < count) {
    const result = await Promise.race([iterator.next(), deadline]);
    if (result.done) throw new Error(`the stream ended after ${items.length} of ${count} items`);
    items.push(result.value);
  }
  return items;
}
