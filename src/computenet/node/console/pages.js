// The console's pages. Each takes the <main> element and renders into it; a page that
// refreshes returns a function that stops it.
import { api, fill, h, pct, secs, when, ago, badge, bar, live, money, num, Pager } from "./lib.js";
import { disposeCharts, federationMap, healthDonut, latencyHeatmap, loadChinaMap, stackedTime, updateDonut, updateFederationMap } from "./charts.js";

const STATES = ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "CANCELING"];

// Run ``load`` now and whenever the node's event stream says the data it shows moved (at
// most once a second: a busy node's counters move all the time).
function onChange(field, load) {
  let seen = null, timer = null;
  load();
  const stopLive = live((u) => {
    if (seen !== null && u[field] !== seen && !timer) timer = setTimeout(() => { timer = null; load(); }, 1000);
    seen = u[field];
  });
  return () => { stopLive(); if (timer) clearTimeout(timer); };
}

// A select of the federation's nodes (a node code selects its subtree).
function nodeFilter(fed, onChange) {
  const sel = h("select", { id: "node-filter", "aria-label": "node" }, h("option", { value: "" }, "whole federation"),
    fed.nodes.map((n) => h("option", { value: n.code }, `node ${n.code}${n.relation === "self" ? " (this node)" : ""} and below`)));
  sel.addEventListener("change", () => onChange(sel.value));
  return sel;
}

export async function overview(main) {
  let node = "";
  const figures = () => Promise.all([
    api("/api/v1/console/summary", { params: { node } }),
    api("/api/v1/console/fed/provinces", { params: { node } }), loadChinaMap()]);
  const first = figures(); // in parallel with the two requests below: one round trip, not two
  first.catch(() => {}); // awaited below; if the page fails first, not an unhandled rejection
  const [fed, tree] = await Promise.all([api("/api/v1/console/fed/nodes"), api("/api/v1/console/tree")]);
  const cards = h("div", { class: "cards", id: "counters" });
  const donut = h("div", { class: "panel donut" });
  const mapBox = h("div", { class: "panel grow" });
  const card = (label, value, title) => h("div", { class: "card", title: title || null }, h("b", {}, value), label);
  let generation = 0;
  let mapEl = null, donutEl = null;
  // ``refresh``: new figures into the drawn charts (keeping pan and zoom); else draw anew.
  const draw = async (refresh = false, pending = null) => {
    const mine = ++generation;
    const [sum, provinces] = await (pending || figures());
    if (mine !== generation || !main.contains(cards)) return; // a newer draw, or another page
    const t = sum.tasks_by_state, ph = sum.pools_by_health;
    fill(cards,
      card("pools healthy", `${num(ph.healthy)} / ${num(sum.pools)}`, "over the federation index"),
      card("nodes", num(sum.nodes)), card("providers", num(sum.providers)),
      card("accelerator cards", num(sum.cards)), card("CPU cores", num(sum.cpu_cores)),
      card("queued", num(t.QUEUED)), card("running", num(t.RUNNING + t.INITIALIZING)),
      card("complete", num(t.COMPLETE)), card("failed", num(t.EXECUTOR_ERROR + t.SYSTEM_ERROR)));
    if (refresh && updateFederationMap(mapEl, provinces) && updateDonut(donutEl, ph)) return;
    disposeCharts();
    mapEl = federationMap(provinces, fed);
    donutEl = healthDonut(ph);
    fill(donut, h("h2", {}, "Pools by health"), donutEl);
    fill(mapBox, h("h2", {}, node ? `Pools by province: node ${node} and below` : "Pools by province, nodes and links"),
      h("p", { class: "muted" }, "Shade: pools per province · dots: nodes (red this node, purple its parent, green below it) · " +
        "edges: parent-child links with measured RTT. Drag to pan, scroll to zoom."),
      mapEl);
  };
  const providers = tree.providers.map((p) => {
    const pools = h("ul", { class: "tree" });
    const toggle = async () => {
      if (pools.childElementCount) { fill(pools); return; }
      const page = await api("/api/v1/console/pools", { params: { provider: p.prefix, page_size: 100 } });
      fill(pools, ...page.pools.map((x) => h("li", {}, badge(x.health), " ", x.cpi)));
    };
    return h("li", {}, h("button", { type: "button", class: "link", onclick: toggle }, `▸ ${p.prefix}`), ` ${p.name} — ${p.healthy}/${p.pools} pools healthy`, pools);
  });
  const filter = nodeFilter(fed, (v) => { node = v; draw(); });
  fill(main,
    h("div", { class: "title" }, h("h1", {}, `Node ${tree.code} (${tree.level}) — ${tree.name}`), h("label", {}, "Show ", filter)),
    cards,
    h("div", { class: "row" }, mapBox,
      h("div", { class: "side" }, donut,
        h("div", { class: "panel" }, h("h2", {}, "Federation tree"),
          h("ul", { class: "tree", id: "tree" }, fedTree(tree, providers)),
          tree.next_page_token ? h("p", { class: "muted" }, "more providers: see Pools") : null))));
  await draw(false, first);
  // Refresh when the index changed or task counts moved (the first update only records),
  // at most every 5 s: a large federation's index changes all the time.
  let seq = null, timer = null;
  const stopLive = live((u) => {
    const key = `${u.pools_seq}|${u.tasks_version}`;
    if (seq !== null && key !== seq && !timer) {
      timer = setTimeout(() => { timer = null; draw(true).catch(() => {}); }, 5000);
    }
    seq = key;
  });
  return () => { stopLive(); if (timer) clearTimeout(timer); };
}

// The federation as a tree of node codes (cn > cn.31 > cn.31.ai): every node the index knows,
// this node's enrolled children (with their sync state) and, under this node, its providers.
function fedTree(tree, providers) {
  const nodes = new Map();
  const add = (code) => { if (!nodes.has(code)) nodes.set(code, { code, kids: [] }); return nodes.get(code); };
  add(tree.code).self = true;
  if (tree.parent) add(tree.parent);
  for (const f of tree.federation) Object.assign(add(f.code), { pools: f.pools, healthy: f.healthy });
  for (const c of tree.children) Object.assign(add(c.code), { child: c });
  const parentOf = (code) => { const i = code.lastIndexOf("."); return i < 0 ? null : code.slice(0, i); };
  const roots = [];
  for (const n of nodes.values()) {
    let up = parentOf(n.code);
    while (up !== null && !nodes.has(up)) up = parentOf(up);
    (up === null ? roots : nodes.get(up).kids).push(n);
  }
  const item = (n) => {
    const c = n.child;
    const state = c ? h("span", { class: `badge ${c.silent ? "unhealthy" : "healthy"}` }, c.silent ? "silent" : "in sync") : null;
    const seen = c && c.last_seen_s !== null ? h("span", { class: "muted" }, ` synced ${secs(c.last_seen_s)} ago`) : null;
    const counts = n.pools !== undefined ? ` — ${n.healthy}/${n.pools} pools healthy` : "";
    const label = n.self ? h("b", {}, `${n.code} (this node) `) : `node ${n.code}`;
    const kids = [...(n.self ? providers : []), ...n.kids.sort((a, b) => a.code.localeCompare(b.code)).map(item)];
    return h("li", { "data-node": n.code }, state, state ? " " : null, label, n.self ? tree.name : null, counts, seen,
      kids.length ? h("ul", { class: "tree" }, kids) : null);
  };
  return roots.sort((a, b) => a.code.localeCompare(b.code)).map(item);
}

export async function pools(main) {
  const fed = await api("/api/v1/console/fed/nodes");
  const pager = new Pager();
  let node = "";
  const view = h("select", { id: "pool-view", "aria-label": "view" },
    h("option", { value: "federation" }, "federation index"), h("option", { value: "local" }, "this node's pools, with quality"));
  const health = h("select", { id: "health", "aria-label": "health" }, h("option", { value: "" }, "any health"),
    ["healthy", "unhealthy", "unavailable"].map((x) => h("option", { value: x }, x)));
  const search = h("input", { id: "pool-search", placeholder: "CPI contains…", "aria-label": "CPI contains" });
  const filter = nodeFilter(fed, (v) => { node = v; refilter(); });
  const body = h("div");
  const capacity = (p) => (p.cards ? `${num(p.cards)} × ${p.accelerator}` : `${num(p.cpu_cores)} cores`);
  const price = (p) => (p.cards ? `${num(p.price_per_card_hour)} ${p.currency}/card-h` : `${num(p.price_per_core_hour)} ${p.currency}/core-h`);
  const loadFed = async () => {
    const page = await api("/api/v1/console/fed/pools", { params: { page_size: 50, page_token: pager.current, health: health.value, q: search.value, node } });
    const free = (p) => (p.free_cards === null ? "–" : p.cards ? `${num(p.free_cards)} cards` : `${num(p.free_cpu_cores)} cores`);
    fill(body, h("p", { class: "muted", id: "pool-total" }, `${num(page.total)} pools match`),
      h("table", { id: "pools" },
        h("tr", {}, ["Pool (CPI)", "Node", "Health", "Province", "Capacity", "Free (last report)", "Running", "Price"].map((c) => h("th", {}, c))),
        page.pools.map((p) => h("tr", { "data-cpi": p.cpi },
          h("td", {}, p.cpi), h("td", {}, p.node), h("td", {}, badge(p.health)), h("td", {}, `${p.region_name} (${p.region})`),
          h("td", { class: "num" }, capacity(p)), h("td", { class: "num" }, free(p)), h("td", { class: "num" }, num(p.running_tasks)),
          h("td", { class: "num" }, price(p))))),
      pager.controls(page.next_page_token, load));
  };
  const loadLocal = async () => {
    const page = await api("/api/v1/console/pools", { params: { page_size: 50, page_token: pager.current, health: health.value === "unavailable" ? "" : health.value, q: search.value } });
    fill(body, h("table", { id: "pools" },
      h("tr", {}, ["Pool (CPI)", "Health", "Province", "Accelerator", "In use", "Utilization", "Price", "Heartbeat", "Availability (1 h)", "Success", "Queue wait", "First log"].map((c) => h("th", {}, c))),
      page.pools.map((p) => h("tr", { "data-cpi": p.cpi },
        h("td", {}, p.cpi), h("td", {}, badge(p.health)), h("td", {}, `${p.region_name} (${p.region})`),
        h("td", {}, p.accelerator || "CPU"), h("td", { class: "num" }, p.cards ? `${num(p.used_cards)}/${num(p.cards)} cards` : `${num(p.used_cpu_cores)}/${num(p.cpu_cores)} cores`),
        h("td", {}, bar(p.utilization), " ", pct(p.utilization)), h("td", { class: "num" }, price(p)),
        h("td", {}, ago(p.last_heartbeat_at)), h("td", { class: "num" }, pct(p.quality.availability)),
        h("td", { class: "num" }, pct(p.quality.success_rate)), h("td", { class: "num" }, secs(p.quality.queue_wait_s)),
        h("td", { class: "num" }, secs(p.quality.first_log_s))))),
    pager.controls(page.next_page_token, load));
  };
  const load = () => (view.value === "local" ? loadLocal() : loadFed()).catch((e) => fill(body, h("p", { class: "error" }, e.message)));
  const refilter = () => { pager.reset(); filter.disabled = view.value === "local"; load(); };
  for (const el of [view, health, search]) el.addEventListener("change", refilter);
  fill(main, h("h1", {}, "Pools"), h("div", { class: "filters" }, view, filter, health, search), body);
  return onChange("pools_seq", load);
}

export function tasks(main) {
  const pager = new Pager();
  const state = h("select", { id: "state" }, h("option", { value: "" }, "any state"), STATES.map((s) => h("option", { value: s }, s)));
  const name = h("input", { id: "name-prefix", placeholder: "name starts with…" });
  const body = h("div");
  const load = async () => {
    const page = await api("/api/v1/tasks", { params: { page_size: 25, page_token: pager.current, state: state.value, name_prefix: name.value } });
    fill(body, h("table", { id: "tasks" },
      h("tr", {}, ["Task", "Name", "State", "Pool", "Created", "Why"].map((c) => h("th", {}, c))),
      page.tasks.map((t) => h("tr", {}, h("td", {}, h("a", { href: `#/task/${t.id}` }, t.id)), h("td", {}, t.name || ""),
        h("td", {}, badge(t.state)), h("td", {}, t.pool || "–"), h("td", {}, when(t.created_at)), h("td", { class: "muted" }, t.reason || "")))),
      pager.controls(page.next_page_token, load));
  };
  const refilter = () => { pager.reset(); load(); };
  state.addEventListener("change", refilter);
  name.addEventListener("change", refilter);
  fill(main, h("h1", {}, "Tasks"), h("div", { class: "filters" }, state, name, h("a", { href: "#/submit" }, "Submit a task")), body);
  return onChange("tasks_version", () => load().catch(() => {}));
}

export function task(main, id) {
  return onChange("tasks_version", async () => {
    const t = await api(`/api/v1/tasks/${encodeURIComponent(id)}`);
    const logs = (t.attempts || []).flatMap((a) => a.executors.map((e) => h("div", {},
      h("h2", {}, `Attempt ${a.attempt}, executor ${e.index} — exit code ${e.exit_code ?? "…"}`),
      h("div", { class: "stream-label" }, "stdout"), h("pre", { class: "stdout", "aria-label": "stdout" }, e.stdout || "(nothing)"),
      h("div", { class: "stream-label" }, "stderr"), h("pre", { class: "stderr", "aria-label": "stderr" }, e.stderr || "(nothing)"))));
    fill(main, 
      h("h1", {}, `Task ${t.id} `, h("span", { id: "task-state" }, badge(t.state))),
      h("p", {}, `Name: ${t.name || "–"} · pool: ${t.pool || "not placed"} · attempt ${t.attempt}`),
      t.reason ? h("p", { id: "placement" }, h("b", {}, "Placement: "), t.reason) : null,
      h("h2", {}, "Timeline"),
      h("table", { id: "timeline" }, h("tr", {}, h("th", {}, "At"), h("th", {}, "State"), h("th", {}, "Event")),
        (t.events || []).map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, badge(e.state)), h("td", {}, e.message)))),
      h("h2", {}, "Logs"), logs.length ? logs : h("p", { class: "muted" }, "no output yet"),
      h("h2", {}, "Usage"),
      (t.usage || []).length === 0 ? h("p", { class: "muted" }, "not metered yet") :
        h("table", { id: "task-usage" }, h("tr", {}, ["Attempt", "Pool", "Wall time", "Card-hours", "Core-hours", "PFLOPS-h FP16"].map((c) => h("th", {}, c))),
          t.usage.map((u) => h("tr", {}, h("td", {}, u.attempt), h("td", {}, u.pool), h("td", { class: "num" }, secs(Number(u.wall_s))),
            [u.card_hours, u.cpu_core_hours, u.pflops_hours_fp16].map((v) => h("td", { class: "num" }, num(v)))))));
  });
}

export async function usage(main) {
  const fed = await api("/api/v1/console/fed/nodes");
  let node = "";
  const dim = h("select", { id: "usage-dim", "aria-label": "group by" },
    h("option", { value: "tenant" }, "by tenant"), h("option", { value: "provider" }, "by provider"), h("option", { value: "accelerator" }, "by accelerator model"));
  const bucket = h("select", { id: "usage-bucket", "aria-label": "bucket" }, h("option", { value: "3600" }, "per hour"), h("option", { value: "86400" }, "per day"));
  const charts = h("div", { class: "grid2" });
  const totals = h("div", { class: "cards" });
  const sinceS = 7 * 86400;
  const load = async () => {
    const b = await api("/api/v1/console/usage/by", { params: { dim: dim.value, bucket_s: bucket.value, since_s: sinceS, node } });
    disposeCharts();
    const sumOf = (key) => b.groups.reduce((a, g) => a + g[key].reduce((x, v) => x + Number(v), 0), 0);
    fill(totals, [["cost (ledger charges)", money(sumOf("cost"))], ["card-hours", num(sumOf("card_hours"))],
      ["CPU core-hours", num(sumOf("cpu_core_hours"))], ["tasks metered", num(sumOf("tasks"))]].map(([l, v]) => h("div", { class: "card" }, h("b", {}, v), l)));
    const active = new Set(b.starts.map((_, i) => i).filter((i) => b.groups.some((g) => g.tasks[i] > 0)));
    const panel = (title, key, unit) => h("div", { class: "panel" }, h("h2", {}, title),
      stackedTime(`usage-${key}`, b.starts, b.groups.map((g) => ({ key: g.key, values: g[key] })), { unit, bucketS: b.bucket_s, active }));
    fill(charts, panel("Cost", "cost", "CNY"), panel("Card-hours", "card_hours", "card-h"),
      panel("CPU core-hours", "cpu_core_hours", "core-h"), panel("Tasks metered", "tasks", "tasks"));
  };
  dim.addEventListener("change", load);
  bucket.addEventListener("change", load);
  const filter = nodeFilter(fed, (v) => { node = v; load(); });
  const reservations = h("div", {});
  const served = h("div", {});
  fill(main, h("h1", {}, "Usage and cost, last 7 days"),
    h("div", { class: "filters" }, dim, filter, bucket, h("span", { class: "muted" }, "drag the slider or scroll on a chart to zoom; hover for values")),
    totals, charts, h("h2", {}, "Advance reservations"), reservations, h("h2", {}, "Service requests this month"), served);
  await load();
  const rows = await api("/api/v1/reservations");
  fill(reservations, rows.length === 0 ? h("p", { class: "muted" }, "none (computenet reserve create …)") :
    h("table", { id: "reservations" },
      h("tr", {}, ["Reservation", "Tenant", "Pool", "Cards", "Starts", "Ends", "State", "Cost"].map((c) => h("th", {}, c))),
      rows.map((r) => h("tr", {}, h("td", {}, r.id), h("td", {}, r.tenant), h("td", {}, r.pool), h("td", {}, `${r.cards} × ${r.model}`),
        h("td", {}, when(r.starts_at)), h("td", {}, when(r.ends_at)), h("td", {}, r.state), h("td", { class: "num" }, money(r.cost, r.currency))))));
  // Counted by the routers that served them; a running replica's card-hours are in the charts above as they accrue.
  const requests = await api("/api/v1/console/service-requests");
  fill(served, requests.length === 0 ? h("p", { class: "muted" }, "no service requests billed this month") :
    h("table", { id: "service-requests" },
      h("tr", {}, ["Service", "Tenant", "Requests"].map((c) => h("th", {}, c))),
      requests.map((r) => h("tr", {}, h("td", {}, r.service), h("td", {}, r.tenant), h("td", { class: "num" }, num(r.requests))))));
}

export async function network(main) {
  const [lat, quality] = await Promise.all([api("/api/v1/console/latency"), api("/api/v1/console/providers/quality")]);
  fill(main, h("h1", {}, "Network and quality"),
    h("div", { class: "panel" },
      h("h2", {}, "Latency matrix"),
      h("p", { class: "muted" }, "Measured round trips, mean over the last hour: each gateway to its node, each child node to its parent. Unmeasured pairs are blank."),
      lat.length ? latencyHeatmap(lat) : h("p", { class: "muted", id: "latency-empty" }, "no round trips measured in the last hour")),
    h("h2", {}, "Providers (last hour)"),
    h("table", { id: "provider-quality" }, h("tr", {}, ["Provider", "Availability", "Success rate", "Completed", "Failed", "Oldest heartbeat"].map((c) => h("th", {}, c))),
      quality.map((p) => h("tr", {}, h("td", {}, p.prefix), h("td", { class: "num" }, pct(p.quality.availability)), h("td", { class: "num" }, pct(p.quality.success_rate)),
        h("td", { class: "num" }, num(p.quality.completed)), h("td", { class: "num" }, num(p.quality.failed)), h("td", { class: "num" }, secs(p.quality.heartbeat_age_s))))));
}

export function submit(main, go) {
  const f = (name, attrs = {}) => h("input", { name, id: `f-${name}`, ...attrs });
  const command = h("textarea", { name: "command", id: "f-command", required: true }, "echo hello from the console");
  const policy = h("select", { name: "policy", id: "f-policy" }, h("option", {}, "balanced"), h("option", {}, "cheapest"));
  const error = h("p", { class: "error", id: "submit-error" });
  const form = h("form", { class: "grid", id: "submit-form" },
    h("label", { for: "f-name" }, "Name"), f("name", { value: "console-task" }),
    h("label", { for: "f-image" }, "Image ('' = host)"), f("image", { value: "" }),
    h("label", { for: "f-command" }, "Shell command"), command,
    h("label", { for: "f-cpu" }, "CPU cores"), f("cpu", { type: "number", min: 1, value: 1 }),
    h("label", { for: "f-ram" }, "Memory (GB)"), f("ram", { type: "number", min: 0.1, step: 0.1, value: 0.5 }),
    h("label", { for: "f-cards" }, "Accelerator cards"), f("cards", { type: "number", min: 0, value: 0 }),
    h("label", { for: "f-regions" }, "Regions (GB/T 2260, comma-separated)"), f("regions", { placeholder: "e.g. 31,44" }),
    h("label", { for: "f-policy" }, "Policy"), policy,
    h("label", { for: "f-maxprice" }, "Max price per card-hour"), f("maxprice", { placeholder: "no cap" }),
    h("span"), h("button", { class: "primary", type: "submit", id: "submit-task" }, "Submit task"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = (n) => form.elements[n].value.trim();
    const spec = {
      name: v("name") || undefined,
      executors: [{ image: v("image"), command: ["sh", "-c", command.value] }],
      resources: { cpu_cores: Number(v("cpu")), ram_gb: Number(v("ram")) },
      placement: { policy: policy.value },
    };
    if (Number(v("cards")) > 0) spec.resources.accelerator = { count: Number(v("cards")) };
    if (v("regions")) spec.placement.regions = v("regions").split(",").map((s) => s.trim()).filter(Boolean);
    if (v("maxprice")) spec.placement.max_price_per_card_hour = v("maxprice");
    try {
      const res = await api("/api/v1/tasks", { method: "POST", body: spec });
      go(`#/task/${res.id}`);
    } catch (e) { error.textContent = e.message; }
  });
  fill(main, h("h1", {}, "Submit a task"), form, error);
}
