// LiveStream against a fake gateway: reconnects and resumes, drops duplicates, refills holes, says true
// gaps once, chunks subscribes, ends on final closes, and stops reading for a consumer that stops.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { LiveEvent, LiveStream, SeqGap, StreamClosed, StreamRefused, type StreamItem } from "../../src/index.js";
import { FakeGateway, take, until } from "../support/fake-socket.js";

const CH = "prices:BTC-USD";

const opened: LiveStream[] = [];

async function open(gateway: FakeGateway, options: Record<string, unknown> = {}): Promise<LiveStream> {
  const stream = await LiveStream.connect("ws://gateway:8001/", "pk test", { WebSocket: gateway.WebSocket, maxBackoffS: 0.02, ...options });
  opened.push(stream);
  return stream;
}

// A test that fails half-way must not leave its stream reconnecting: the process would never exit.
afterEach(() => {
  for (const stream of opened.splice(0)) stream.close();
});

const seqs = (items: StreamItem[]): number[] => items.map((i) => (i instanceof LiveEvent ? i.seq : -1));

test("the key goes as ?apiKey= on the stream path", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway);
  assert.equal(gateway.last.url, "ws://gateway:8001/public/v1/stream?apiKey=pk%20test");
  stream.close();
});

test("a wrong address fails connect() and nothing is retried", async () => {
  const gateway = new FakeGateway();
  gateway.down = true;
  await assert.rejects(open(gateway), /cannot connect to ws:\/\/gateway:8001\/public\/v1\/stream\?apiKey=…/);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(gateway.sockets.length, 1);
});

test("subscribes go 20 channels a message, and more than 50 are refused before anything is sent", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway);
  const many = Array.from({ length: 45 }, (_, i) => `prices:S${i}-USD`);
  await stream.subscribe(...many, many[0]!);
  assert.deepEqual(gateway.last.subscribes().map((m) => m.channels.length), [20, 20, 5]);
  assert.deepEqual(stream.channels, many);
  await assert.rejects(stream.subscribe(...Array.from({ length: 6 }, (_, i) => `prices:T${i}-USD`)), RangeError);
  assert.equal(gateway.last.sent.length, 3);
  stream.close();
});

test("a drop reconnects with backoff, resumes from the last seq handed over, and drops what comes twice", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway);
  await stream.subscribe(CH);
  const first = gateway.last;
  for (const seq of [1, 2, 3]) first.event(CH, seq);
  assert.deepEqual(seqs(await take(stream, 3)), [1, 2, 3]);
  gateway.down = true; // the gateway restarts: a few attempts fail first
  first.drop(1012, "restart");
  await until(() => gateway.sockets.length >= 3, 2000, "retries while down");
  gateway.down = false;
  await until(() => gateway.last.readyState === 1, 2000, "a connection once up");
  const second = gateway.last;
  await until(() => second.subscribes().length === 1, 2000, "the resubscribe");
  assert.deepEqual(second.subscribes()[0], { action: "subscribe", channels: [CH], resume: { [CH]: 3 } });
  for (const seq of [2, 3, 4, 5]) second.event(CH, seq); // a replay that overlaps
  assert.deepEqual(seqs(await take(stream, 2)), [4, 5]);
  assert.equal(stream.reconnects, 1);
  assert.deepEqual(stream.positions(), { [CH]: 5 });
  stream.close();
});

test("a seq jump on an open connection is refilled in order on the same connection, without a gap", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway);
  await stream.subscribe(CH, "prices:ETH-USD");
  const socket = gateway.last;
  socket.event(CH, 1);
  socket.event(CH, 5); // the gateway skipped 2..4 while this client was slow
  socket.event(CH, 6); // live, past the hole: the refill brings it again
  socket.event("prices:ETH-USD", 9);
  await until(() => socket.sent.length === 3, 2000, "the refill");
  assert.deepEqual(socket.sent.slice(1), [
    { action: "unsubscribe", channels: [CH] },
    { action: "subscribe", channels: [CH], resume: { [CH]: 1 } },
  ]);
  for (const seq of [2, 3, 4, 5, 6]) socket.event(CH, seq); // the resumed subscription replays
  const items = await take(stream, 7);
  assert.deepEqual(items.map((i) => [i.channel, (i as LiveEvent).seq]), [
    [CH, 1], ["prices:ETH-USD", 9], [CH, 2], [CH, 3], [CH, 4], [CH, 5], [CH, 6],
  ]);
  assert.equal(stream.reconnects, 0);
  stream.close();
});

test("history that no longer reaches back is one SeqGap, then the replay goes on", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway);
  await stream.subscribe(CH);
  const socket = gateway.last;
  socket.event(CH, 1);
  socket.event(CH, 9); // a jump: the refill's resume finds the history trimmed
  await until(() => socket.subscribes().length === 2, 2000, "the refill");
  socket.deliver({ type: "resume_gap", channel: CH, requested_seq: 1, first_available_seq: 7 });
  for (const seq of [7, 8, 9, 10]) socket.event(CH, seq);
  const [one, gap, ...rest] = await take(stream, 6);
  assert.ok(one instanceof LiveEvent && one.seq === 1);
  assert.deepEqual(gap, new SeqGap(CH, 1, 7));
  assert.equal(gap?.type, "seq_gap");
  assert.deepEqual(seqs(rest), [7, 8, 9, 10]);
  stream.close();
});

test("a refused subscribe throws StreamRefused and the stream goes on", async () => {
  const gateway = new FakeGateway();
  gateway.invalid.add("weather:BTC-USD");
  const stream = await open(gateway);
  await assert.rejects(stream.subscribe("weather:BTC-USD"), (error: unknown) => {
    assert.ok(error instanceof StreamRefused);
    assert.equal(error.code, "INVALID_CHANNEL");
    return true;
  });
  await stream.subscribe(CH);
  gateway.last.event(CH, 1);
  const [event] = await take(stream, 1);
  assert.ok(event instanceof LiveEvent && event.type === "price_update" && event.data.price === "1.5");
  assert.deepEqual(stream.channels, [CH]);
  stream.close();
});

test("indicator updates are events like the others", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway);
  const channel = "indicators:BTC-USD:1h";
  await stream.subscribe(channel);
  gateway.last.deliver({ type: "indicator_update", channel, seq: 5, data: { macd_v: 63.25, stage: "rallying" } });
  const [event] = await take(stream, 1);
  assert.ok(event instanceof LiveEvent && event.type === "indicator_update" && event.seq === 5);
  assert.equal(event.data.macd_v, 63.25);
  stream.close();
});

for (const code of [4001, 1009]) {
  test(`a ${code} close ends the stream: waiting calls and the iterator throw StreamClosed, nothing reconnects`, async () => {
    const gateway = new FakeGateway({ autoAnswer: false });
    const stream = await open(gateway);
    const subscribing = stream.subscribe(CH);
    await until(() => gateway.last.sent.length === 1, 2000, "the subscribe");
    const reading = stream.next();
    gateway.last.drop(code, "invalid or revoked API key");
    for (const pending of [subscribing, reading]) {
      await assert.rejects(pending, (error: unknown) => error instanceof StreamClosed && error.code === code);
    }
    await assert.rejects(stream.next(), StreamClosed);
    await assert.rejects(stream.subscribe("prices:ETH-USD"), StreamClosed);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(gateway.sockets.length, 1);
    assert.equal(stream.reconnects, 0);
  });
}

test("a subscribe in flight when the connection drops is sent again on the next one", async () => {
  const gateway = new FakeGateway({ autoAnswer: false });
  const stream = await open(gateway);
  const subscribing = stream.subscribe(CH);
  await until(() => gateway.last.sent.length === 1, 2000, "the subscribe");
  gateway.last.drop(1006);
  const next = await gateway.connections(2);
  await until(() => next.sent.length === 1, 2000, "the subscribe again");
  next.answer(next.sent[0]!);
  await subscribing;
  assert.deepEqual(stream.channels, [CH]);
  stream.close();
});

test("a resubscribe refused after a reconnect drops that connection and tries again", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway);
  await stream.subscribe(CH);
  gateway.invalid.add(CH); // say a gateway mid-deploy refuses it for a while
  gateway.last.drop(1006);
  await until(() => gateway.sockets.slice(1).some((s) => s.closedWith.length > 0), 2000, "the client giving up on a refused resubscribe");
  gateway.invalid.clear();
  const accepted = () => {
    const s = gateway.last;
    return s.readyState === 1 && s.subscribes().length === 1 && s.closedWith.length === 0;
  };
  await until(accepted, 2000, "a resubscribe accepted");
  await new Promise((r) => setTimeout(r, 20)); // its answer came and was taken
  assert.ok(accepted());
  const third = gateway.last;
  third.event(CH, 1);
  assert.deepEqual(seqs(await take(stream, 1)), [1]);
  stream.close();
});

test("a consumer that stops reading pauses the socket at `buffer` items; reading resumes it, nothing lost", async () => {
  const gateway = new FakeGateway({ pausable: true });
  const stream = await open(gateway, { buffer: 4 });
  await stream.subscribe(CH);
  const socket = gateway.last;
  for (let seq = 1; seq <= 10; seq++) socket.event(CH, seq);
  await until(() => socket.pauses === 1, 2000, "the pause");
  assert.equal(socket.resumes, 0);
  assert.deepEqual(seqs(await take(stream, 10)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.ok(socket.resumes >= 1);
  assert.equal(stream.reconnects, 0);
  stream.close();
});

test("without pause() a consumer that stops reading closes the socket; once read, it resumes where it was", async () => {
  const gateway = new FakeGateway({ pausable: false });
  const stream = await open(gateway, { buffer: 4 });
  await stream.subscribe(CH);
  const first = gateway.last;
  for (let seq = 1; seq <= 6; seq++) first.event(CH, seq);
  await until(() => first.closedWith.length === 1, 2000, "the client closing");
  assert.equal(first.closedWith[0]![0], 4000);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(gateway.sockets.length, 1); // no reconnect while the consumer is behind
  assert.deepEqual(seqs(await take(stream, 4)), [1, 2, 3, 4]); // seqs 5, 6 came after the close: not handed over
  const second = await gateway.connections(2);
  await until(() => second.subscribes().length === 1, 2000, "the resubscribe");
  assert.deepEqual(second.subscribes()[0]!.resume, { [CH]: 4 });
  for (const seq of [5, 6, 7]) second.event(CH, seq);
  assert.deepEqual(seqs(await take(stream, 3)), [5, 6, 7]);
  stream.close();
});

test("a connection that stays silent past idleTimeoutS is replaced", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway, { idleTimeoutS: 0.05 });
  await stream.subscribe(CH);
  await gateway.connections(2);
  assert.equal(gateway.sockets[0]!.closedWith[0]![0], 4000);
  stream.close();
});

test("saved positions resume a fresh stream; close() ends iteration after what was received", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway, { resume: { [CH]: 41 } });
  await stream.subscribe(CH, "prices:ETH-USD");
  assert.deepEqual(gateway.last.subscribes()[0], { action: "subscribe", channels: [CH, "prices:ETH-USD"], resume: { [CH]: 41 } });
  gateway.last.event(CH, 42);
  await until(() => gateway.last.readyState === 1, 100, "open");
  await new Promise((r) => setTimeout(r, 10));
  stream.close();
  const seen: StreamItem[] = [];
  for await (const item of stream) seen.push(item);
  assert.deepEqual(seqs(seen), [42]);
  await assert.rejects(stream.subscribe("prices:SOL-USD"), (e: unknown) => e instanceof StreamClosed && e.code === 1000);
});

test("unsubscribed channels are not resubscribed after a drop", async () => {
  const gateway = new FakeGateway();
  const stream = await open(gateway);
  await stream.subscribe(CH, "prices:ETH-USD");
  await stream.unsubscribe(CH);
  assert.deepEqual(gateway.last.sent.at(-1), { action: "unsubscribe", channels: [CH] });
  gateway.last.drop(1006);
  const next = await gateway.connections(2);
  await until(() => next.subscribes().length === 1, 2000, "the resubscribe");
  assert.deepEqual(next.subscribes()[0]!.channels, ["prices:ETH-USD"]);
  stream.close();
});
