// SVG charts drawn by hand: a lat/lon plot of China and a bar chart over time.
import { h } from "./lib.js";

const LON = [73, 136], LAT = [17, 54];

export function chinaPlot(points, { width = 560, height = 380 } = {}) {
  const x = (lon) => ((lon - LON[0]) / (LON[1] - LON[0])) * width;
  const y = (lat) => height - ((lat - LAT[0]) / (LAT[1] - LAT[0])) * height;
  const grid = [];
  for (let lon = 75; lon <= 135; lon += 5) {
    grid.push(h("line", { x1: x(lon), x2: x(lon), y1: 0, y2: height, stroke: "#eaeef2" }));
    if (lon % 10 === 0) grid.push(h("text", { x: x(lon) + 2, y: height - 3 }, `${lon}°E`));
  }
  for (let lat = 20; lat <= 50; lat += 5) {
    grid.push(h("line", { x1: 0, x2: width, y1: y(lat), y2: y(lat), stroke: "#eaeef2" }));
    if (lat % 10 === 0) grid.push(h("text", { x: 3, y: y(lat) - 2 }, `${lat}°N`));
  }
  const most = Math.max(1, ...points.map((p) => p.pools));
  const dots = points.map((p) => {
    if (!p.pools) {
      return h("circle", { cx: x(p.lon), cy: y(p.lat), r: 2.5, fill: "#afb8c1" }, h("title", {}, `${p.name} (${p.code}): no pools`));
    }
    const r = 5 + 14 * Math.sqrt(p.pools / most);
    const colour = p.healthy === p.pools ? "#1a7f37" : p.healthy === 0 ? "#cf222e" : "#bf8700";
    return h("g", { class: "region", "data-code": p.code },
      h("circle", { cx: x(p.lon), cy: y(p.lat), r, fill: colour, "fill-opacity": 0.55, stroke: colour },
        h("title", {}, `${p.name} (${p.code}): ${p.pools} pools, ${p.healthy} healthy, ${p.cards} cards, ${p.cpu_cores} cores`)),
      h("text", { x: x(p.lon) + r + 2, y: y(p.lat) + 3 }, `${p.name} ${p.pools}`));
  });
  return h("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "panel", role: "img", "aria-label": "pools by region" }, grid, dots);
}

// Every bucket from ``sinceS`` ago to now, zero where the API returned none.
export function fillBuckets(points, bucketS, sinceS) {
  const byStart = new Map(points.map((p) => [Math.floor(new Date(p.start).getTime() / 1000), p]));
  const now = Math.floor(Date.now() / 1000);
  const out = [];
  for (let b = Math.floor((now - sinceS) / bucketS) * bucketS; b <= now; b += bucketS) {
    out.push(byStart.get(b) || { start: new Date(b * 1000).toISOString(), tasks: 0, card_hours: "0", cpu_core_hours: "0", pflops_hours_fp16: "0", cost: "0" });
  }
  return out;
}

const precise = (v) => (v === 0 ? "0" : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3));

export function barChart(points, key, { title, width = 640, height = 180, fmt = precise } = {}) {
  const values = points.map((p) => Number(p[key]));
  const most = Math.max(0, ...values);
  const top = most || 1; // all zero: flat bars, not a division by zero
  const pad = 30, w = (width - pad) / Math.max(1, values.length);
  const bars = values.map((v, i) => h("rect", {
    x: pad + i * w + 1, width: Math.max(1, w - 2), y: height - 20 - (v / top) * (height - 40),
    height: (v / top) * (height - 40), fill: "#0969da",
  }, h("title", {}, `${new Date(points[i].start).toLocaleString()}: ${fmt(v)}`)));
  const labels = points.length ? [
    h("text", { x: pad, y: height - 5 }, new Date(points[0].start).toLocaleString()),
    h("text", { x: width - 150, y: height - 5 }, new Date(points[points.length - 1].start).toLocaleString()),
  ] : [h("text", { x: pad, y: height / 2 }, "no usage recorded yet")];
  return h("div", { class: "panel" }, h("div", {}, `${title} (max ${fmt(most)})`),
    h("svg", { width, height, viewBox: `0 0 ${width} ${height}` }, bars, labels));
}
