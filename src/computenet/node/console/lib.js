// Small helpers shared by the console's pages: DOM building, the API client, formatting.
const TOKEN_KEY = "computenet-token";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElementNS(
    ["svg", "circle", "line", "text", "rect", "g", "title"].includes(tag)
      ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, { method = "GET", body, params } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Authorization: `Bearer ${token.get() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, data.message || resp.statusText);
  return data;
}

// Numbers for people: grouped digits and at most two decimals from 1 up; below 1, three
// significant digits (0.000285, never a row of zeros like 0.000000000).
const grouped = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const small = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 3 });
export function num(x) {
  if (x === null || x === undefined || x === "") return "–";
  const v = Number(x);
  if (!Number.isFinite(v)) return String(x);
  return Math.abs(v) < 1 ? small.format(v) : grouped.format(v);
}
export function ms(x) { return x === null || x === undefined ? "–" : `${Number(x).toFixed(1)} ms`; }
export function money(x, currency = "CNY") { return x === null || x === undefined ? "–" : `${num(x)} ${currency}`; }

export function pct(x) { return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`; }
export function secs(x) { return x === null || x === undefined ? "–" : x < 1 ? `${(1000 * x).toFixed(0)} ms` : `${x.toFixed(1)} s`; }
export function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
export function ago(iso) {
  if (!iso) return "–";
  return secs(Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000)) + " ago";
}
export function badge(text) { return h("span", { class: `badge ${text}` }, text); }
export function bar(fraction) {
  return h("span", { class: "bar", title: pct(fraction) }, h("span", { style: `width:${Math.round(100 * fraction)}%` }));
}

// A pager over an API that answers {items..., next_page_token}: keeps the tokens of the
// pages already seen so "Previous" works without offsets.
export class Pager {
  constructor() { this.tokens = [null]; this.index = 0; }
  get current() { return this.tokens[this.index]; }
  reset() { this.tokens = [null]; this.index = 0; }
  controls(next, onChange) {
    const prev = h("button", { type: "button", disabled: this.index === 0, onclick: () => { this.index -= 1; onChange(); } }, "← Previous");
    const nextBtn = h("button", {
      type: "button", disabled: !next,
      onclick: () => { this.tokens[this.index + 1] = next; this.index += 1; onChange(); },
    }, "Next →");
    return h("div", { class: "pager" }, prev, h("span", { class: "muted" }, `page ${this.index + 1}`), nextBtn);
  }
}

// Replace an element's children with the given nodes, flattening lists and dropping blanks.
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(3).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
}

// One server-sent event stream per logged-in tab; pages subscribe to its "update" events.
// EventSource cannot send a bearer token, so each connection opens with a one-time ticket.
const listeners = new Set();
let source = null, last = null, retryMs = 1000, retryTimer = null;

async function connect() {
  retryTimer = null;
  if (!token.get() || !listeners.size) return;
  try {
    const { ticket } = await api("/api/v1/console/events/ticket", { method: "POST" });
    source = new EventSource(`/api/v1/console/events?ticket=${encodeURIComponent(ticket)}`);
  } catch (e) { return reconnect(); }
  source.addEventListener("update", (ev) => {
    retryMs = 1000;
    last = JSON.parse(ev.data);
    for (const fn of listeners) fn(last);
  });
  // A stream ends when the node closes it (after its maximum life, or on shutdown): open
  // a new one with a new ticket, backing off up to 30 s while the node is away.
  source.addEventListener("error", () => { source.close(); source = null; reconnect(); });
}

function reconnect() {
  if (retryTimer || !listeners.size) return;
  retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(30000, retryMs * 2);
}

// Call ``fn`` with each update (and the latest one at once); returns the unsubscriber.
export function live(fn) {
  listeners.add(fn);
  if (last) fn(last);
  if (!source && !retryTimer) connect();
  return () => listeners.delete(fn);
}

export function closeLive() {
  listeners.clear();
  if (source) { source.close(); source = null; }
  if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
  last = null;
}
