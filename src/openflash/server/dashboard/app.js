// The openflash dashboard: renders what /_flash/live pushes (server-sent events: the state each
// time it changes; no polling), and a call's detail from /_flash/calls/{id}. No framework, no
// network beyond this server. Every value is written as text (el() makes text nodes), never as
// markup, so nothing a user sent or a worker printed can inject HTML.
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
  const lines = ep.output || [];
  const output = lines.length
    ? el("details", { class: "output" },
         el("summary", {}, `worker output (last ${lines.length} lines)`),
         outputLines(lines, "log endpoint-output"))
    : null;
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
    log, error, output);
}

// Lines a worker printed ({time, pid, stream, line}), stderr marked.
function outputLines(lines, cls) {
  return el("pre", { class: cls }, lines.map((l) =>
    el("span", { class: l.stream }, `${new Date(l.time * 1000).toLocaleTimeString()} [${l.pid}] ${l.line}\n`)));
}

let openCall = null;   // the id of the call whose detail is shown
let openStatus = null; // its status when last fetched: a change fetches it again

function row(label, value) {
  return value === null || value === undefined || value === ""
    ? [] : [el("dt", {}, label), el("dd", {}, String(value))];
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleTimeString() : null;
}

function valueBlock(title, value, cls) {
  if (!value) return [];
  const size = value.bytes < 1024 ? `${value.bytes} bytes` : `${(value.bytes / 1024).toFixed(1)} KiB`;
  return [el("h3", {}, `${title} (${size}${value.cut ? ", cut for this page" : ""})`),
          el("pre", { class: `value ${cls}` }, value.json)];
}

function errorBlock(error) {
  if (!error) return [];
  const parts = [el("h3", {}, "Error"), el("pre", { class: "value error call-error" }, error.message)];
  if (error.more) parts.push(el("pre", { class: "value error" }, error.more));
  if (error.hint) parts.push(el("p", { class: "hint" }, `hint: ${error.hint}`));
  if (error.traceback) {
    parts.push(el("h3", {}, "Remote traceback (your frames first)"),
               el("pre", { class: "value error traceback" }, error.traceback));
  }
  if (error.openflash_frames) {
    parts.push(el("details", { class: "output" }, el("summary", {}, "the frames before yours (openflash, importlib, cloudpickle)"),
                  el("pre", { class: "value" }, error.openflash_frames)));
  }
  return parts;
}

function renderDetail(call) {
  const box = $("call-detail");
  const t = call.timings || {};
  const env = call.environment;
  const output = call.worker_output || [];
  box.replaceChildren(
    el("h2", {}, "Call ", el("code", {}, call.id),
       el("span", { class: `badge ${call.status}` }, call.status),
       el("button", { class: "close", type: "button" }, "close")),
    el("dl", {},
       row("route", call.route), row("endpoint", call.endpoint), row("kind", call.kind),
       row("attempt", call.attempt), row("worker pid", call.worker && call.worker.pid),
       row("received", when(t.received)), row("started", when(t.started)),
       row("ended", when(t.ended)), row("duration", seconds(t.seconds)),
       row("queue wait", seconds(t.queue_wait)),
       row("progress", progressText(call.progress))),
    ...valueBlock("Input", call.input, "input"),
    ...valueBlock("Output", call.output, "output"),
    ...errorBlock(call.error),
    el("h3", {}, "Environment"),
    env ? el("dl", {},
             row("hardware", env.hardware),
             row("pip", env.dependencies.join(", ") || "none"),
             row("apt", env.system_dependencies.join(", ") || "none"))
        : el("p", { class: "dim" }, "the endpoint is no longer served"),
    el("h3", {}, `Worker output during the call (${output.length} line${output.length === 1 ? "" : "s"})`),
    output.length ? outputLines(output, "log call-output") : el("p", { class: "dim" }, "nothing printed"));
  box.querySelector("button.close").addEventListener("click", closeDetail);
  box.hidden = false;
  box.dataset.call = call.id;
  box.dataset.status = call.status;
}

async function showCall(id) {
  openCall = id;
  for (const tr of document.querySelectorAll("tr.call")) tr.classList.toggle("open", tr.dataset.id === id);
  if (location.hash !== `#call=${id}`) history.replaceState(null, "", `#call=${encodeURIComponent(id)}`);
  let response;
  try {
    response = await fetch(`/_flash/calls/${encodeURIComponent(id)}`, { cache: "no-store" });
  } catch (err) {
    return; // the server is restarting: the next pushed state asks again
  }
  if (openCall !== id) return;
  if (!response.ok) {
    $("call-detail").replaceChildren(el("p", { class: "dim" }, `call ${id}: ${(await response.json()).detail}`));
    $("call-detail").hidden = false;
    return;
  }
  const call = await response.json();
  openStatus = call.status;
  renderDetail(call);
}

function closeDetail() {
  openCall = openStatus = null;
  $("call-detail").hidden = true;
  history.replaceState(null, "", location.pathname);
  for (const tr of document.querySelectorAll("tr.call.open")) tr.classList.remove("open");
}

function render(state) {
  $("project").textContent = state.project;
  const cards = state.endpoints.map(endpointCard);
  $("endpoints").replaceChildren(...(cards.length ? cards : [el("p", { class: "dim" }, "no endpoints found")]));
  const rows = state.recent.map((call) => {
    const tr = el("tr", { class: `call${call.id === openCall ? " open" : ""}`, "data-id": call.id,
                          "data-status": call.status },
       el("td", {}, new Date(call.time * 1000).toLocaleTimeString()),
       el("td", {}, call.route),
       el("td", {}, call.kind),
       el("td", { class: `status-${call.status}` },
          call.attempt > 1 ? `${call.status} (attempt ${call.attempt})` : call.status,
          call.error ? el("div", { class: "error-line" }, call.error) : null),
       el("td", {}, seconds(call.seconds)),
       el("td", {}, call.worker_pid ? `pid ${call.worker_pid}` : ""),
       el("td", { class: "progress" }, progressText(call.progress)));
    tr.addEventListener("click", () => showCall(call.id));
    return tr;
  });
  $("recent").tBodies[0].replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "7", class: "dim" }, "no calls yet"))]));
  const opened = state.recent.find((call) => call.id === openCall);
  const running = opened && (opened.status === "IN_QUEUE" || opened.status === "IN_PROGRESS");
  if (opened && (running || opened.status !== openStatus)) showCall(openCall); // as it is now
  // What a template imported by name (the first few), and how many learned modules it holds.
  const preloadedText = (t) => {
    const names = t.preloaded || [];
    const more = names.length > 8 ? `, +${names.length - 8} more` : "";
    return (names.slice(0, 8).join(", ") + more || "-") + (t.learned ? ` (${t.learned} learned)` : "");
  };
  const templates = (state.templates || []).map((t) =>
    el("tr", { class: "template" },
       el("td", {}, String(t.pid ?? "stopped")),
       el("td", {}, t.endpoint || "", el("span", { class: "dim" }, t.environment ? ` · ${t.environment.slice(0, 12)}` : "")),
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
    el("div", {}, el("strong", {}, `${f.file} failed to import`),
       el("pre", { class: "log error" }, f.traceback),
       f.openflash_frames ? el("details", { class: "output" }, el("summary", {}, "the frames before yours (openflash, importlib, cloudpickle)"),
                               el("pre", { class: "log" }, f.openflash_frames)) : null)));
  const skipped = $("skipped");
  skipped.hidden = !(state.skipped || []).length;
  skipped.textContent = `not imported (nothing decorated in them): ${(state.skipped || []).join(", ")}`;
  if (state.layer_mode) $("layer-mode").textContent = `system layers: ${state.layer_mode.name} mode (${state.layer_mode.reason})`;
  document.body.dataset.loaded = "true";
}

// The server pushes the state whenever it changes; EventSource reconnects by itself after a
// restart (the server asks for a retry after 1 s).
function connect() {
  const live = new EventSource("/_flash/live");
  live.addEventListener("state", (event) => {
    render(JSON.parse(event.data));
    $("live").textContent = "live";
    $("live").className = "on";
  });
  live.addEventListener("error", () => {
    $("live").textContent = "reconnecting…";
    $("live").className = "off";
  });
}

connect();
const linked = /^#call=(.+)$/.exec(location.hash);
if (linked) showCall(decodeURIComponent(linked[1]));
