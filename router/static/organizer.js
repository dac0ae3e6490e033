// The organizer's page: my events (GET /v1/events?organizer=me) with live sales numbers from the
// sales report, pause / resume / cancel (PATCH), and a form that creates an event (POST /v1/events)
// with sections (GA pools or seated rows), sale windows and the waiting room.
import { $, api, el, money, mountSignIn, say, storedToken, when } from "./common.js";

const SALES_REFRESH_MS = 3000;
let token = storedToken("organizer");
let salesTimer = null;
let sectionCount = 0;
let windowCount = 0;

mountSignIn($("#signin"), {
  scope: "organizer", roles: ["organizer", "admin"], demoRole: "organizer",
  onChange: (value) => { token = value; loadMine(); },
});
renderCreateForm();
loadMine();

async function loadMine() {
  const box = $("#mine");
  clearTimeout(salesTimer);
  if (!token) { box.replaceChildren(el("p", {}, "Sign in with an organizer token to see your events.")); return; }
  try {
    const events = [];
    let cursor = null;
    do {
      const page = await api(`/v1/events?organizer=me&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, { token });
      events.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && events.length < 500);
    if (!events.length) { box.replaceChildren(el("p", {}, "No events yet: create one below.")); return; }
    box.replaceChildren(el("ul", { class: "events" }, ...events.map(eventRow)));
    refreshSales(events);
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, error.message));
  }
}

function eventRow(event) {
  const sales = el("div", { class: "sales", id: `sales-${event.id}`, "aria-live": "polite" }, "Sales: loading…");
  const actions = el("div", { class: "actions" });
  if (event.status === "on_sale") actions.append(el("button", { type: "button", class: "secondary", onclick: () => patch(event, { status: "paused" }) }, `Pause ${event.title}`));
  if (event.status === "paused") actions.append(el("button", { type: "button", class: "secondary", onclick: () => patch(event, { status: "on_sale" }) }, `Resume ${event.title}`));
  if (event.status !== "cancelled") {
    actions.append(el("button", { type: "button", class: "danger", onclick: () => {
      if (window.confirm(`Cancel “${event.title}”? Every order is refunded; this cannot be undone.`)) patch(event, { status: "cancelled" });
    } }, `Cancel ${event.title}`));
  }
  return el("li", { class: "card", "data-event": event.id },
    el("h3", {}, el("a", { href: `/events/${event.id}` }, event.title), " ", el("span", { class: `badge status-${event.status}` }, event.status.replace("_", " "))),
    el("p", { class: "meta" }, when(event.starts_at), " · ", event.venue?.city || "", event.queue?.enabled ? " · waiting room" : ""),
    event.cancellation ? el("p", {}, `Refunds: ${event.cancellation.orders_refunded} of ${event.cancellation.orders_total} orders`) : null,
    sales, actions);
}

async function refreshSales(events) {
  for (const event of events) {
    const box = document.getElementById(`sales-${event.id}`);
    if (!box) continue;
    try {
      const report = await api(`/v1/events/${event.id}/sales`, { token });
      const sold = report.sections.reduce((sum, section) => sum + section.sold, 0);
      const capacity = report.sections.reduce((sum, section) => sum + section.capacity, 0);
      const held = report.sections.reduce((sum, section) => sum + section.held, 0);
      const checkedIn = report.sections.reduce((sum, section) => sum + section.checked_in, 0);
      box.replaceChildren(
        el("dl", { class: "numbers" },
          el("div", {}, el("dt", {}, "Sold"), el("dd", { "data-metric": "sold" }, `${sold} / ${capacity}`)),
          el("div", {}, el("dt", {}, "Held"), el("dd", { "data-metric": "held" }, String(held))),
          el("div", {}, el("dt", {}, "Orders"), el("dd", { "data-metric": "orders" }, String(report.orders))),
          el("div", {}, el("dt", {}, "Revenue"), el("dd", { "data-metric": "revenue" }, money(report.revenue_cents, event.currency))),
          el("div", {}, el("dt", {}, "Checked in"), el("dd", { "data-metric": "checked_in" }, String(checkedIn)))),
        el("p", { class: "meta" }, `as of ${new Date(report.as_of).toLocaleTimeString()}`));
    } catch (error) {
      box.textContent = `Sales: ${error.message}`;
    }
  }
  salesTimer = setTimeout(() => refreshSales(events), SALES_REFRESH_MS);
}

async function patch(event, body) {
  try {
    await api(`/v1/events/${event.id}`, { method: "PATCH", token, body });
    say(`${event.title}: ${body.status.replace("_", " ")}.`);
    loadMine();
  } catch (error) {
    say(error.message, { error: true });
  }
}

// --- the create form ------------------------------------------------------------------------------

function field(id, label, attributes = {}, hint = "") {
  const input = attributes.tag === "textarea" ? el("textarea", { id, name: id, rows: 2 }) : el("input", { id, name: id, ...attributes });
  return el("div", { class: "field" }, el("label", { for: id }, label), input, hint ? el("small", {}, hint) : null);
}

function sectionFieldset() {
  const n = ++sectionCount;
  const kind = el("select", { id: `s${n}-kind`, name: `s${n}-kind` }, el("option", { value: "seated" }, "Seated rows"), el("option", { value: "ga" }, "General admission pool"));
  const box = el("fieldset", { class: "section-fields", "data-n": n },
    el("legend", {}, `Section ${n}`),
    field(`s${n}-id`, "Id (used in seat labels)", { required: true, pattern: "[A-Za-z0-9_]{1,16}", value: n === 1 ? "A" : "" }),
    field(`s${n}-name`, "Name", { required: true, value: n === 1 ? "Block A" : "" }),
    el("div", { class: "field" }, el("label", { for: `s${n}-kind` }, "Kind"), kind),
    field(`s${n}-price`, "Price (in cents)", { type: "number", min: 0, required: true, value: 5000 }),
    field(`s${n}-rows`, "Rows", { placeholder: "1:20, 2:20, 3:22" }, "label:seats, comma-separated (seated)"),
    field(`s${n}-capacity`, "Capacity", { type: "number", min: 1 }, "general admission"),
    el("button", { type: "button", class: "secondary", onclick: () => box.remove() }, `Remove section ${n}`));
  return box;
}

function windowFieldset() {
  const n = ++windowCount;
  const box = el("fieldset", { class: "window-fields", "data-n": n },
    el("legend", {}, `Sale window ${n}`),
    field(`w${n}-name`, "Name", { required: true, value: n === 1 ? "general" : "" }),
    field(`w${n}-starts`, "Opens", { type: "datetime-local", required: true }),
    field(`w${n}-ends`, "Closes (optional)", { type: "datetime-local" }),
    field(`w${n}-code`, "Presale code (optional)", {}),
    el("button", { type: "button", class: "secondary", onclick: () => box.remove() }, `Remove sale window ${n}`));
  return box;
}

function renderCreateForm() {
  const sections = el("div", { id: "sections" }, sectionFieldset());
  const windows = el("div", { id: "windows" });
  const starts = new Date(Date.now() + 30 * 86400000);
  const local = (date) => new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const form = el("form", { id: "create-form", "aria-labelledby": "create-title" },
    field("title", "Title", { required: true, maxlength: 200 }),
    field("category", "Category", { value: "concert" }),
    field("description", "Description", { tag: "textarea" }),
    el("fieldset", {}, el("legend", {}, "Venue"),
      field("venue-name", "Venue name", { required: true }), field("venue-city", "City", { required: true }),
      field("venue-country", "Country (2 letters)", { required: true, maxlength: 2, value: "PT" })),
    field("starts", "Starts", { type: "datetime-local", required: true, value: local(starts) }),
    field("ends", "Ends (optional)", { type: "datetime-local" }),
    field("currency", "Currency", { value: "EUR", maxlength: 3, pattern: "[A-Z]{3}", required: true }),
    field("hold-seconds", "Hold time (seconds)", { type: "number", min: 1, max: 3600, value: 600 }),
    field("limit", "Tickets per person", { type: "number", min: 1, max: 1000, value: 6 }),
    el("fieldset", {}, el("legend", {}, "Waiting room"),
      el("div", { class: "field check" }, el("input", { id: "queue-enabled", type: "checkbox" }), el("label", { for: "queue-enabled" }, "Sell through a waiting room")),
      field("queue-rate", "Admitted per second", { type: "number", min: 1, value: 50 })),
    el("h3", {}, "Sections"), sections,
    el("button", { type: "button", class: "secondary", onclick: () => sections.append(sectionFieldset()) }, "Add a section"),
    el("h3", {}, "Sale windows"), el("p", { class: "meta" }, "None: on sale from creation."), windows,
    el("button", { type: "button", class: "secondary", onclick: () => windows.append(windowFieldset()) }, "Add a sale window"),
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Create event")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!token) { say("Sign in with an organizer token first.", { error: true }); return; }
    let body;
    try {
      body = eventBody(form);
    } catch (error) {
      say(error.message, { error: true });
      return;
    }
    try {
      const created = await api("/v1/events", { method: "POST", token, body });
      say(`Created “${created.title}”.`);
      loadMine();
    } catch (error) {
      const details = (error.problem?.errors || []).map((item) => `${(item.loc || []).join(".")}: ${item.msg}`).join("; ");
      say(`${error.message}${details ? ` (${details})` : ""}`, { error: true });
    }
  });
  $("#create").replaceChildren(form);
}

const value = (form, name) => form.elements[name]?.value.trim() ?? "";
const isoOf = (local) => (local ? new Date(local).toISOString().replace(".000Z", "Z") : undefined);

function eventBody(form) {
  const sections = [...form.querySelectorAll(".section-fields")].map((box) => {
    const n = box.dataset.n;
    const section = { id: value(form, `s${n}-id`), name: value(form, `s${n}-name`), kind: value(form, `s${n}-kind`), price_cents: Number(value(form, `s${n}-price`)) };
    if (section.kind === "ga") {
      section.capacity = Number(value(form, `s${n}-capacity`));
      if (!section.capacity) throw new Error(`Section ${section.id}: a general admission pool needs a capacity.`);
    } else {
      section.rows = value(form, `s${n}-rows`).split(",").map((part) => part.trim()).filter(Boolean).map((part) => {
        const [label, seats] = part.split(":").map((text) => text.trim());
        if (!label || !Number(seats)) throw new Error(`Section ${section.id}: write rows as label:seats, e.g. 1:20, 2:22.`);
        return { label, seats: Number(seats) };
      });
      if (!section.rows.length) throw new Error(`Section ${section.id}: seated sections need rows.`);
    }
    return section;
  });
  const windows = [...form.querySelectorAll(".window-fields")].map((box) => {
    const n = box.dataset.n;
    const window = { name: value(form, `w${n}-name`), starts_at: isoOf(value(form, `w${n}-starts`)) };
    if (value(form, `w${n}-ends`)) window.ends_at = isoOf(value(form, `w${n}-ends`));
    if (value(form, `w${n}-code`)) window.code = value(form, `w${n}-code`);
    return window;
  });
  const body = {
    title: value(form, "title"), category: value(form, "category"), description: value(form, "description"),
    venue: { name: value(form, "venue-name"), city: value(form, "venue-city"), country: value(form, "venue-country") },
    starts_at: isoOf(value(form, "starts")), currency: value(form, "currency"),
    hold_seconds: Number(value(form, "hold-seconds")), per_person_limit: Number(value(form, "limit")),
    queue: { enabled: form.elements["queue-enabled"].checked, admit_per_second: Number(value(form, "queue-rate")), token_seconds: 600 },
    sale_windows: windows, sections,
  };
  if (value(form, "ends")) body.ends_at = isoOf(value(form, "ends"));
  return body;
}
