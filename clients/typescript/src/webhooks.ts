// Checking Perseus's alert webhooks on the receiving side (docs/guide/webhooks.md).
//
// Every delivery carries `X-Perseus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, keyed with the endpoint's
// secret (`whsec_…`, given once when the endpoint was created) over `"<t>."` followed by the raw body. Verify the
// raw bytes as received, before parsing them. Web Crypto only (Node 20+, browsers, workers): no dependency.

export const DEFAULT_TOLERANCE_S = 300;

export interface VerifyOptions {
  /** Seconds `t` may be away from `now` (an old delivery replayed is refused); 0: any time. */
  toleranceS?: number;
  /** Unix seconds to check `t` against; the clock by default. */
  now?: number;
}

const encoder = new TextEncoder();

function bytesOf(body: Uint8Array | string): Uint8Array {
  return typeof body === "string" ? encoder.encode(body) : body;
}

function hex(buffer: ArrayBuffer): string {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** The `X-Perseus-Signature` value Perseus sends for `body` at `timestamp` (for a receiver's own tests). */
export async function signPayload(body: Uint8Array | string, secret: string, timestamp: number): Promise<string> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const prefix = encoder.encode(`${timestamp}.`);
  const payload = bytesOf(body);
  const signed = new Uint8Array(prefix.length + payload.length);
  signed.set(prefix);
  signed.set(payload, prefix.length);
  return `t=${timestamp},v1=${hex(await crypto.subtle.sign("HMAC", key, signed))}`;
}

/** Whether `header` (`X-Perseus-Signature`) signs `body` with `secret`, its `t` within the tolerance. */
export async function verifySignature(
  body: Uint8Array | string,
  header: string,
  secret: string,
  options: VerifyOptions = {},
): Promise<boolean> {
  let timestamp: number | undefined;
  const signatures: string[] = [];
  for (const part of header.split(",")) {
    const [name, value = ""] = part.trim().split("=", 2);
    if (name === "t" && /^\d+$/.test(value)) timestamp = Number(value);
    else if (name === "v1" && value) signatures.push(value);
  }
  if (timestamp === undefined || signatures.length === 0) return false;
  const tolerance = options.toleranceS ?? DEFAULT_TOLERANCE_S;
  const now = options.now ?? Date.now() / 1000;
  if (tolerance && Math.abs(now - timestamp) > tolerance) return false;
  const expected = (await signPayload(body, secret, timestamp)).split("v1=")[1] ?? "";
  return signatures.some((candidate) => sameText(expected, candidate));
}
