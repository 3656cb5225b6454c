export { ApiError, StreamClosed, StreamRefused } from "./errors.js";
export { RestClient, RETRIED_STATUSES, type RateLimit, type RestClientOptions, type Time } from "./rest.js";
export { LiveStream, CHANNELS_PER_MESSAGE, FINAL_CLOSE_CODES, MAX_CHANNELS, STREAM_PATH, type LiveStreamOptions } from "./stream.js";
export { LiveEvent, SeqGap, SeqTracker, type AnyLiveEvent, type StreamItem } from "./tracker.js";
export { replay, ReplayedEvent, type AnyReplayedEvent, type ReplayOptions } from "./replay.js";
export type { SocketCloseEvent, SocketFactory, SocketLike, SocketMessageEvent } from "./socket.js";
export { DEFAULT_TOLERANCE_S, signPayload, verifySignature, type VerifyOptions } from "./webhooks.js";
export type * from "./types.js";
