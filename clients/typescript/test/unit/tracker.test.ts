// The seq bookkeeping: each event handed over once, holes refilled, lost history as one SeqGap.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LiveEvent, SeqGap, SeqTracker } from "../../src/index.js";
import { Refill } from "../../src/tracker.js";

const event = (channel: string, seq: number) => ({ type: "price_update", channel, seq, data: { price: String(seq) } });
const seqOf = (items: unknown[]) => items.map((i) => (i as LiveEvent).seq);

test("the first event of a channel is handed over whatever its seq", () => {
  const tracker = new SeqTracker();
  assert.deepEqual(tracker.accept(event("prices:A", 41)), [new LiveEvent("price_update", "prices:A", 41, { price: "41" } as never)]);
  assert.deepEqual([...tracker.last], [["prices:A", 41]]);
});

test("events a resume brings twice are dropped", () => {
  const tracker = new SeqTracker();
  for (const seq of [1, 2, 3]) tracker.accept(event("prices:A", seq));
  assert.deepEqual(tracker.accept(event("prices:A", 2)), []);
  assert.deepEqual(tracker.accept(event("prices:A", 3)), []);
  assert.deepEqual(seqOf(tracker.accept(event("prices:A", 4))), [4]);
});

test("a jump asks for a refill and drops the channel until the next seq arrives", () => {
  const tracker = new SeqTracker();
  tracker.accept(event("prices:A", 1));
  assert.deepEqual(tracker.accept(event("prices:A", 5)), [new Refill("prices:A")]);
  assert.deepEqual(tracker.accept(event("prices:A", 6)), []);
  assert.deepEqual(seqOf(tracker.accept(event("other:B", 9))), [9]);
  assert.deepEqual(seqOf([...tracker.accept(event("prices:A", 2)), ...tracker.accept(event("prices:A", 3))]), [2, 3]);
  assert.deepEqual(tracker.accept(event("prices:A", 5)), [new Refill("prices:A")]); // 4 still missing
  tracker.resumed();
  assert.deepEqual(tracker.accept(event("prices:A", 5)), [new Refill("prices:A")]);
});

test("history that no longer reaches back is one gap, then the replay goes on", () => {
  const tracker = new SeqTracker();
  tracker.accept(event("prices:A", 1));
  tracker.accept(event("prices:A", 9));
  assert.deepEqual(tracker.resumeGap({ channel: "prices:A", first_available_seq: 7 }), [new SeqGap("prices:A", 1, 7)]);
  assert.deepEqual(seqOf(tracker.accept(event("prices:A", 7))), [7]);
  assert.deepEqual(seqOf(tracker.accept(event("prices:A", 8))), [8]);
  assert.deepEqual(tracker.resumeGap({ channel: "prices:A", first_available_seq: 9 }), []);
});

test("channels are tracked apart and resume names only seen ones; seqs past 2**31 stay exact", () => {
  const tracker = new SeqTracker();
  const big = 1_790_000_000_000_000; // seqs start at epoch ms * 1000
  tracker.accept(event("prices:A", big));
  tracker.accept(event("candles:B:1m", 3));
  assert.deepEqual(seqOf(tracker.accept(event("candles:B:1m", 4))), [4]);
  assert.deepEqual(seqOf(tracker.accept(event("prices:A", big + 1))), [big + 1]);
  assert.deepEqual(tracker.resumeOf(["prices:A", "candles:B:1m", "prices:C"]), { "prices:A": big + 1, "candles:B:1m": 4 });
  tracker.forget(["prices:A"]);
  assert.deepEqual(tracker.resumeOf(["prices:A"]), {});
  assert.equal(tracker.accept(event("prices:A", 2)).length, 1);
});
