// The console's entry point: login with a token, then a hash router over the pages.
import { api, closeLive, fill, h, token, ApiError } from "./lib.js";
import { disposeCharts } from "./charts.js";
import * as pages from "./pages.js";
import { services } from "./services.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let stop = null;

function go(hash) { location.hash = hash; }

function login(message) {
  nav.hidden = true;
  closeLive();
  document.getElementById("node-name").textContent = "";
  const input = h("input", { id: "token", type: "password", placeholder: "API token", size: 50, autocomplete: "off" });
  const form = h("form", { id: "login", class: "panel" }, h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "Paste an API token (admin or user). It is kept in this tab only."),
    input, " ", h("button", { class: "primary", type: "submit" }, "Log in"), h("p", { class: "error" }, message || ""));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token.set(input.value.trim());
    route();
  });
  fill(main, form);
}

async function route() {
  if (stop) { stop(); stop = null; }
  disposeCharts();
  if (!token.get()) return login();
  let node;
  try { node = await api("/api/v1/node"); } catch (e) {
    token.clear();
    return login(e instanceof ApiError && e.status === 401 ? "That token was refused." : e.message);
  }
  document.getElementById("node-name").textContent = `${node.name} · ${node.code} · v${node.version}`;
  nav.hidden = false;
  const [, page, arg] = (location.hash || "#/overview").split("/");
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.getAttribute("href") === `#/${page}`);
  try {
    const render = { overview: pages.overview, pools: pages.pools, tasks: pages.tasks, usage: pages.usage, network: pages.network, services };
    if (page === "task") stop = pages.task(main, decodeURIComponent(arg || ""));
    else if (page === "submit") pages.submit(main, go);
    else stop = (await (render[page] || pages.overview)(main)) || null;
  } catch (e) {
    fill(main, h("p", { class: "error" }, `Could not load this page: ${e.message}`));
  }
}

document.getElementById("logout").addEventListener("click", () => { token.clear(); go("#/overview"); route(); });
window.addEventListener("hashchange", route);
route();
