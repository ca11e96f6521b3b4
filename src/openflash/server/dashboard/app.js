// The openflash dashboard: polls /_flash/state and renders it. No framework, no network beyond
// this server.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  return value < 1 ? `${(value * 1000).toFixed(1)} ms` : `${value.toFixed(2)} s`;
}

// A job's latest openflash.progress value: text as it is, anything else as compact JSON.
function progressText(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function endpointCard(ep) {
  const build = ep.build || { state: "pending", log: [] };
  const pool = ep.pool || { detail: [] };
  const workers = (pool.detail || []).map((w) =>
    el("span", { class: `worker ${w.calls > 0 ? "busy" : w.state === "ready" ? "idle" : ""}`,
                 "data-pid": String(w.pid || "") },
       `pid ${w.pid ?? "…"} · ${w.calls > 0 ? "busy" : w.state === "ready" ? "idle" : w.state}`
       + (w.gpus && w.gpus.length ? ` · GPU ${w.gpus.join(",")}` : "")
       + (w.node && w.node !== "local" ? ` · node ${w.node}` : "")));
  const log = build.log && build.log.length && build.state !== "ready"
    ? el("pre", { class: "log" }, build.log.slice(-40).join("\n")) : null;
  const error = build.error ? el("pre", { class: "log error" }, build.error) : null;
  return el("div", { class: "card endpoint", "data-endpoint": ep.name },
    el("h3", {}, ep.name, el("span", { class: `badge ${build.state}` }, build.state)),
    el("div", { class: "meta" },
       `${ep.hardware} · workers ${ep.workers[0]}–${ep.workers[1]} · ${(pool.detail || []).length} running`),
    el("ul", { class: "routes" }, ep.routes.map((r) => el("li", {}, r))),
    ep.dependencies.length || ep.system_dependencies.length
      ? el("ul", { class: "deps" },
           ep.dependencies.map((d) => el("li", {}, `pip ${d}`)),
           ep.system_dependencies.map((d) => el("li", {}, `apt ${d}`)))
      : el("div", { class: "meta" }, "no dependencies"),
    workers.length ? el("div", { class: "workers" }, workers) : null,
    log, error);
}

function render(state) {
  $("project").textContent = state.project;
  const cards = state.endpoints.map(endpointCard);
  $("endpoints").replaceChildren(...(cards.length ? cards : [el("p", { class: "dim" }, "no endpoints found")]));
  const rows = state.recent.map((call) =>
    el("tr", { class: "call" },
       el("td", {}, new Date(call.time * 1000).toLocaleTimeString()),
       el("td", {}, call.route),
       el("td", {}, call.kind),
       el("td", { class: `status-${call.status}` },
          call.attempt > 1 ? `${call.status} (attempt ${call.attempt})` : call.status),
       el("td", {}, seconds(call.seconds)),
       el("td", { class: "progress" }, progressText(call.progress))));
  $("recent").tBodies[0].replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "6", class: "dim" }, "no calls yet"))]));
  // What a template imported by name (the first few), and how many learned modules it holds.
  const preloadedText = (t) => {
    const names = t.preloaded || [];
    const more = names.length > 8 ? `, +${names.length - 8} more` : "";
    return (names.slice(0, 8).join(", ") + more || "-") + (t.learned ? ` (${t.learned} learned)` : "");
  };
  const templates = (state.templates || []).map((t) =>
    el("tr", { class: "template" },
       el("td", {}, String(t.pid ?? "stopped")),
       el("td", {}, t.environment || ""),
       el("td", {}, preloadedText(t)),
       el("td", {}, t.rss ? `${(t.rss / 2 ** 20).toFixed(0)} MiB` : ""),
       el("td", {}, String(t.forks))));
  $("templates").tBodies[0].replaceChildren(
    ...(templates.length ? templates
      : [el("tr", {}, el("td", { colspan: "5", class: "dim" }, "no templates (workers are spawned)"))]));
  $("events").replaceChildren(...state.events.slice().reverse().map((e) =>
    el("li", { class: e.level }, `${new Date(e.time * 1000).toLocaleTimeString()}  ${e.message}`)));
  const problems = $("problems");
  problems.hidden = state.failures.length === 0;
  problems.replaceChildren(...state.failures.map((f) =>
    el("div", {}, el("strong", {}, `${f.file} failed to import`), el("pre", { class: "log error" }, f.traceback))));
  const skipped = $("skipped");
  skipped.hidden = !(state.skipped || []).length;
  skipped.textContent = `not imported (nothing decorated in them): ${(state.skipped || []).join(", ")}`;
  if (state.layer_mode) $("layer-mode").textContent = `system layers: ${state.layer_mode.name} mode (${state.layer_mode.reason})`;
  document.body.dataset.loaded = "true";
}

async function refresh() {
  try {
    const response = await fetch("/_flash/state", { cache: "no-store" });
    if (response.ok) render(await response.json());
  } catch (err) {
    // The server is restarting: keep the last picture and try again.
  }
  setTimeout(refresh, 1000);
}

refresh();
