// The console's pages. Each takes the <main> element and renders into it; a page that
// refreshes returns a function that stops it.
import { api, fill, h, pct, secs, when, ago, badge, bar, Pager } from "./lib.js";
import { chinaPlot, barChart, fillBuckets } from "./charts.js";

const STATES = ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "CANCELING"];

function every(ms, fn) { fn(); const id = setInterval(fn, ms); return () => clearInterval(id); }

export async function overview(main) {
  const [ov, points, tree] = await Promise.all([api("/api/v1/console/overview"), api("/api/v1/console/map"), api("/api/v1/console/tree")]);
  const card = (label, value) => h("div", { class: "card" }, h("b", {}, value), label);
  const providers = tree.providers.map((p) => {
    const pools = h("ul", { class: "tree" });
    const toggle = async () => {
      if (pools.childElementCount) { fill(pools, ); return; }
      const page = await api("/api/v1/console/pools", { params: { provider: p.prefix, page_size: 100 } });
      fill(pools, ...page.pools.map((x) => h("li", {}, badge(x.health), " ", x.cpi)));
    };
    return h("li", {}, h("a", { href: "javascript:void 0", onclick: toggle }, `▸ ${p.prefix}`), ` ${p.name} — ${p.healthy}/${p.pools} pools healthy`, pools);
  });
  fill(main, 
    h("h1", {}, `Node ${ov.code} (${ov.level}) — ${ov.name}`),
    h("div", { class: "cards" },
      card("pools healthy", `${ov.pools_by_health.healthy}/${ov.pools_by_health.healthy + ov.pools_by_health.unhealthy}`),
      card("providers", ov.providers), card("accelerator cards", ov.cards), card("CPU cores", ov.cpu_cores),
      card("queued", ov.tasks_by_state.QUEUED), card("running", ov.tasks_by_state.RUNNING + ov.tasks_by_state.INITIALIZING),
      card("complete", ov.tasks_by_state.COMPLETE), card("failed", ov.tasks_by_state.EXECUTOR_ERROR + ov.tasks_by_state.SYSTEM_ERROR)),
    h("div", { class: "row" },
      h("div", {}, h("h2", {}, "Pools by region"), chinaPlot(points)),
      h("div", { class: "panel", style: "min-width:22rem" }, h("h2", {}, "Federation tree"),
        h("ul", { class: "tree", id: "tree" }, fedTree(tree, providers)),
        tree.next_page_token ? h("p", { class: "muted" }, "more providers: see Pools") : null)));
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

export function pools(main) {
  const pager = new Pager();
  const health = h("select", { id: "health" }, h("option", { value: "" }, "any health"), h("option", { value: "healthy" }, "healthy"), h("option", { value: "unhealthy" }, "unhealthy"));
  const search = h("input", { id: "pool-search", placeholder: "CPI contains…" });
  const body = h("div");
  const load = async () => {
    const page = await api("/api/v1/console/pools", { params: { page_size: 50, page_token: pager.current, health: health.value, q: search.value } });
    const rows = page.pools.map((p) => h("tr", { "data-cpi": p.cpi },
      h("td", {}, p.cpi), h("td", {}, badge(p.health)), h("td", {}, `${p.region_name} (${p.region})`),
      h("td", {}, p.accelerator || "CPU"), h("td", { class: "num" }, p.cards ? `${p.used_cards}/${p.cards} cards` : `${p.used_cpu_cores}/${p.cpu_cores} cores`),
      h("td", {}, bar(p.utilization), " ", pct(p.utilization)),
      h("td", { class: "num" }, p.cards ? `${p.price_per_card_hour} ${p.currency}/card-h` : `${p.price_per_core_hour} ${p.currency}/core-h`),
      h("td", {}, ago(p.last_heartbeat_at)), h("td", { class: "num" }, pct(p.quality.availability)),
      h("td", { class: "num" }, pct(p.quality.success_rate)), h("td", { class: "num" }, secs(p.quality.queue_wait_s)),
      h("td", { class: "num" }, secs(p.quality.first_log_s))));
    fill(body, h("table", { id: "pools" },
      h("tr", {}, ["Pool (CPI)", "Health", "Region", "Accelerator", "In use", "Utilization", "Price", "Heartbeat", "Availability (1 h)", "Success", "Queue wait", "First log"].map((c) => h("th", {}, c))),
      rows), pager.controls(page.next_page_token, load));
  };
  const refilter = () => { pager.reset(); load(); };
  health.addEventListener("change", refilter);
  search.addEventListener("change", refilter);
  fill(main, h("h1", {}, "Pools"), h("div", { class: "filters" }, health, search), body);
  return every(5000, () => load().catch(() => {}));
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
  return every(5000, () => load().catch(() => {}));
}

export function task(main, id) {
  return every(1500, async () => {
    const t = await api(`/api/v1/tasks/${encodeURIComponent(id)}`);
    const logs = (t.attempts || []).flatMap((a) => a.executors.map((e) => h("div", {},
      h("h2", {}, `Attempt ${a.attempt}, executor ${e.index} — exit code ${e.exit_code ?? "…"}`),
      h("pre", { class: "stdout" }, e.stdout || ""), e.stderr ? h("pre", { class: "stderr" }, e.stderr) : null)));
    fill(main, 
      h("h1", {}, `Task ${t.id} `, h("span", { id: "task-state" }, badge(t.state))),
      h("p", {}, `Name: ${t.name || "–"} · pool: ${t.pool || "not placed"} · attempt ${t.attempt}`),
      t.reason ? h("p", { id: "placement" }, h("b", {}, "Placement: "), t.reason) : null,
      h("h2", {}, "Timeline"),
      h("table", { id: "timeline" }, h("tr", {}, h("th", {}, "At"), h("th", {}, "State"), h("th", {}, "Event")),
        (t.events || []).map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, badge(e.state)), h("td", {}, e.message)))),
      h("h2", {}, "Logs"), logs.length ? logs : h("p", { class: "muted" }, "no output yet"),
      h("h2", {}, "Usage"),
      h("table", {}, h("tr", {}, ["Attempt", "Pool", "Wall s", "Card-hours", "Core-hours", "PFLOPS-h FP16"].map((c) => h("th", {}, c))),
        (t.usage || []).map((u) => h("tr", {}, [u.attempt, u.pool, u.wall_s, u.card_hours, u.cpu_core_hours, u.pflops_hours_fp16 ?? "–"].map((v) => h("td", {}, v))))));
  });
}

export async function usage(main) {
  const bucket = h("select", {}, h("option", { value: "3600" }, "per hour"), h("option", { value: "86400" }, "per day"));
  const charts = h("div", { class: "row" });
  const load = async () => {
    const sinceS = 7 * 86400;
    const s = await api("/api/v1/console/usage", { params: { bucket_s: bucket.value, since_s: sinceS } });
    const points = fillBuckets(s.points, s.bucket_s, sinceS);
    fill(charts, barChart(points, "cost", { title: "Cost (ledger charges)" }), barChart(points, "card_hours", { title: "Card-hours" }),
      barChart(points, "cpu_core_hours", { title: "CPU core-hours" }), barChart(points, "tasks", { title: "Tasks metered", fmt: (v) => String(v) }));
  };
  bucket.addEventListener("change", load);
  const reservations = h("div", {});
  fill(main, h("h1", {}, "Usage and cost, last 7 days"), h("div", { class: "filters" }, bucket), charts,
    h("h2", {}, "Advance reservations"), reservations);
  const rows = await api("/api/v1/reservations");
  fill(reservations, rows.length === 0 ? h("p", { class: "muted" }, "none (computenet reserve create …)") :
    h("table", { id: "reservations" },
      h("tr", {}, ["Reservation", "Tenant", "Pool", "Cards", "Starts", "Ends", "State", "Cost"].map((c) => h("th", {}, c))),
      rows.map((r) => h("tr", {}, h("td", {}, r.id), h("td", {}, r.tenant), h("td", {}, r.pool), h("td", {}, `${r.cards} × ${r.model}`),
        h("td", {}, when(r.starts_at)), h("td", {}, when(r.ends_at)), h("td", {}, r.state), h("td", { class: "num" }, `${r.cost} ${r.currency}`)))));
  await load();
}

export async function network(main) {
  const [lat, quality] = await Promise.all([api("/api/v1/console/latency"), api("/api/v1/console/providers/quality")]);
  fill(main, h("h1", {}, "Network and quality"),
    h("h2", {}, "Latency matrix (measured: gateway → its node, child node → its parent; mean RTT over 1 h)"),
    h("table", { id: "latency" }, h("tr", {}, h("th", {}, "From"), h("th", {}, "To"), h("th", {}, "RTT")),
      lat.map((e) => h("tr", {}, h("td", {}, `${e.from_name} (${e.from_region})`), h("td", {}, `${e.to_name} (${e.to_region})`), h("td", { class: "num" }, `${e.rtt_ms.toFixed(2)} ms`)))),
    h("h2", {}, "Providers (last hour)"),
    h("table", { id: "provider-quality" }, h("tr", {}, ["Provider", "Availability", "Success rate", "Completed", "Failed", "Oldest heartbeat"].map((c) => h("th", {}, c))),
      quality.map((p) => h("tr", {}, h("td", {}, p.prefix), h("td", { class: "num" }, pct(p.quality.availability)), h("td", { class: "num" }, pct(p.quality.success_rate)),
        h("td", { class: "num" }, p.quality.completed), h("td", { class: "num" }, p.quality.failed), h("td", { class: "num" }, secs(p.quality.heartbeat_age_s))))));
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
