// The buyer's pages: `/` lists events; `/events/{id}` shows one event's live seat map (the compact
// seat map, then its server-sent events), holds seats / a GA quantity / the best available, counts
// the hold down, checks out with a test card and shows the tickets' QR codes. An event in queue
// mode first shows the waiting room. docs/web.md describes the flows.
import { $, api, el, money, mountSignIn, say, storedToken, when } from "./common.js";

const STATES = { ".": "available", h: "held", s: "sold", x: "blocked" };
const QUEUE_POLL_MS = 2000;
// A hold survives a reload of the page (its id is kept for this tab), until it ends.
const HOLD_KEY = (eventId) => `ticketing.hold.${eventId}`;
const main = $("#main");
let token = storedToken("buyer");

mountSignIn($("#signin"), {
  scope: "buyer", roles: ["buyer", "admin"], demoRole: "buyer",
  onChange: (value) => { token = value; page.signedIn?.(); },
});

const page = {};
const match = location.pathname.match(/^\/events\/([0-9a-fA-F-]{36})\/?$/);
if (match) showEvent(match[1]).catch((error) => say(error.message, { error: true }));
else showList();

// --- the event list --------------------------------------------------------------------------------

function showList() {
  document.title = "Events · Tickets";
  const fields = [["q", "Search", "search"], ["category", "Category", "text"], ["city", "City", "text"],
    ["from", "From", "date"], ["to", "To", "date"]];
  const form = el("form", { class: "filters", role: "search", "aria-label": "Find events" },
    ...fields.map(([name, label, type]) => el("div", { class: "field" },
      el("label", { for: `f-${name}` }, label), el("input", { id: `f-${name}`, name, type }))),
    el("button", { type: "submit" }, "Search"));
  const list = el("ul", { class: "events", "aria-label": "Events" });
  const more = el("button", { type: "button", hidden: true }, "More events");
  let cursor = null;
  const load = async (reset) => {
    const query = new URLSearchParams({ limit: "20" });
    for (const [name] of fields) {
      const value = form.elements[name].value.trim();
      if (!value) continue;
      query.set(name, name === "from" || name === "to" ? new Date(value + (name === "to" ? "T23:59:59" : "T00:00:00")).toISOString() : value);
    }
    if (!reset && cursor) query.set("cursor", cursor);
    try {
      const found = await api(`/v1/events?${query}`);
      if (reset) list.replaceChildren();
      for (const event of found.items) list.append(eventCard(event));
      if (reset && found.items.length === 0) list.append(el("li", {}, "No events match."));
      cursor = found.next_cursor;
      more.hidden = !cursor;
      say(`${list.querySelectorAll("li.card").length} events shown`);
    } catch (error) {
      say(error.message, { error: true });
    }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); load(true); });
  more.addEventListener("click", () => load(false));
  main.replaceChildren(el("h1", {}, "Events"), form, list, more);
  load(true);
}

function eventCard(event) {
  const venue = event.venue || {};
  return el("li", { class: "card" },
    el("h2", {}, el("a", { href: `/events/${event.id}` }, event.title)),
    el("p", {}, when(event.starts_at), " · ", [venue.name, venue.city].filter(Boolean).join(", ")),
    el("p", { class: "meta" }, event.category || "", event.status !== "on_sale" ? ` · ${event.status.replace("_", " ")}` : "",
      event.queue?.enabled ? " · waiting room" : ""));
}

// --- one event ------------------------------------------------------------------------------------

async function showEvent(eventId) {
  const event = await api(`/v1/events/${eventId}`);
  document.title = `${event.title} · Tickets`;
  const venue = event.venue || {};
  const shop = el("section", { id: "shop", "aria-label": "Choose tickets" });
  const holdBox = el("section", { id: "hold", class: "panel", "aria-live": "polite", hidden: true, "aria-label": "Your hold" });
  const ticketsBox = el("section", { id: "tickets", "aria-label": "Your tickets" });
  const queueBox = el("section", { id: "queue", class: "panel", "aria-label": "Waiting room", hidden: true });
  main.replaceChildren(...[
    el("p", {}, el("a", { href: "/" }, "← All events")),
    el("h1", {}, event.title),
    el("p", {}, when(event.starts_at), " · ", [venue.name, venue.city, venue.country].filter(Boolean).join(", ")),
    event.description ? el("p", { class: "meta" }, event.description) : null,
    event.status !== "on_sale" ? el("p", { class: "notice" }, `This event is ${event.status.replace("_", " ")}.`) : null,
    queueBox, shop, holdBox, ticketsBox].filter(Boolean));
  const state = { event, eventId, queueToken: sessionStorage.getItem(`ticketing.queue.${eventId}`), hold: null,
    selected: new Set(), shop, holdBox, ticketsBox, queueBox, seats: new Map(), rows: new Map(), counts: new Map() };
  page.signedIn = () => { loadMyTickets(state); if (event.queue?.enabled && !state.queueToken) showQueue(state); };
  if (event.queue?.enabled && !state.queueToken) {
    shop.hidden = true;
    showQueue(state);
  }
  await renderShop(state);
  followStream(state);
  loadMyTickets(state);
  resumeHold(state);
}

async function resumeHold(state) {
  const holdId = sessionStorage.getItem(HOLD_KEY(state.eventId));
  if (!holdId || !token) return;
  try {
    const hold = await api(`/v1/holds/${holdId}`, { token });
    if (hold.status === "held") showHold(state, hold);
    else sessionStorage.removeItem(HOLD_KEY(state.eventId));
  } catch {
    sessionStorage.removeItem(HOLD_KEY(state.eventId));
  }
}

// --- the waiting room -----------------------------------------------------------------------------

function showQueue(state) {
  const box = state.queueBox;
  box.hidden = false;
  const line = el("p", { id: "queue-status", role: "status", "aria-live": "polite" }, "This event sells through a waiting room.");
  const join = el("button", { type: "button" }, "Join the line");
  box.replaceChildren(el("h2", {}, "Waiting room"), line, join);
  if (!token) {
    join.disabled = true;
    line.textContent = "This event sells through a waiting room. Sign in to join the line.";
    return;
  }
  let timer = null;
  const step = async (method) => {
    try {
      const answer = await api(`/v1/events/${state.eventId}/queue`, { method, token });
      clearTimeout(timer);
      join.hidden = true;
      if (answer.status === "admitted") {
        state.queueToken = answer.token;
        sessionStorage.setItem(`ticketing.queue.${state.eventId}`, answer.token);
        line.textContent = `You're in! Choose your tickets before ${when(answer.expires_at)}.`;
        box.dataset.status = "admitted";
        state.shop.hidden = false;
        return;
      }
      box.dataset.status = answer.status;
      if (answer.status === "waiting") {
        line.textContent = answer.position === null
          ? "You are in line. The sale has not opened yet: places are drawn at the opening."
          : `You are number ${answer.position} in line, about ${formatSeconds(answer.eta_seconds)} to go. Keep this page open.`;
      } else if (answer.status === "sold_out") {
        line.textContent = "Sold out for now. You keep your place: tickets that come back are offered in order.";
      } else if (answer.status === "waiting_list") {
        line.textContent = `You are number ${answer.position} on the waiting list.`;
      } else if (answer.status === "expired") {
        line.textContent = "Your place expired because this page stopped checking in. Join again.";
        join.hidden = false;
        return;
      } else {
        line.textContent = `Waiting room: ${answer.status}.`;
      }
      timer = setTimeout(() => step("GET"), QUEUE_POLL_MS);
    } catch (error) {
      line.textContent = error.message;
      timer = setTimeout(() => step("GET"), QUEUE_POLL_MS * 2);
    }
  };
  join.addEventListener("click", () => step("POST"));
}

function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "unknown time";
  return seconds < 90 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
}

// --- the seat map ---------------------------------------------------------------------------------

async function renderShop(state) {
  const { event, eventId, shop } = state;
  const [seatMap, availability] = await Promise.all([api(`/v1/events/${eventId}/seats`), api(`/v1/events/${eventId}/availability`)]);
  const rowsBySection = new Map(seatMap.sections.map((section) => [section.id, section.rows]));
  const legend = el("ul", { class: "legend", "aria-label": "Seat colours" },
    ...["available", "selected", "held", "sold", "blocked"].map((name) => el("li", {}, el("span", { class: `swatch seat-${name}`, "aria-hidden": "true" }), name)),
    el("li", {}, el("span", { class: "swatch seat-sold seat-mine", "aria-hidden": "true" }), "yours"));
  const holdSelected = el("button", { type: "button", id: "hold-selected", disabled: true }, "Hold selected seats");
  holdSelected.addEventListener("click", () => createHold(state, { seats: [...state.selected] }));
  state.holdSelected = holdSelected;
  const children = [el("h2", {}, "Tickets")];
  for (const section of event.sections) {
    const counts = el("span", { class: "counts" });
    state.counts.set(section.id, counts);
    const heading = el("h3", {}, `${section.name} · ${money(section.price_cents, event.currency)} `, counts);
    const box = el("div", { class: "section", "data-section": section.id }, heading);
    if (section.kind === "ga") {
      box.append(quantityForm(state, section, "Hold", (quantity) => ({ section: section.id, quantity })));
    } else {
      box.append(quantityForm(state, section, "Best available", (quantity) => ({ section: section.id, quantity, best_available: true, adjacent: true })));
      box.append(seatGrid(state, section, rowsBySection.get(section.id) || []));
    }
    children.push(box);
  }
  if (event.sections.some((section) => section.kind !== "ga")) children.splice(1, 0, legend);
  children.push(el("div", { class: "actions sticky" }, holdSelected));
  shop.replaceChildren(...children);
  applyAvailability(state, availability);
}

function quantityForm(state, section, label, body) {
  const id = `qty-${section.id}`;
  const input = el("input", { id, type: "number", min: 1, max: state.event.per_person_limit || 10, value: 1, inputmode: "numeric" });
  const form = el("form", { class: "quantity", "aria-label": `${label}: ${section.name}` },
    el("label", { for: id }, section.kind === "ga" ? `Tickets for ${section.name}` : `Best available in ${section.name}`), input,
    el("button", { type: "submit" }, section.kind === "ga" ? `Hold ${section.name}` : `Hold best available in ${section.name}`));
  form.addEventListener("submit", (submitted) => { submitted.preventDefault(); createHold(state, body(Number(input.value))); });
  return form;
}

function seatGrid(state, section, rows) {
  const grid = el("div", { class: "seat-map", role: "group", "aria-label": `Seats in ${section.name}` });
  rows.forEach((row, rowIndex) => {
    const line = el("div", { class: "seat-row" }, el("span", { class: "row-label", "aria-hidden": "true" }, row.label));
    const buttons = [];
    [...row.seats].forEach((character, index) => {
      const label = `${section.id}-${row.label}-${index + 1}`;
      const button = el("button", { type: "button", class: "seat", "data-seat": label, tabindex: rowIndex === 0 && index === 0 ? 0 : -1 }, String(index + 1));
      button.addEventListener("click", () => toggleSeat(state, label));
      button.addEventListener("keydown", (key) => moveFocus(state, section.id, rowIndex, index, key));
      state.seats.set(label, { button, status: STATES[character] || "blocked" });
      buttons.push(button);
      paintSeat(state, label);
    });
    state.rows.set(`${section.id}\u0000${row.label}`, buttons.map((button) => button.dataset.seat));
    line.append(el("div", { class: "seats" }, buttons));
    grid.append(line);
  });
  state[`grid:${section.id}`] = rows.map((row) => row.label);
  return grid;
}

// Arrow keys move between seats (one tab stop per seat map, as for a grid).
function moveFocus(state, sectionId, rowIndex, index, key) {
  const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
  const move = moves[key.key];
  if (!move) return;
  const labels = state[`grid:${sectionId}`];
  const rowLabel = labels[rowIndex + move[0]];
  if (rowLabel === undefined) return;
  const row = state.rows.get(`${sectionId}\u0000${rowLabel}`);
  const target = row[Math.max(0, Math.min(row.length - 1, index + move[1]))];
  const current = key.currentTarget;
  const next = state.seats.get(target).button;
  key.preventDefault();
  current.tabIndex = -1;
  next.tabIndex = 0;
  next.focus();
}

function toggleSeat(state, label) {
  const seat = state.seats.get(label);
  if (seat.status !== "available" && !state.selected.has(label)) {
    say(`Seat ${label} is ${seat.status}.`);
    return;
  }
  if (state.selected.has(label)) state.selected.delete(label);
  else state.selected.add(label);
  paintSeat(state, label);
  const count = state.selected.size;
  state.holdSelected.disabled = count === 0;
  state.holdSelected.textContent = count ? `Hold ${count} selected seat${count > 1 ? "s" : ""}` : "Hold selected seats";
}

function paintSeat(state, label) {
  const seat = state.seats.get(label);
  const selected = state.selected.has(label);
  const mine = ["held", "payment_pending", "confirmed"].includes(state.hold?.status) && state.hold.items.some((item) => item.seat === label);
  const shown = selected ? "selected" : seat.status;
  seat.button.className = `seat seat-${shown}${mine ? " seat-mine" : ""}`;
  seat.button.setAttribute("aria-pressed", selected ? "true" : "false");
  seat.button.setAttribute("aria-disabled", seat.status === "available" || selected ? "false" : "true");
  seat.button.setAttribute("aria-label", `Seat ${label}, ${seat.status}${mine ? ", yours" : ""}${selected ? ", selected" : ""}`);
}

function applyRows(state, sectionId, rows) {
  for (const row of rows) {
    const labels = state.rows.get(`${sectionId}\u0000${row.label}`) || [];
    [...row.seats].forEach((character, index) => {
      const label = labels[index];
      const seat = label && state.seats.get(label);
      if (!seat) return;
      const status = STATES[character] || "blocked";
      if (seat.status === status) return;
      seat.status = status;
      if (status !== "available" && state.selected.has(label)) state.selected.delete(label);
      paintSeat(state, label);
    });
  }
}

function applyAvailability(state, availability) {
  for (const section of availability.sections) {
    const counts = state.counts.get(section.id);
    if (counts) counts.textContent = `· ${section.available} of ${section.capacity} available`;
  }
}

// The live seat map: an EventSource on the stream (API.md); it reconnects by itself and resumes
// from the last event id, and a `snapshot` replaces everything shown.
function followStream(state) {
  const source = new EventSource(`/v1/events/${state.eventId}/seats/stream`);
  source.addEventListener("snapshot", (message) => {
    const data = JSON.parse(message.data);
    for (const section of data.seats.sections) applyRows(state, section.id, section.rows);
    applyAvailability(state, data.availability);
  });
  source.addEventListener("seats", (message) => {
    const data = JSON.parse(message.data);
    applyRows(state, data.section, data.rows);
  });
  source.addEventListener("availability", (message) => applyAvailability(state, JSON.parse(message.data)));
  source.addEventListener("open", () => { $("#live").textContent = "Live"; $("#live").className = "live on"; });
  source.addEventListener("error", () => { $("#live").textContent = "Reconnecting…"; $("#live").className = "live off"; });
  window.addEventListener("pagehide", () => source.close());
}

// --- holds and checkout ---------------------------------------------------------------------------

async function createHold(state, choice) {
  if (!token) { say("Sign in first (top of the page).", { error: true }); return; }
  if (state.hold?.status === "held") { say("You already hold tickets: check out or release them first.", { error: true }); return; }
  const headers = state.queueToken ? { "X-Queue-Token": state.queueToken } : {};
  try {
    const hold = await api("/v1/holds", { method: "POST", token, idempotent: true, headers, body: { event_id: state.eventId, ...choice } });
    state.selected.clear();
    state.holdSelected.disabled = true;
    state.holdSelected.textContent = "Hold selected seats";
    showHold(state, hold);
    say(`Held ${hold.quantity} ticket${hold.quantity > 1 ? "s" : ""}.`);
  } catch (error) {
    const unavailable = error.problem?.unavailable;
    say(unavailable ? `Not available any more: ${unavailable.join(", ")}` : error.message, { error: true });
  }
}

function showHold(state, hold) {
  const previous = state.hold;
  state.hold = hold;
  for (const item of [...(previous?.items || []), ...hold.items]) if (item.seat && state.seats.has(item.seat)) {
    if (hold.status === "held" && hold.items.includes(item)) state.seats.get(item.seat).status = "held";
    paintSeat(state, item.seat);
  }
  const box = state.holdBox;
  box.hidden = false;
  clearInterval(state.countdown);
  if (hold.status !== "held") { box.hidden = true; sessionStorage.removeItem(HOLD_KEY(state.eventId)); return; }
  sessionStorage.setItem(HOLD_KEY(state.eventId), hold.id);
  const timer = el("p", { class: "countdown", role: "timer", "aria-live": "off" });
  const expires = new Date(hold.expires_at).getTime();
  const pay = el("button", { type: "submit" }, `Pay ${money(hold.total_cents, hold.currency)}`);
  const tick = () => {
    const left = Math.max(0, Math.round((expires - Date.now()) / 1000));
    timer.textContent = `Held for ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    timer.classList.toggle("urgent", left < 60);
    if (left === 0) {
      clearInterval(state.countdown);
      timer.textContent = "Your hold expired; the tickets are back on sale.";
      pay.disabled = true;
    }
  };
  tick();
  state.countdown = setInterval(tick, 1000);
  const card = el("select", { id: "card" },
    el("option", { value: "tok_visa" }, "Test Visa (approved)"),
    el("option", { value: "tok_declined" }, "Test card (declined)"));
  const name = el("input", { id: "holder-name", autocomplete: "name" });
  const email = el("input", { id: "holder-email", type: "email", autocomplete: "email" });
  const form = el("form", { class: "checkout", "aria-label": "Check out" },
    el("div", { class: "field" }, el("label", { for: "card" }, "Card"), card),
    el("div", { class: "field" }, el("label", { for: "holder-name" }, "Name on the tickets (optional)"), name),
    el("div", { class: "field" }, el("label", { for: "holder-email" }, "E-mail (optional)"), email),
    el("div", { class: "actions" }, pay, el("button", { type: "button", class: "secondary", onclick: () => releaseHold(state) }, "Release")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    pay.disabled = true;
    const holders = name.value.trim() && email.value.trim()
      ? hold.items.map(() => ({ name: name.value.trim(), email: email.value.trim() })) : undefined;
    checkout(state, { payment: { token: card.value }, holders }).finally(() => { pay.disabled = false; });
  });
  box.replaceChildren(el("h2", {}, "Your hold"),
    el("ul", {}, ...hold.items.map((item) => el("li", {}, item.seat ? `Seat ${item.seat}` : `${item.section} (general admission)`, ` · ${money(item.price_cents, hold.currency)}`))),
    el("p", {}, "Total ", el("strong", {}, money(hold.total_cents, hold.currency))), timer, form);
  box.querySelector("h2").scrollIntoView({ block: "nearest" });
}

async function releaseHold(state) {
  try {
    const released = await api(`/v1/holds/${state.hold.id}`, { method: "DELETE", token, idempotent: true });
    showHold(state, released);
    say("Released.");
  } catch (error) {
    say(error.message, { error: true });
  }
}

async function checkout(state, body) {
  // One key per press, kept across the retries of a network failure: a retry never charges twice.
  const key = crypto.randomUUID();
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const result = await api(`/v1/holds/${state.hold.id}/checkout`, { method: "POST", token, body, headers: { "Idempotency-Key": key } });
      clearInterval(state.countdown);
      state.hold = { ...state.hold, status: "confirmed" };
      sessionStorage.removeItem(HOLD_KEY(state.eventId));
      for (const item of state.hold.items) if (item.seat && state.seats.has(item.seat)) paintSeat(state, item.seat);
      state.holdBox.hidden = true;
      say(`Paid: order ${result.order.id}.`);
      showTickets(state, result.tickets, `Your tickets (order ${result.order.id.slice(0, 8)})`);
      return;
    } catch (error) {
      if (error.status === undefined && attempt < 2) continue; // the network: retry with the same key
      if (error.status === 402 || error.status === 410) showHold(state, { ...state.hold, status: "released" });
      say(error.message, { error: true });
      return;
    }
  }
}

async function loadMyTickets(state) {
  if (!token) return;
  try {
    const found = await api(`/v1/me/tickets?event_id=${state.eventId}`, { token });
    if (found.items.length) showTickets(state, found.items, "Your tickets");
  } catch {
    // a buyer without tickets, or a token of another role: nothing to show
  }
}

function showTickets(state, tickets, title) {
  const list = el("ul", { class: "ticket-list" });
  for (const ticket of tickets) {
    const image = el("img", { class: "qr", alt: `QR code of ticket ${ticket.seat || ticket.section}`, width: 180, height: 180 });
    list.append(el("li", { class: "ticket card" },
      el("h3", {}, ticket.seat ? `Seat ${ticket.seat}` : `${ticket.section} (general admission)`),
      el("p", { class: "meta" }, `Ticket …${ticket.id.slice(-8)} · ${ticket.status}`), image,
      ticket.code ? el("details", {}, el("summary", {}, "Ticket code"), el("code", { class: "code" }, ticket.code)) : null));
    // The QR image needs the buyer's token: fetched, then shown from a blob URL (CSP img-src blob:).
    fetch(ticket.qr_png, { headers: { Authorization: `Bearer ${token}` } })
      .then((response) => (response.ok ? response.blob() : Promise.reject(new Error(`QR ${response.status}`))))
      .then((blob) => { image.src = URL.createObjectURL(blob); })
      .catch(() => { image.alt = "QR code unavailable"; });
  }
  state.ticketsBox.replaceChildren(el("h2", {}, title), list);
}
