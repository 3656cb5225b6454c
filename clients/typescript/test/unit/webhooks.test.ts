// The webhook signature check against a signature made as the core makes it (HMAC-SHA256 over "<t>.<body>").
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";

import { signPayload, verifySignature } from "../../src/index.js";

const SECRET = "whsec_" + "ab".repeat(32);
const BODY = '{"id":"e1","type":"ping","created":1800000000,"data":{"webhook_id":"wh_1"}}';
const T = 1_800_000_000;
const coreSignature = (body: string, t: number) =>
  `t=${t},v1=${createHmac("sha256", SECRET).update(`${t}.${body}`).digest("hex")}`;

test("a signature made like the core's is accepted, as text or bytes", async () => {
  const header = coreSignature(BODY, T);
  assert.equal(await signPayload(BODY, SECRET, T), header);
  assert.ok(await verifySignature(BODY, header, SECRET, { now: T + 10 }));
  assert.ok(await verifySignature(new TextEncoder().encode(BODY), header, SECRET, { now: T }));
});

test("another body, secret or time is refused", async () => {
  const header = coreSignature(BODY, T);
  assert.equal(await verifySignature(BODY + " ", header, SECRET, { now: T }), false);
  assert.equal(await verifySignature(BODY, header, "whsec_" + "cd".repeat(32), { now: T }), false);
  assert.equal(await verifySignature(BODY, header, SECRET, { now: T + 301 }), false);
  assert.ok(await verifySignature(BODY, header, SECRET, { now: T + 1e6, toleranceS: 0 }));
  assert.equal(await verifySignature(BODY, header.replace(`t=${T}`, `t=${T + 100}`), SECRET, { now: T + 100 }), false);
});

test("malformed headers are refused and any v1 may match", async () => {
  const good = coreSignature(BODY, T).split(",")[1];
  for (const header of ["", `t=abc,${good}`, "v1=" + "0".repeat(64), `t=${T}`, "garbage"]) {
    assert.equal(await verifySignature(BODY, header, SECRET, { now: T }), false, header);
  }
  assert.ok(await verifySignature(BODY, `t=${T},v1=${"0".repeat(64)},${good}`, SECRET, { now: T }));
});
