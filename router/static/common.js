// What every page shares: building elements, calling the REST API (API.md) and signing in.
// Plain ES module, no dependencies; the pages' CSP allows scripts from this origin only.

export const $ = (selector, root = document) => root.querySelector(selector);

// el("button", {class: "x", onclick: f, "aria-label": "…"}, "text", child…): a new element. Text is
// always set as text, never parsed as HTML, so nothing the API returns can become markup.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export class ApiProblem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem.code || "";
  }
}

// A call to the API. Resolves to the parsed JSON body of a 2xx answer; rejects with ApiProblem for
// an error answer, or with the fetch TypeError when the network is gone (callers tell them apart).
export async function api(path, { method = "GET", body, token, headers = {}, idempotent = false } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (token) sent.Authorization = `Bearer ${token}`;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (idempotent) sent["Idempotency-Key"] = crypto.randomUUID();
  const response = await fetch(path, { method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let parsed = {};
  try { parsed = text ? JSON.parse(text) : {}; } catch { parsed = { detail: text.slice(0, 200) }; }
  if (!response.ok) throw new ApiProblem(response.status, parsed);
  return parsed;
}

// The token's claims, read without verifying (the server verifies; the page only shows who).
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

const TOKEN_KEY = (scope) => `ticketing.token.${scope}`;

export function storedToken(scope) {
  const token = localStorage.getItem(TOKEN_KEY(scope));
  const claims = token && claimsOf(token);
  if (!claims || (claims.exp && claims.exp * 1000 < Date.now())) return null;
  return token;
}

// The sign-in box: paste a token (`ticketing token --sub S --role R`), or, when the server runs with
// --demo, mint one for a chosen name. `roles`: the roles this page works with; onChange(token).
export function mountSignIn(container, { scope, roles, demoRole, onChange }) {
  const render = async () => {
    container.replaceChildren();
    const token = storedToken(scope);
    if (token) {
      const claims = claimsOf(token);
      container.append(el("p", { class: "signed-in" }, "Signed in as ", el("strong", {}, claims.sub),
        ` (${claims.role})`, " ",
        el("button", { type: "button", class: "link", onclick: () => { localStorage.removeItem(TOKEN_KEY(scope)); render(); onChange(null); } }, "Sign out")));
      return;
    }
    const field = el("textarea", { id: `token-${scope}`, rows: 2, autocomplete: "off", spellcheck: "false" });
    const error = el("p", { class: "error", role: "alert" });
    const form = el("form", { class: "signin", "aria-label": "Sign in" },
      el("label", { for: `token-${scope}` }, `Paste a ${roles.join(" or ")} token`), field,
      el("button", { type: "submit" }, "Use token"), error);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = field.value.trim();
      const claims = claimsOf(value);
      if (!claims || !roles.includes(claims.role)) {
        error.textContent = `That is not a ${roles.join(" or ")} token.`;
        return;
      }
      localStorage.setItem(TOKEN_KEY(scope), value);
      render();
      onChange(value);
    });
    container.append(form);
    try {
      await api("/v1/demo");
    } catch {
      return; // not in demo mode (404) or offline: paste only
    }
    const name = el("input", { id: `demo-name-${scope}`, value: demoRole === "organizer" ? "demo-organizer" : "alice", autocomplete: "off", pattern: "[A-Za-z0-9._-]+", required: true });
    const demo = el("form", { class: "signin demo", "aria-label": "Demo sign-in" },
      el("label", { for: `demo-name-${scope}` }, "Demo: your name"), name,
      el("button", { type: "submit" }, `Sign in as demo ${demoRole}`));
    demo.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const minted = await api("/v1/demo/token", { method: "POST", body: { name: name.value, role: demoRole } });
        localStorage.setItem(TOKEN_KEY(scope), minted.token);
        render();
        onChange(minted.token);
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
    container.append(demo);
  };
  render();
}

export function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// One line in the page's live status region (role=status or alert): what just happened.
export function say(message, { error = false } = {}) {
  const region = $(error ? "#alert" : "#status");
  if (region) region.textContent = message;
}
