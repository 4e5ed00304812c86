// The console's Services page: each service's replicas on the map (coloured by health),
// the traffic split between them (requests in flight on each, from the router's metric plane
// when this node runs one), p50/p95 latency over time per site and replica (as this node's
// router observed it), and their state, node, gateway, region and price.
import { api, fill, h, badge, num } from "./lib.js";
import { chart, loadChinaMap } from "./charts.js";

const HEALTH_COLOUR = { true: "#1a7f37", false: "#cf222e", null: "#0969da" };

function replicaMap(s) {
  const points = (s.replicas || []).filter((r) => r.lat !== undefined && r.lat !== null).map((r) => ({
    name: `${s.name}#${r.replica}`,
    value: [r.lon, r.lat, r.in_flight || 0],
    itemStyle: { color: HEALTH_COLOUR[r.healthy === undefined ? null : r.healthy] },
    replica: r,
  }));
  return chart(`service-map-${s.name}`, {
    tooltip: {
      trigger: "item",
      formatter: (p) => {
        const r = p.data && p.data.replica;
        if (!r) return p.name;
        return `<b>${p.name}</b> v${r.version} · ${r.state}<br>node ${r.node} · ${r.region_name} (${r.region})` +
          (r.in_flight === undefined ? "" : `<br>${num(r.in_flight)} in flight`);
      },
    },
    geo: {
      map: "cn-provinces", roam: true, zoom: 1.2, center: [104.5, 36],
      itemStyle: { areaColor: "#f6f8fa", borderColor: "#8c959f", borderWidth: 0.6 },
      label: { show: false },
    },
    series: [{
      type: "effectScatter", coordinateSystem: "geo", data: points,
      symbolSize: (v) => 10 + Math.min(16, 2 * Math.sqrt(v[2] || 0)),
      label: { show: true, formatter: "{b}", position: "right", color: "#1f2328" },
    }],
  }, { height: 360, cls: "map" });
}

function trafficSplit(s) {
  const data = (s.replicas || []).map((r) => ({ name: `#${r.replica} ${r.region_name || r.node}`, value: r.in_flight || 0 }));
  return chart(`service-split-${s.name}`, {
    tooltip: { trigger: "item", formatter: (p) => `${p.name}: ${num(p.value)} in flight (${p.percent}%)` },
    legend: { bottom: 0 },
    series: [{ type: "pie", radius: ["40%", "68%"], center: ["50%", "44%"], label: { show: false }, data }],
  }, { height: 260, cls: "small" });
}

// p50 (solid) and p95 (dashed) total latency per site and per replica of this node, one
// point per time slot of the router's histograms (GET /api/v1/services/<name>/latency).
function latencyChart(s, lat) {
  const series = [];
  for (const x of (lat && lat.series) || []) {
    if (!x.points.length) continue;
    const label = x.kind === "site" ? `${x.key}${x.region ? ` (${x.region})` : ""}` : x.label;
    for (const [stat, dash] of [["p50", "solid"], ["p95", "dashed"]]) {
      series.push({
        name: `${label} ${stat}`, type: "line", showSymbol: false, lineStyle: { type: dash },
        data: x.points.map((p) => [p.at * 1000, p[`${stat}_ms`], p.requests]),
      });
    }
  }
  if (!series.length) {
    return h("p", { class: "muted", "data-chart-empty": `service-latency-${s.name}` },
      "No latency yet: no request of this service has gone through this node's router.");
  }
  return chart(`service-latency-${s.name}`, {
    title: { text: "Latency (ms)", textStyle: { fontSize: 13, fontWeight: "normal" } },
    tooltip: { trigger: "axis", valueFormatter: (v) => `${num(v)} ms` },
    legend: { type: "scroll", bottom: 0 },
    grid: { left: 48, right: 12, top: 32, bottom: 48 },
    xAxis: { type: "time", axisLabel: { hideOverlap: true } },
    yAxis: { type: "value", name: "ms" },
    series,
  }, { height: 280, cls: "small" });
}

function replicaTable(s) {
  const health = (r) => (r.healthy === undefined ? "–" : r.healthy ? "healthy" : "unhealthy");
  return h("table", { class: "replicas", "data-service": s.name },
    h("tr", {}, ["Replica", "Version", "State", "Health", "In flight", "Node", "Region", "Gateway", "Price/card-h"].map((c) => h("th", {}, c))),
    (s.replicas || []).map((r) => h("tr", { "data-task": r.task_id },
      h("td", {}, h("a", { href: `#/task/${encodeURIComponent(r.task_id)}` }, `#${r.replica}`)),
      h("td", {}, r.version), h("td", {}, badge(r.state)), h("td", {}, health(r)),
      h("td", { class: "num" }, r.in_flight === undefined ? "–" : num(r.in_flight)),
      h("td", {}, r.node), h("td", {}, r.region ? `${r.region_name} (${r.region})` : "–"),
      h("td", {}, r.gateway || "–"), h("td", { class: "num" }, r.price_per_card_hour === undefined ? "–" : num(r.price_per_card_hour)))));
}

export async function services(main) {
  const list = await api("/api/v1/services");
  if (!list.length) {
    fill(main, h("h1", {}, "Services"),
      h("p", { class: "muted", id: "no-services" }, "No services. Deploy one with: computenet service deploy -f service.yaml"));
    return null;
  }
  const get = (s, what) => api(`/api/v1/services/${encodeURIComponent(s.name)}${what}`);
  const [details, latency] = await Promise.all([
    Promise.all(list.map((s) => get(s, ""))), Promise.all(list.map((s) => get(s, "/latency"))), loadChinaMap()]);
  fill(main, h("h1", {}, "Services"),
    details.map((s, i) => {
      const load = s.load ? ` · ${num(s.load.in_flight)} in flight · ${s.load.requests_per_s.toFixed(1)} req/s` : "";
      return h("section", { class: "panel", "data-service": s.name },
        h("h2", {}, `${s.name} `, h("span", { class: "muted" },
          `v${s.version} · ${s.state} · ${s.live}/${s.desired} replicas (min ${s.min}, max ${s.max}) · ${s.access}${load}`)),
        s.note ? h("p", { class: "error" }, s.note) : "",
        h("div", { class: "row" }, h("div", { class: "grow" }, replicaMap(s)), h("div", { class: "side" }, trafficSplit(s), latencyChart(s, latency[i]))),
        replicaTable(s));
    }));
  return null;
}
