// The dashboard page: renders the server's snapshots (server-sent events on /api/events)
// into the page the location's hash names. Plain JavaScript and SVG; no dependencies.
"use strict";

let snapshot = null;
let tapSource = null;
let shownRoute = "";

const page = () => document.getElementById("page");
const esc = (v) => String(v ?? "-").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const fixed = (v, digits = 1) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits));
const percent = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%");
const table = (head, rows, rowClass = () => "") =>
  `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>` +
  // Only warnings and errors are highlighted.
  rows.map((r, i) => `<tr class="${rowClass(i) === "ok" ? "" : rowClass(i)}">${r.join("")}</tr>`).join("") +
  "</tbody></table>";
// A padlock drawn in SVG (emoji fonts may be missing): mutual TLS.
const LOCK_SHAPES = '<rect x="1" y="5" width="8" height="7" rx="1" fill="currentColor"/>' +
  '<path d="M3 5V3.5a2 2 0 0 1 4 0V5" stroke="currentColor" fill="none" stroke-width="1.5"/>';
const LOCK = `<svg class="lock" width="10" height="12" viewBox="0 0 10 12">${LOCK_SHAPES}</svg>`;
const td = (v) => `<td>${esc(v)}</td>`;
const num = (v) => `<td class="num">${esc(v)}</td>`;

function route() {
  const parts = (location.hash || "#/overview").slice(2).split("/").map(decodeURIComponent);
  return { page: parts[0] || "overview", args: parts.slice(1) };
}

function render() {
  const r = route();
  const key = location.hash;
  document.querySelectorAll("header nav a").forEach((a) =>
    a.classList.toggle("active", a.getAttribute("href") === "#/" + r.page));
  if (key !== shownRoute) {
    stopTap();
    shownRoute = key;
    if (r.page === "workload") detailSkeleton(r.args);
  }
  if (!snapshot) return;
  const status = document.getElementById("check-status");
  status.dataset.status = snapshot.status;
  status.textContent = "checks: " + snapshot.status;
  document.getElementById("updated").textContent =
    "updated " + new Date(snapshot.at * 1000).toLocaleTimeString() +
    (snapshot.window_seconds ? `, window ${snapshot.window_seconds.toFixed(0)} s` : "") +
    ` (read in ${snapshot.took_ms} ms)`;
  const pages = { overview, graph: graphPage, certificates, findings, workload: detailRefresh };
  (pages[r.page] || overview)(r.args);
}

function overview() {
  const s = snapshot;
  let html = s.error ? `<div class="banner error">${esc(s.error)}</div>` : "";
  const failing = s.check_groups.filter((g) => g.status !== "ok").map((g) => g.group);
  html += `<div id="overview-status" class="banner ${s.status}" data-status="${s.status}">` +
    (failing.length ? `Checks failing: ${esc(failing.join(", "))}` : "All checks pass") + "</div>";
  html += "<h2>Namespaces</h2>" + table(
    ["namespace", "meshed / pods", "rps", "success", "p50 ms", "p99 ms", "conn/s", "mTLS"],
    s.namespaces.map((n) => [td(n.name), num(`${n.meshed_pods} / ${n.pods}`),
      num(fixed(n.requests_per_second, 2)), num(percent(n.success_rate)),
      num(fixed(n.latency_ms_p50)), num(fixed(n.latency_ms_p99)),
      num(fixed(n.tcp_opened / (s.window_seconds || 1), 2)), num(percent(n.mtls_share))]));
  const linked = (kind, r) => `<td><a href="#/workload/${kind}/${encodeURIComponent(r.namespace)}/` +
    `${encodeURIComponent(r.name)}">${esc(r.namespace)}/${esc(r.name)}</a></td>`;
  const golden = (kind, rows) => table(
    ["name", "meshed / pods", "rps", "success", "p99 ms", "conn/s", "mTLS"],
    rows.map((r) => [linked(kind, r), num(`${r.meshed_pods} / ${r.pods}`),
      num(fixed(r.requests_per_second, 2)), num(percent(r.success_rate)), num(fixed(r.latency_ms_p99)),
      num(fixed(r.tcp_opened / (s.window_seconds || 1), 2)), num(percent(r.mtls_share))]),
    (i) => (rows[i].success_rate !== null && rows[i].success_rate < 0.95 ? "warning" : ""));
  html += "<h2>Checks</h2>";
  for (const g of s.check_groups) {
    html += `<div class="check-group" data-group="${esc(g.group)}" data-status="${g.status}">` +
      `<strong class="${g.status}">${esc(g.group)}</strong><ul>` +
      g.checks.map((c) => `<li class="${c.status}">${esc(c.message)}` +
        (c.hint ? ` <span class="muted">— ${esc(c.hint)}</span>` : "") + "</li>").join("") +
      "</ul></div>";
  }
  html += "<h2>Deployments</h2>" + golden("deploy", s.deployments);
  html += "<h2>Services</h2>" + golden("svc", s.services);
  if (s.unreachable.length) html += "<h2>Unreachable proxies</h2><ul>" +
    s.unreachable.map((u) => `<li class="error">${esc(u)}</li>`).join("") + "</ul>";
  page().innerHTML = html;
}

function graphPage() {
  const g = snapshot.graph;
  const at = Object.fromEntries(g.nodes.map((n) => [n.id, n]));
  const W = 180, H = 48;
  let svg = `<svg id="graph-svg" width="${g.width}" height="${g.height}" xmlns="http://www.w3.org/2000/svg">`;
  for (const l of g.links) {
    const a = at[l.from], b = at[l.to];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    const mid = (x1 + x2) / 2;
    const path = x2 > x1 ? `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`
      : `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${y1 + 80} ${b.x + W / 2},${y2 + 80} ${b.x + W / 2},${b.y + H}`;
    const label = (l.secured === false ? "plaintext " : "") + (l.requests_per_second !== null
      ? `${fixed(l.requests_per_second, 1)} rps ${percent(l.success_rate)}`
      : fixed(l.connections_per_second, 1) + " conn/s");
    const lx = x2 > x1 ? mid - 40 : (a.x + b.x) / 2 + W / 2, ly = x2 > x1 ? (y1 + y2) / 2 - 4 : y1 + 70;
    const lock = l.secured === true ? `<g class="lock" transform="translate(${lx - 14},${ly - 10})">${LOCK_SHAPES}</g>` : "";
    svg += `<g class="edge" data-from="${esc(l.from)}" data-to="${esc(l.to)}" data-mtls="${l.secured ?? "unknown"}">` +
      `<path d="${path}" marker-end="url(#arrow)"/>${lock}<text x="${lx}" y="${ly}">${esc(label)}</text></g>`;
  }
  for (const n of g.nodes) {
    const r = n.row;
    const meshed = r ? r.meshed_pods > 0 : true;
    const figures = r ? (r.requests_per_second !== null
      ? `${fixed(r.requests_per_second, 2)} rps · ${percent(r.success_rate)}`
      : `${r.meshed_pods}/${r.pods} meshed · ${fixed(r.tcp_opened / (snapshot.window_seconds || 1), 2)} conn/s`)
      : "not a deployment";
    svg += `<g class="node${meshed ? "" : " unmeshed"}" data-id="${esc(n.id)}" data-deployment="${r ? 1 : 0}" ` +
      `transform="translate(${n.x},${n.y})"><rect width="${W}" height="${H}"/>` +
      `<text x="8" y="18"><tspan font-weight="600">${esc(n.name)}</tspan> <tspan fill="#57606a">${esc(n.namespace)}</tspan></text>` +
      `<text x="8" y="36" fill="#57606a">${esc(figures)}</text></g>`;
  }
  svg += `<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto">` +
    `<path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker></defs></svg>`;
  // Redrawn every refresh: keep where the reader scrolled to.
  const old = document.getElementById("graph");
  const scrolled = old ? [old.scrollLeft, old.scrollTop] : [0, 0];
  page().innerHTML = `<p class="muted">Workloads by how far they are from their callers; ` +
    `green edges with a ${LOCK} are mutual TLS, red dashed ones plaintext, grey ones seen only as ` +
    `requests by a waypoint; figures are requests per second and success where a waypoint ` +
    `counts them, else connections opened per second. Click a workload.</p>` +
    `<div id="graph">${svg}</div>`;
  [document.getElementById("graph").scrollLeft, document.getElementById("graph").scrollTop] = scrolled;
  page().querySelectorAll("g.node[data-deployment='1']").forEach((node) =>
    node.addEventListener("click", () => {
      const [ns, name] = node.dataset.id.split("/");
      location.hash = `#/workload/deploy/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;
    }));
}

function detailSkeleton(args) {
  const [kind, ns, name] = args;
  page().innerHTML = `<h2>${kind === "svc" ? "Service" : "Deployment"} ${esc(ns)}/${esc(name)}</h2>` +
    `<div id="figures" class="cards"></div><div id="charts" class="charts"></div>` +
    `<div id="relations"></div><h2>Live tap</h2>` +
    `<form class="filters" id="tap-filters"><input name="method" placeholder="method">` +
    `<input name="path" placeholder="path prefix"><select name="kind"><option value="">default</option>` +
    `<option>request</option><option>connection</option><option>all</option></select>` +
    `<button>Apply</button></form><p id="tap-state" class="muted">starting…</p>` +
    table(["time", "kind", "what", "source", "destination", "status / phase", "latency / bytes"], []).replace("<table>", '<table id="tap">');
  document.getElementById("tap-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    startTap(kind, ns, name, new FormData(e.target));
  });
  startTap(kind, ns, name, new FormData(document.getElementById("tap-filters")));
}

function card(label, value, figure) {
  return `<div class="card"><div class="muted">${esc(label)}</div><div class="value" data-figure="${figure}">${esc(value)}</div></div>`;
}

async function detailRefresh(args) {
  const [kind, ns, name] = args;
  const q = new URLSearchParams({ kind, namespace: ns, name });
  const answer = await fetch("/api/detail?" + q);
  if (!answer.ok || route().page !== "workload") return;
  const d = await answer.json();
  const r = d.row || {};
  document.getElementById("figures").innerHTML = !d.row ? '<p class="muted">Not measured yet.</p>' :
    card("meshed / pods", `${r.meshed_pods} / ${r.pods}`, "pods") +
    card("requests/s", fixed(r.requests_per_second, 2), "requests_per_second") +
    card("success", percent(r.success_rate), "success_rate") +
    card("p50 / p95 / p99 ms", `${fixed(r.latency_ms_p50)} / ${fixed(r.latency_ms_p95)} / ${fixed(r.latency_ms_p99)}`, "latency") +
    card("connections opened", r.tcp_opened, "tcp_opened") +
    card("received B/s", fixed(r.read_bytes_per_second, 0), "read_bytes_per_second") +
    card("sent B/s", fixed(r.write_bytes_per_second, 0), "write_bytes_per_second") +
    card("mTLS", percent(r.mtls_share), "mtls_share");
  const h = d.history;
  document.getElementById("charts").innerHTML =
    chart("requests/s", h, [["requests_per_second", "#0969da"]]) +
    chart("success rate", h, [["success_rate", "#1a7f37"]], 1) +
    chart("latency ms (p50, p95, p99)", h, [["latency_ms_p50", "#1a7f37"], ["latency_ms_p95", "#b7791f"], ["latency_ms_p99", "#cf222e"]]) +
    chart("connections/s", h, [["connections_per_second", "#8250df"]]);
  const edges = (list, side) => table(["client", "server", "mTLS", "connections"], list.map((e) =>
    [td(`${e.source_namespace}/${e.source}`), td(`${e.destination_namespace}/${e.destination}`),
     `<td class="${e.secured ? "ok" : "error"}">${e.secured ? LOCK + " mTLS" : "plaintext"}</td>`, num(e.connections)]))
    .replace("<table>", `<table id="${side}">`);
  let html = "";
  if (kind === "deploy") html += "<h2>Inbound</h2>" + edges(d.inbound, "inbound") + "<h2>Outbound</h2>" + edges(d.outbound, "outbound");
  if (d.routes) html += "<h2>Routes</h2>" + table(["route", "requests", "success", "rps", "p50", "p99"], d.routes.map((x) =>
    [td(x.route), num(x.requests), num(percent(x.success_rate)), num(fixed(x.requests_per_second, 2)),
     num(fixed(x.latency_ms_p50)), num(fixed(x.latency_ms_p99))]));
  document.getElementById("relations").innerHTML = html;
}

// A small line chart of the history; `max` fixes the top of the scale.
function chart(title, points, series, max) {
  const W = 300, H = 90;
  const values = points.flatMap((p) => series.map(([k]) => p[k])).filter((v) => v !== null && v !== undefined);
  const top = max ?? Math.max(1e-9, ...values);
  const t0 = points.length ? points[0].at : 0, t1 = points.length ? points[points.length - 1].at : 1;
  const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - 10) + 5 : 5);
  const y = (v) => H - 5 - (v / top) * (H - 15);
  const lines = series.map(([k, colour]) => {
    const pts = points.filter((p) => p[k] !== null && p[k] !== undefined).map((p) => `${x(p.at).toFixed(1)},${y(p[k]).toFixed(1)}`);
    return `<polyline stroke="${colour}" points="${pts.join(" ")}"/>`;
  }).join("");
  const empty = values.length ? "" : `<text x="8" y="${H / 2}" fill="#57606a">none: requests are measured by waypoints</text>`;
  return `<div class="chart"><div class="muted">${esc(title)} · max ${fixed(top, 2)}</div>` +
    `<svg width="${W}" height="${H}" data-chart="${esc(title)}">${lines}${empty}</svg></div>`;
}

function stopTap() {
  if (tapSource) tapSource.close();
  tapSource = null;
}

function startTap(kind, ns, name, form) {
  stopTap();
  const q = new URLSearchParams({ resource: kind, namespace: ns, name });
  for (const k of ["method", "path", "kind"]) if (form.get(k)) q.set(k, form.get(k));
  const body = document.querySelector("#tap tbody");
  body.innerHTML = "";
  // Events heard since the tap started (the table keeps the newest 200).
  let received = 0;
  document.getElementById("tap").dataset.received = "0";
  const state = document.getElementById("tap-state");
  tapSource = new EventSource("/api/tap?" + q);
  tapSource.addEventListener("ready", (e) => {
    const t = JSON.parse(e.data);
    state.textContent = `tapping ${t.kind}: ${t.waypoints} waypoints, ${t.ztunnels} ztunnels`;
  });
  tapSource.addEventListener("failure", (e) => {
    state.textContent = JSON.parse(e.data);
    state.className = "error";
    stopTap();
  });
  tapSource.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    if (ev.dropped) { state.textContent = `a proxy dropped ${ev.dropped} events`; return; }
    received += 1;
    document.getElementById("tap").dataset.received = String(received);
    const row = document.createElement("tr");
    const time = new Date().toLocaleTimeString();
    row.innerHTML = ev.kind === "connection"
      ? [td(time), td("conn"), td(`${ev.direction ?? "-"} ${ev.destination_service || ""}`),
         td(ev.source_identity || ev.source_address), td(ev.destination_identity || ev.destination_address),
         td(ev.verdict === "deny" ? "deny" : ev.phase + (ev.mtls ? " mTLS" : " plaintext")),
         td(ev.phase === "close" ? `${ev.bytes_sent}B / ${ev.bytes_received}B` : "")].join("")
      : [td(time), td("req"), td(`${ev.method} ${ev.authority}${ev.path}`), td(ev.source_identity),
         td(`${ev.destination_workload}.${ev.destination_namespace}`), td(ev.status),
         td(fixed(ev.latency_ms) + " ms")].join("");
    body.prepend(row);
    while (body.children.length > 200) body.lastChild.remove();
  };
}

function certificates() {
  const s = snapshot;
  const left = (seconds) => seconds === null ? "-" : seconds <= 0 ? "expired"
    : seconds > 86400 * 2 ? `${Math.floor(seconds / 86400)} d` : `${(seconds / 3600).toFixed(1)} h`;
  let html = "<h2>CA root</h2>";
  html += s.root ? table(["valid from", "expires", "status"], [[
    td(new Date(s.root.not_before * 1000).toISOString()), td(new Date(s.root.not_after * 1000).toISOString()),
    `<td class="${s.root.check.status}">${esc(s.root.check.message)}</td>`]], () => s.root.check.status)
    : '<p class="muted">The root cannot be read.</p>';
  html += "<h2>Workload certificates</h2>" + table(
    ["proxy", "identity", "state", "expires", "left", "serial"],
    s.certificates.map((c) => [td(c.proxy), td(c.identity), td(c.state), td(c.not_after), num(left(c.seconds_left)), td(c.serial)]),
    (i) => s.certificates[i].status).replace("<table>", '<table id="certificates">');
  page().innerHTML = html;
}

function findings() {
  const f = snapshot.findings;
  page().innerHTML = "<h2>What the mesh makes of the applied objects</h2>" + table(["status", "finding", "what to do"],
    f.map((c) => [`<td class="${c.status}">${esc(c.status)}</td>`, td(c.message), td(c.hint)]),
    (i) => f[i].status).replace("<table>", '<table id="findings">');
}

window.addEventListener("hashchange", render);
const events = new EventSource("/api/events");
events.addEventListener("snapshot", (e) => {
  snapshot = JSON.parse(e.data);
  render();
});
render();
