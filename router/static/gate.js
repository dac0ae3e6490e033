// The gate: verify a ticket code's Ed25519 signature in the browser with the published keys before
// anything is sent, then check it in. Keys, revocation lists, this device's admissions and the
// check-ins still to send are kept in localStorage, so the gate keeps working with no network:
// a code is then verified and admitted locally, and its check-in queued until the network returns.
// docs/web.md says what an offline gate can and cannot know.
import { $, api, claimsOf, el, mountSignIn, say, storedToken, when } from "./common.js";
import { importKeys, verifyCode } from "./ticketcode.js";

const STORE = {
  keys: "ticketing.gate.keys", used: "ticketing.gate.used", queue: "ticketing.gate.queue",
  events: "ticketing.gate.events", gate: "ticketing.gate.name", revoked: (id) => `ticketing.gate.revoked.${id}`,
};
const SYNC_EVERY_MS = 15000;
const LOG_MAX = 20;
const USED_MAX = 20000; // tickets this device admitted, remembered for offline "already used"

let token = storedToken("gate");
let keys = new Map();
const read = (key, fallback) => { try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch { return fallback; } };
const write = (key, value) => localStorage.setItem(key, JSON.stringify(value));

mountSignIn($("#signin"), {
  scope: "gate", roles: ["validator", "organizer", "admin"], demoRole: "organizer",
  onChange: (value) => { token = value; sync(); },
});

const gateName = $("#gate-name");
gateName.value = localStorage.getItem(STORE.gate) || "main";
gateName.addEventListener("change", () => localStorage.setItem(STORE.gate, gateName.value.trim()));
$("#scan").addEventListener("submit", (event) => {
  event.preventDefault();
  const code = $("#code").value.trim();
  if (code) check(code).finally(() => { $("#code").select(); });
});
$("#sync").addEventListener("click", () => sync());
window.addEventListener("online", () => { showNetwork(); sync(); });
window.addEventListener("offline", showNetwork);
setInterval(sync, SYNC_EVERY_MS);
showNetwork();
loadKeys().then(sync);
setUpCamera();

function showNetwork() {
  const online = navigator.onLine;
  $("#network").textContent = online ? "Online" : "Offline: verifying with cached keys";
  $("#network").className = `live ${online ? "on" : "off"}`;
}

async function loadKeys() {
  const cached = read(STORE.keys, null);
  if (cached) keys = await importKeys(cached.keys);
  showOffline();
}

async function refreshKeys() {
  const fetched = await api("/v1/ticket-keys");
  write(STORE.keys, { keys: fetched.keys, fetched_at: new Date().toISOString() });
  keys = await importKeys(fetched.keys);
}

// Events whose revocation lists this gate follows: a validator token's `events` claim, and every
// event a code was scanned for.
function followedEvents() {
  const claims = token ? claimsOf(token) : null;
  return [...new Set([...(claims?.events || []), ...read(STORE.events, [])])];
}

async function syncRevocations(eventId) {
  const cached = read(STORE.revoked(eventId), { cursor: null, tickets: {} });
  for (let page = 0; page < 50; page += 1) {
    const query = new URLSearchParams({ limit: "500" });
    if (cached.cursor) query.set("cursor", cached.cursor);
    const found = await api(`/v1/events/${eventId}/revocations?${query}`, { token });
    for (const item of found.items) cached.tickets[item.ticket_id] = { status: item.status, at: item.revoked_at };
    if (found.next_cursor) cached.cursor = found.next_cursor;
    cached.synced_at = new Date().toISOString();
    write(STORE.revoked(eventId), cached);
    if (found.complete || !found.items.length) break;
  }
}

// One sync at a time; asking during one runs another after it (what changed since it started).
let syncing = null;
let again = false;
function sync() {
  if (syncing) { again = true; return syncing; }
  syncing = syncOnce().finally(() => {
    syncing = null;
    if (again) { again = false; sync(); }
  });
  return syncing;
}

async function syncOnce() {
  if (!navigator.onLine) return;
  try {
    await refreshKeys();
    await flushQueue();
    if (token) for (const eventId of followedEvents()) await syncRevocations(eventId).catch(() => {});
  } catch {
    // offline or the server is away: the next round tries again
  } finally {
    showOffline();
  }
}

function showOffline() {
  const queued = read(STORE.queue, []).length;
  const events = followedEvents();
  const revoked = events.reduce((sum, id) => sum + Object.keys(read(STORE.revoked(id), { tickets: {} }).tickets).length, 0);
  const fetched = read(STORE.keys, null)?.fetched_at;
  $("#offline-state").textContent = `${keys.size} signing key${keys.size === 1 ? "" : "s"}${fetched ? ` (fetched ${when(fetched)})` : ""}; `
    + `${revoked} void ticket${revoked === 1 ? "" : "s"} known for ${events.length} event${events.length === 1 ? "" : "s"}; `
    + `${queued} check-in${queued === 1 ? "" : "s"} waiting to be sent.`;
}

function verdict(kind, title, detail = "") {
  const box = $("#verdict");
  box.className = `verdict verdict-${kind}`;
  box.textContent = title;
  $("#verdict-detail").textContent = detail;
  const log = $("#log");
  log.prepend(el("li", { class: `log-${kind}` }, `${new Date().toLocaleTimeString()} ${title}${detail ? ` — ${detail}` : ""}`));
  while (log.children.length > LOG_MAX) log.lastChild.remove();
}

async function check(code) {
  if (!token) { verdict("invalid", "SIGN IN", "A validator or organizer token is needed to check in."); return; }
  let result = await verifyCode(code, keys);
  if (!result.ok && result.unknownKey && navigator.onLine) {
    try { await refreshKeys(); result = await verifyCode(code, keys); } catch { /* keep the first answer */ }
  }
  if (!result.ok) { verdict("invalid", "INVALID", `Not a valid ticket: ${result.reason}.`); return; }
  const { ticketId, eventId, place } = result.claims;
  const events = read(STORE.events, []);
  if (!events.includes(eventId)) write(STORE.events, [...events, eventId].slice(-50));
  const revoked = read(STORE.revoked(eventId), { tickets: {} }).tickets[ticketId];
  if (revoked) { verdict("void", "VOID", `${place}: ticket ${revoked.status} at ${when(revoked.at)}.`); return; }
  const gate = gateName.value.trim() || "main";
  if (!navigator.onLine) { admitOffline(code, ticketId, place, gate); return; }
  try {
    await api("/v1/checkins", { method: "POST", token, body: { code, gate } });
    remember(ticketId, gate);
    verdict("admitted", "ADMITTED", place);
  } catch (error) {
    if (error.status === undefined) { admitOffline(code, ticketId, place, gate); return; }
    showProblem(error, place);
  }
}

function showProblem(error, place) {
  if (error.code === "TICKET_ALREADY_USED") {
    verdict("used", "ALREADY USED", `${place}: checked in ${when(error.problem.first_checked_in_at)} at gate ${error.problem.gate}.`);
  } else if (error.code === "TICKET_VOID") verdict("void", "VOID", `${place}: ${error.message}`);
  else if (error.code === "TICKET_INVALID") verdict("invalid", "INVALID", error.message);
  else verdict("invalid", "NOT CHECKED IN", `${error.status} ${error.code}: ${error.message}`);
}

function remember(ticketId, gate) {
  const used = read(STORE.used, {});
  used[ticketId] = { at: new Date().toISOString(), gate };
  const ids = Object.keys(used);
  for (const old of ids.slice(0, Math.max(0, ids.length - USED_MAX))) delete used[old];
  write(STORE.used, used);
}

// No network: the signature was verified and the ticket is not on the cached revocation list. This
// device admits it once; another gate that is offline too could admit the same code (docs/web.md).
function admitOffline(code, ticketId, place, gate) {
  const seen = read(STORE.used, {})[ticketId];
  if (seen) { verdict("used", "ALREADY USED", `${place}: admitted ${when(seen.at)} at gate ${seen.gate} (this device, offline).`); return; }
  remember(ticketId, gate);
  write(STORE.queue, [...read(STORE.queue, []), { code, gate, at: new Date().toISOString() }]);
  verdict("admitted", "ADMITTED (offline)", `${place}: check-in queued, sent when the network returns.`);
  showOffline();
}

async function flushQueue() {
  let queue = read(STORE.queue, []);
  const queued = queue.length;
  while (queue.length) {
    const [first] = queue;
    try {
      await api("/v1/checkins", { method: "POST", token, body: { code: first.code, gate: first.gate } });
    } catch (error) {
      if (error.status === undefined || error.status >= 500 || error.status === 401) return; // try again later
      const claims = (await verifyCode(first.code, keys)).claims;
      $("#log").prepend(el("li", { class: "log-used" }, `Queued check-in of ${claims?.place || "a ticket"} at ${when(first.at)}: ${error.message}`));
    }
    queue = read(STORE.queue, []).slice(1);
    write(STORE.queue, queue);
  }
  if (queued) say(`${queued} queued check-in${queued === 1 ? "" : "s"} sent.`);
}

// Camera scanning where the browser has BarcodeDetector (Chromium on Android, ChromeOS, macOS).
async function setUpCamera() {
  if (!("BarcodeDetector" in window) || !navigator.mediaDevices?.getUserMedia) return;
  let formats = [];
  try { formats = await window.BarcodeDetector.getSupportedFormats(); } catch { return; }
  if (!formats.includes("qr_code")) return;
  const button = $("#camera");
  const video = $("#video");
  button.hidden = false;
  let stream = null;
  button.addEventListener("click", async () => {
    if (stream) { stream.getTracks().forEach((track) => track.stop()); stream = null; video.hidden = true; button.textContent = "Scan with camera"; return; }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch (error) {
      say(`Camera unavailable: ${error.message}`, { error: true });
      return;
    }
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    button.textContent = "Stop camera";
    const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    let last = "";
    const scan = async () => {
      if (!stream) return;
      try {
        const found = await detector.detect(video);
        if (found.length && found[0].rawValue !== last) {
          last = found[0].rawValue;
          $("#code").value = last;
          await check(last);
        }
      } catch { /* a frame that could not be read */ }
      setTimeout(scan, 250);
    };
    scan();
  });
}
