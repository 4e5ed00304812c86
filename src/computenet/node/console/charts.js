// Charts and the map, drawn with Apache ECharts (vendor/echarts-*.min.js, the global
// ``echarts``, loaded on the first page that draws a chart: pages without charts do not pay
// for parsing it). Every chart made here is disposed on page change.
import { h, ms, num } from "./lib.js";

const ECHARTS = "vendor/echarts-6.1.0.min.js";
const made = new Set();
let mapReady = null, libReady = null;

export function loadECharts() {
  if (!libReady) {
    libReady = new Promise((resolve, reject) => {
      const tag = h("script", { src: ECHARTS });
      tag.addEventListener("load", resolve);
      tag.addEventListener("error", () => { libReady = null; reject(new Error("could not load ECharts")); });
      document.head.append(tag);
    });
  }
  return libReady;
}

const PALETTE = ["#0969da", "#1a7f37", "#bf8700", "#8250df", "#cf222e", "#1b7c83", "#953800", "#6e7781"];

// A chart in a new panel element; ``name`` marks it (data-chart) for tests and styles.
export function chart(name, option, { height = 320, cls = "" } = {}) {
  const el = h("div", { class: `chart ${cls}`, "data-chart": name, style: `height:${height}px` });
  // Wait for ECharts, and for the element to be in the page so ECharts can read its size.
  loadECharts().then(() => requestAnimationFrame(() => {
    if (!el.isConnected) return;
    const c = echarts.init(el, null, { renderer: "canvas" });
    c.setOption({ color: PALETTE, animationDuration: 300, animationDurationUpdate: 200,
      textStyle: { fontFamily: "system-ui, sans-serif" }, ...option });
    made.add(c);
  })).catch(() => el.replaceChildren(h("p", { class: "error" }, "could not load the charting library")));
  return el;
}

export function instance(el) { return el && el.isConnected && window.echarts ? echarts.getInstanceByDom(el) : null; }

export function disposeCharts() {
  for (const c of made) c.dispose();
  made.clear();
}

window.addEventListener("resize", () => { for (const c of made) c.resize(); });

// The China map (Natural Earth provinces, see vendor/PROVENANCE.md), registered once. Not
// under the name "china": ECharts adds shapes of its own to a map of that name.
export function loadChinaMap() {
  if (!mapReady) {
    mapReady = Promise.all([fetch("vendor/china-provinces.json").then((r) => r.json()), loadECharts()])
      .then(([geo]) => { echarts.registerMap("cn-provinces", geo); })
      .catch((e) => { mapReady = null; throw e; });
  }
  return mapReady;
}

const RELATION_COLOUR = { self: "#cf222e", parent: "#8250df", subtree: "#1a7f37", elsewhere: "#57606a" };

// Pools per province as a choropleth, nodes as markers, parent-child links with their
// measured round-trip times on the edges.
export function federationMap(provinces, fed) {
  const most = Math.max(1, ...provinces.map((p) => p.pools));
  const placed = new Map();
  const seen = new Map();
  for (const n of fed.nodes) {
    if (n.lat === null) continue;
    // Nodes in one province would sit on one point: fan them out a little.
    const k = `${n.lat},${n.lon}`;
    const i = seen.get(k) || 0;
    seen.set(k, i + 1);
    placed.set(n.code, [n.lon + 1.1 * i, n.lat - 0.5 * i]);
  }
  const links = fed.links.filter((l) => placed.has(l.parent) && placed.has(l.child)).map((l) => ({
    coords: [placed.get(l.child), placed.get(l.parent)],
    name: `${l.child} → ${l.parent}`,
    rtt: l.rtt_ms,
    samples: l.samples,
    label: { show: true, formatter: l.rtt_ms === null ? "RTT not measured here" : ms(l.rtt_ms) },
  }));
  const nodes = fed.nodes.filter((n) => placed.has(n.code)).map((n) => ({
    name: n.code,
    value: [...placed.get(n.code), n.pools],
    node: n,
    itemStyle: { color: RELATION_COLOUR[n.relation] || "#57606a" },
  }));
  return chart("map", {
    tooltip: {
      trigger: "item",
      formatter: (p) => {
        if (p.seriesType === "map") {
          const d = p.data || {};
          return `<b>${p.name}</b><br>${num(d.value || 0)} pools, ${num(d.healthy || 0)} healthy<br>` +
            `${num(d.cards || 0)} cards, ${num(d.cpu_cores || 0)} CPU cores`;
        }
        if (p.seriesType === "lines") {
          const d = p.data;
          return `<b>${d.name}</b><br>` + (d.rtt === null ? "not measured by this node" :
            `mean RTT ${ms(d.rtt)} over the last hour (${d.samples} samples)`);
        }
        const n = p.data.node;
        return `<b>node ${n.code}</b> (${n.relation === "self" ? "this node" : n.relation})<br>` +
          `${num(n.pools)} pools, ${num(n.healthy)} healthy`;
      },
    },
    visualMap: {
      min: 0, max: most, seriesIndex: 0, left: 10, bottom: 10, calculable: true, precision: 0,
      inRange: { color: ["#f0f5fb", "#9ec5f4", "#0969da"] }, formatter: (v) => `${num(v)} pools`,
    },
    geo: {
      map: "cn-provinces", roam: true, zoom: 1.2, center: [104.5, 36],
      itemStyle: { areaColor: "#f6f8fa", borderColor: "#8c959f", borderWidth: 0.6 },
      emphasis: { itemStyle: { areaColor: "#ffdf5d" }, label: { show: false } },
      label: { show: false },
    },
    series: [
      {
        type: "map", geoIndex: 0, name: "pools",
        data: provinceData(provinces),
      },
      {
        type: "lines", coordinateSystem: "geo", zlevel: 1, data: links,
        lineStyle: { color: "#bf8700", width: 2, curveness: 0.25, opacity: 0.9 },
        label: { show: true, position: "middle", color: "#57606a", fontSize: 11 },
        effect: { show: false },
      },
      {
        type: "effectScatter", coordinateSystem: "geo", zlevel: 2, data: nodes,
        symbolSize: (v) => 8 + Math.min(14, Math.sqrt(v[2] || 0)),
        rippleEffect: { scale: 2.5, brushType: "stroke" },
        label: { show: true, formatter: "{b}", position: "right", color: "#1f2328", fontWeight: "bold" },
      },
    ],
  }, { height: Math.round(Math.min(680, Math.max(440, 0.62 * window.innerHeight))), cls: "map" });
}

const provinceData = (provinces) => provinces.map((p) => ({ name: p.name, value: p.pools, healthy: p.healthy, cards: p.cards, cpu_cores: p.cpu_cores }));

// New pool counts on a drawn map, keeping the operator's pan and zoom.
export function updateFederationMap(el, provinces) {
  const c = instance(el);
  if (!c) return false;
  c.setOption({ visualMap: { max: Math.max(1, ...provinces.map((p) => p.pools)) }, series: [{ data: provinceData(provinces) }] });
  return true;
}

// Stacked bars per group over a time axis, with tooltips and zoom. ``groups`` are
// ``[{key, values}]`` aligned with ``starts``.
export function stackedTime(name, starts, groups, { unit, bucketS, active }) {
  const times = starts.map((s) => new Date(s).getTime());
  const series = groups.map((g) => ({
    name: g.key, type: "bar", stack: "all", barMaxWidth: 28, emphasis: { focus: "series" },
    data: g.values.map((v, i) => [times[i], Number(v)]),
  }));
  // Open on the span that has data (plus a little either side), not a week of empty bars.
  // ``active``: bucket indexes with data in any chart of the page, so all open on one span.
  const used = times.filter((_, i) => (active ? active.has(i) : groups.some((g) => Number(g.values[i]) > 0)));
  const pad = 3 * bucketS * 1000;
  const zoom = used.length ? { startValue: Math.max(times[0], used[0] - pad), endValue: times[times.length - 1] } : {};
  return chart(name, {
    tooltip: {
      trigger: "axis", axisPointer: { type: "shadow" },
      valueFormatter: (v) => `${num(v)} ${unit}`,
    },
    legend: { type: "scroll", top: 0 },
    grid: { left: 64, right: 24, top: 36, bottom: 72 },
    xAxis: { type: "time", axisLabel: { hideOverlap: true } },
    yAxis: { type: "value", name: unit, nameGap: 14, axisLabel: { formatter: (v) => num(v) } },
    dataZoom: [{ type: "inside", ...zoom }, { type: "slider", height: 22, bottom: 12, ...zoom }],
    series: series.length ? series : [{ name: "nothing metered", type: "bar", data: times.map((t) => [t, 0]) }],
  }, { height: 340 });
}

// The region-to-region latency matrix as a heat map (rows: from, columns: to).
export function latencyHeatmap(entries) {
  const froms = [...new Set(entries.map((e) => `${e.from_name} (${e.from_region})`))].sort();
  const tos = [...new Set(entries.map((e) => `${e.to_name} (${e.to_region})`))].sort();
  const data = entries.map((e) => [tos.indexOf(`${e.to_name} (${e.to_region})`), froms.indexOf(`${e.from_name} (${e.from_region})`), e.rtt_ms]);
  const most = Math.max(1, ...entries.map((e) => e.rtt_ms));
  return chart("latency", {
    tooltip: {
        formatter: (p) => `${froms[p.value[1]]} → ${tos[p.value[0]]}<br>mean RTT <b>${ms(p.value[2])}</b> over the last hour`,
    },
    grid: { left: 150, right: 110, top: 34, bottom: 60 },
    xAxis: { type: "category", data: tos, name: "to", nameLocation: "middle", nameGap: 36, splitArea: { show: true } },
    yAxis: { type: "category", data: froms, name: "from", nameLocation: "end", nameGap: 10, splitArea: { show: true } },
    // A fixed scale up to 50 ms (more when measured): a 10 ms national link is green.
    visualMap: {
      min: 0, max: Math.max(50, Math.ceil(most)), calculable: true, orient: "vertical", right: 10, top: "center",
      formatter: (v) => `${Math.round(v)} ms`, inRange: { color: ["#2da44e", "#ffdf5d", "#cf222e"] },
    },
    series: [{
      name: "RTT", type: "heatmap", data,
      label: { show: true, formatter: (p) => ms(p.value[2]), color: "#1f2328" },
      emphasis: { itemStyle: { shadowBlur: 6, shadowColor: "rgba(0,0,0,.3)" } },
    }],
  }, { height: Math.max(220, 80 + 44 * froms.length) });
}

const HEALTH_COLOUR = { healthy: "#1a7f37", unhealthy: "#cf222e", unavailable: "#afb8c1" };
const healthData = (byHealth) => Object.entries(byHealth).map(([k, v]) => ({ name: k, value: v, itemStyle: { color: HEALTH_COLOUR[k] } }));

export function updateDonut(el, byHealth) {
  const c = instance(el);
  if (!c) return false;
  c.setOption({ series: [{ data: healthData(byHealth) }] });
  return true;
}

// Pools by health, as a doughnut beside the counters.
export function healthDonut(byHealth) {
  return chart("health", {
    tooltip: { trigger: "item", formatter: (p) => `${p.name}: ${num(p.value)} pools (${p.percent}%)` },
    legend: { bottom: 0 },
    series: [{
      type: "pie", radius: ["48%", "72%"], center: ["50%", "44%"], avoidLabelOverlap: true,
      label: { show: false },
      data: healthData(byHealth),
    }],
  }, { height: 220, cls: "small" });
}
