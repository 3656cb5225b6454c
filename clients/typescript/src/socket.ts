/**
 * The WebSocket the stream uses: the WHATWG one (browsers, Node 22+) or the `ws` package (Node 20,
 * which has no global `WebSocket`). Only what both provide is used, plus `pause()`/`resume()` when
 * the implementation has them (`ws` does), so a consumer that stops reading stops the socket too.
 */

export interface SocketMessageEvent {
  data: unknown;
}

export interface SocketCloseEvent {
  code: number;
  reason: string;
}

export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open", listener: () => void): void;
  addEventListener(type: "message", listener: (event: SocketMessageEvent) => void): void;
  addEventListener(type: "close", listener: (event: SocketCloseEvent) => void): void;
  addEventListener(type: "error", listener: (event: unknown) => void): void;
  /** Stop reading from the network (the `ws` package); absent in browsers. */
  pause?: () => void;
  resume?: () => void;
}

export type SocketFactory = new (url: string) => SocketLike;

export const OPEN = 1;

let found: Promise<SocketFactory> | null = null;

/** The global `WebSocket`, else the `ws` package (an optional peer dependency), loaded once. */
export function defaultSocket(): Promise<SocketFactory> {
  const global = (globalThis as { WebSocket?: SocketFactory }).WebSocket;
  if (global !== undefined) return Promise.resolve(global);
  found ??= loadWs();
  return found;
}

async function loadWs(): Promise<SocketFactory> {
  // A name in a variable: bundlers for browsers must not try to resolve it (browsers have a WebSocket).
  const name = "ws";
  try {
    const module = (await import(name)) as { WebSocket?: SocketFactory; default?: SocketFactory };
    const factory = module.WebSocket ?? module.default;
    if (factory) return factory;
  } catch {
    // said below
  }
  found = null; // installing it later must work without a restart
  throw new Error("no WebSocket: this runtime has no global WebSocket (Node 20); install the `ws` package");
}

/** The text of a message event, whatever the implementation delivers (string, Buffer, ArrayBuffer). */
export function textOf(data: unknown): string {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  if (Array.isArray(data)) return data.map(textOf).join(""); // ws's fragments
  return String(data);
}
