// LiveStream against a running stack: the Python SDK's fault tests. Each test publishes on a fresh
// symbol's price channel (through ingest), so it knows exactly which seqs and prices must arrive.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LiveEvent, LiveStream, SeqGap, StreamClosed, StreamRefused, replay, type AnyLiveEvent, type StreamItem } from "../../src/index.js";
import { take } from "../support/fake-socket.js";
import { API_KEY, NO_STACK, RESTART_CMD, WS_URL, feedSource, freshSymbol, ingest, restartWsGateway, sleep, wsMetric } from "../support/stack.js";

const READ_MS = 30_000;

// A symbol exists once a price was ingested for it (the gateway refuses channels of unknown symbols), so
// one price is ingested before anyone subscribes: its event (the channel's first seq) reaches no test stream.
async function freshChannel(): Promise<{ symbol: string; channel: string }> {
  const symbol = freshSymbol();
  await ingest(symbol, ["0.25"]);
  return { symbol, channel: `prices:${await feedSource()}:${symbol}` };
}

function events(items: StreamItem[]): AnyLiveEvent[] {
  return items.map((item) => {
    assert.ok(item instanceof LiveEvent, `an event, not ${JSON.stringify(item)}`);
    return item as AnyLiveEvent;
  });
}

const consecutive = (seqs: number[]): boolean => seqs.every((s, i) => i === 0 || s === seqs[i - 1]! + 1);

test("a gateway restart loses nothing and repeats nothing", { skip: NO_STACK || (!RESTART_CMD && "set PERSEUS_WS_RESTART_CMD to a command that restarts the WebSocket gateway") }, async () => {
  const { symbol, channel } = await freshChannel();
  const stream = await LiveStream.connect(WS_URL, API_KEY, { maxBackoffS: 0.5 });
  try {
    await stream.subscribe(channel);
    await ingest(symbol, [1, 2, 3]);
    const before = events(await take(stream, 3, READ_MS));
    await restartWsGateway();
    await ingest(symbol, [4, 5, 6]); // while the gateway is down or starting
    const missed = events(await take(stream, 3, READ_MS)); // replayed from the history once reconnected
    await ingest(symbol, [7, 8]);
    const live = events(await take(stream, 2, READ_MS));
    const received = [...before, ...missed, ...live];
    assert.ok(received.every((e) => e.channel === channel && e.type === "price_update"));
    assert.deepEqual(received.map((e) => e.type === "price_update" && e.data.price), [1, 2, 3, 4, 5, 6, 7, 8].map((p) => `${p}.5`));
    assert.ok(consecutive(received.map((e) => e.seq)));
    assert.ok(stream.reconnects >= 1, "the gateway was restarted: the stream reconnected");
  } finally {
    stream.close();
  }
});

test("a consumer that stops reading is closed with 4009, then resumes with nothing lost silently", { skip: NO_STACK }, async () => {
  const { symbol, channel } = await freshChannel();
  const stream = await LiveStream.connect(WS_URL, API_KEY, { buffer: 1, maxBackoffS: 0.5 });
  try {
    await stream.subscribe(channel);
    await ingest(symbol, [1]);
    const [first] = events(await take(stream, 1, READ_MS));
    const skipped = await wsMetric("perseus_ws_skipped_events_total");
    const slowCloses = await wsMetric("perseus_ws_slow_closes_total");
    // The consumer reads nothing from here: the stream stops reading the socket, the gateway's buffer
    // for it fills, it skips events, then (after its grace) closes the connection with 4009. Events go
    // out quickly until the skipping starts, then slowly: the resume after the 4009 replays what was
    // skipped, which must stay within what the gateway replays on a subscribe (5,000 events).
    let published = 0;
    const deadline = Date.now() + 120_000;
    const next = (count: number): string[] => Array.from({ length: count }, (_, i) => `${published + i + 2}.25`);
    while ((await wsMetric("perseus_ws_skipped_events_total")) === skipped) {
      assert.ok(Date.now() < deadline, `nothing skipped after ${published} events`);
      published += await ingest(symbol, next(200));
    }
    while ((await wsMetric("perseus_ws_slow_closes_total")) === slowCloses) {
      assert.ok(Date.now() < deadline, `no 4009 after ${published} events`);
      published += await ingest(symbol, next(20));
      await sleep(100);
    }
    published += await ingest(symbol, ["0.5"]); // one more, after the close: live again once resumed
    const last = first!.seq + published;
    // Reads again: every seq up to the last arrives as an event or inside one SeqGap, in order.
    let expected = first!.seq + 1;
    let gaps = 0;
    const started = Date.now();
    while (expected <= last) {
      assert.ok(Date.now() - started < 120_000, `stuck before seq ${expected} (last ${last})`);
      const [item] = await take(stream, 1, READ_MS);
      if (item instanceof SeqGap) {
        assert.equal(item.afterSeq, expected - 1, "a gap starts right after the last event");
        expected = item.nextSeq;
        gaps++;
      } else {
        assert.equal(item!.seq, expected, "events in order, none twice, none missing");
        expected++;
      }
    }
    assert.ok(stream.reconnects >= 1, "resumed on a new connection after the 4009");
    console.log(`slow consumer: ${published} events published, ${gaps} gap(s), ${stream.reconnects} reconnect(s)`);
  } finally {
    stream.close();
  }
});

test("a history that no longer reaches back to the resume is one SeqGap, then the replay and live events", { skip: NO_STACK }, async () => {
  const { symbol, channel } = await freshChannel();
  const first = await LiveStream.connect(WS_URL, API_KEY);
  let seqs: number[];
  try {
    await first.subscribe(channel);
    await ingest(symbol, [1, 2, 3]);
    seqs = events(await take(first, 3, READ_MS)).map((e) => e.seq);
  } finally {
    first.close();
  }
  // A position saved long ago: the channel's history starts after it (at the first ingest's seq, seqs[0] - 1).
  const saved = seqs[0]! - 1000;
  const stream = await LiveStream.connect(WS_URL, API_KEY, { resume: { [channel]: saved } });
  try {
    await stream.subscribe(channel);
    const [gap, ...replayed] = await take(stream, 5, READ_MS);
    assert.deepEqual(gap, new SeqGap(channel, saved, seqs[0]! - 1));
    assert.deepEqual(events(replayed).map((e) => e.seq), [seqs[0]! - 1, ...seqs]);
    await ingest(symbol, [4]);
    const [live] = events(await take(stream, 1, READ_MS));
    assert.equal(live!.seq, seqs[2]! + 1);
    assert.deepEqual(stream.positions(), { [channel]: seqs[2]! + 1 });
  } finally {
    stream.close();
  }
});

test("a refused channel throws StreamRefused and the stream goes on", { skip: NO_STACK }, async () => {
  const { symbol, channel } = await freshChannel();
  const stream = await LiveStream.connect(WS_URL, API_KEY);
  try {
    await assert.rejects(stream.subscribe("weather:BTC-USD"), (error: unknown) => error instanceof StreamRefused && error.code === "INVALID_CHANNEL");
    await stream.subscribe(channel);
    await ingest(symbol, [1]);
    const [event] = events(await take(stream, 1, READ_MS));
    assert.ok(event!.type === "price_update" && event!.data.price === "1.5");
    assert.deepEqual(stream.channels, [channel]);
  } finally {
    stream.close();
  }
});

test("a bad key ends the stream with 4001 and nothing reconnects", { skip: NO_STACK }, async () => {
  const stream = await LiveStream.connect(WS_URL, "not-a-key");
  try {
    await assert.rejects(stream.subscribe("prices:BTC-USD"), (error: unknown) => error instanceof StreamClosed && error.code === 4001);
    await assert.rejects(stream.next(), StreamClosed);
    assert.equal(stream.reconnects, 0);
  } finally {
    stream.close();
  }
});

test("replay() yields the stored ticks of a range in order, then ends", { skip: NO_STACK }, async () => {
  // A listed symbol (the gateway refuses unlisted ones): the seeded market's, on prices:all (every source),
  // over a range that starts just before this test's ticks.
  const symbol = "SEED-USD";
  const channel = `prices:all:${symbol}`;
  const from = Date.now() - 2000;
  await ingest(symbol, ["7001.5", "7002.5", "7003.5"]);
  const got: Array<[string, string, unknown]> = [];
  for await (const event of replay(WS_URL, API_KEY, channel, from, new Date(Date.now() + 1000))) {
    assert.equal(event.replay, true);
    got.push([event.type, event.channel, event.type === "price_update" && event.data.price]);
  }
  assert.deepEqual(got, ["7001.5", "7002.5", "7003.5"].map((p) => ["price_update", channel, p]));
  await assert.rejects(
    async () => {
      for await (const _ of replay(WS_URL, API_KEY, channel, from, from - 1)) assert.fail("no event");
    },
    (error: unknown) => error instanceof StreamRefused && error.code === "INVALID_MESSAGE",
  );
});
