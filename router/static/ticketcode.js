// Ticket codes verified in the browser, with no network (router/tickets/codes.py is the reference):
// `v1.<kid>.<payload>.<signature>`, the signature being Ed25519 over the ASCII bytes
// `v1.<kid>.<payload>`, payload and signature base64url without padding (canonical only).

export const CODE_CHARS_MAX = 512;
const PAYLOAD_FORMAT = 0x01;
const HEADER_BYTES = 39;
const PLACE_BYTES_MAX = 64;
const PLACE_KINDS = { 1: "seat", 2: "section" };

export function b64urlEncode(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function b64urlDecode(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new Error("not base64url");
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (b64urlEncode(bytes) !== text) throw new Error("non-canonical base64url");
  return bytes;
}

function uuid(bytes) {
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function decodePayload(payload) {
  if (payload.length < HEADER_BYTES) throw new Error("payload too short");
  if (payload[0] !== PAYLOAD_FORMAT) throw new Error("unknown payload format");
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const kind = PLACE_KINDS[payload[37]];
  const size = payload[38];
  if (!kind) throw new Error("unknown place kind");
  if (size < 1 || size > PLACE_BYTES_MAX) throw new Error("bad place length");
  if (payload.length !== HEADER_BYTES + size) throw new Error("payload length does not match");
  const place = new TextDecoder("utf-8", { fatal: true }).decode(payload.subarray(HEADER_BYTES));
  return {
    ticketId: uuid(payload.subarray(1, 17)), eventId: uuid(payload.subarray(17, 33)),
    issuedAt: new Date(view.getUint32(33) * 1000), placeKind: kind, place,
  };
}

// keys: Map kid → CryptoKey (importKeys). → {ok: true, claims} or {ok: false, reason}.
export async function verifyCode(code, keys) {
  const text = code.trim();
  if (text.length === 0 || text.length > CODE_CHARS_MAX) return { ok: false, reason: "not a ticket code" };
  const parts = text.split(".");
  if (parts.length !== 4 || parts[0] !== "v1") return { ok: false, reason: "not a v1 ticket code" };
  const [, kid, payloadText, signatureText] = parts;
  const key = keys.get(kid);
  if (!key) return { ok: false, reason: `unknown key ${kid}`, unknownKey: true };
  let payload, signature;
  try {
    payload = b64urlDecode(payloadText);
    signature = b64urlDecode(signatureText);
  } catch (error) {
    return { ok: false, reason: error.message };
  }
  const signed = new TextEncoder().encode(`v1.${kid}.${payloadText}`);
  let valid = false;
  try {
    valid = await crypto.subtle.verify({ name: "Ed25519" }, key, signature, signed);
  } catch {
    valid = false;
  }
  if (!valid) return { ok: false, reason: "bad signature" };
  try {
    return { ok: true, claims: decodePayload(payload) };
  } catch (error) {
    return { ok: false, reason: error.message };
  }
}

// The keys of GET /v1/ticket-keys as CryptoKeys, by kid.
export async function importKeys(list) {
  const keys = new Map();
  for (const entry of list) {
    if (entry.alg !== "Ed25519") continue;
    keys.set(entry.kid, await crypto.subtle.importKey("raw", b64urlDecode(entry.public_key), { name: "Ed25519" }, false, ["verify"]));
  }
  return keys;
}
