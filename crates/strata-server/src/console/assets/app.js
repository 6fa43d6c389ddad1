// Strata console: a client of the HTTP API, no dependencies. The token (when auth is on) lives
// in sessionStorage and goes out only as an Authorization header, live views included (they
// read SSE with fetch streaming, since EventSource cannot send headers).
"use strict";

const TOKEN_KEY = "strata.token";
const main = document.getElementById("main");
let cleanup = []; // stops live views and timers of the current screen

// ---------- helpers ----------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const enc = encodeURIComponent;
const token = () => sessionStorage.getItem(TOKEN_KEY);
function fmt(n) { return n === null || n === undefined ? "–" : typeof n === "number" ? n.toLocaleString("en-US") : String(n); }
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function pretty(v) { return JSON.stringify(v, null, 2); }
function b64size(s) { const pad = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0; return Math.floor(s.length * 3 / 4) - pad; }

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || ("HTTP " + status));
    this.status = status; this.body = body || {}; this.code = this.body.error || "http_" + status;
  }
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  return headers;
}

async function api(method, path, opts) {
  opts = opts || {};
  const headers = authHeaders(opts.headers);
  let body;
  if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; body = typeof opts.json === "string" ? opts.json : JSON.stringify(opts.json); }
  else if (opts.text !== undefined) { headers["Content-Type"] = opts.contentType; body = opts.text; }
  const res = await fetch(path, { method, headers, body, signal: opts.signal });
  const text = await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (_) { data = text; } }
  if (!res.ok) {
    const err = new ApiError(res.status, typeof data === "object" ? data : { message: String(data) });
    if (res.status === 401 && !opts.noLogin) showLogin(err.message);
    throw err;
  }
  return data;
}

function errorBox(err) {
  const e = err instanceof ApiError ? err : null;
  let text = e ? `${e.status} ${e.code}: ${e.message}` : String(err && err.message || err);
  if (e && e.body.expected !== undefined && !e.message.includes("actual")) text += ` (expected ${e.body.expected}, actual ${e.body.actual})`;
  return h("div", { class: "error", role: "alert" }, text);
}

// Reads a text/event-stream with fetch, calling onEvent(json) per message, until stopped.
function follow(path, onEvent, onState) {
  const ctl = new AbortController();
  let lastId = null, stopped = false;
  async function run() {
    while (!stopped) {
      try {
        const headers = authHeaders({ Accept: "text/event-stream" });
        if (lastId !== null) headers["Last-Event-ID"] = lastId;
        const res = await fetch(path, { headers, signal: ctl.signal });
        if (!res.ok) {
          const body = await res.json().catch(() => ({}));
          throw new ApiError(res.status, body);
        }
        onState("live");
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i); buf = buf.slice(i + 2);
            let ev = "message", data = [], id = null;
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) continue;
              const c = line.indexOf(":");
              const f = c < 0 ? line : line.slice(0, c);
              const v = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
              if (f === "event") ev = v; else if (f === "data") data.push(v); else if (f === "id") id = v;
            }
            if (!data.length) continue;
            const payload = JSON.parse(data.join("\n"));
            if (ev === "error") throw new ApiError(payload.error === "stream_deleted" ? 410 : 500, payload);
            if (id !== null) lastId = id;
            onEvent(payload);
          }
        }
        if (!stopped) onState("reconnecting");
      } catch (e) {
        if (stopped) return;
        onState("error", e);
        if (e instanceof ApiError && e.status < 500) { stopped = true; return; }
      }
      if (!stopped) await new Promise((r) => setTimeout(r, 1000));
    }
  }
  run();
  const stop = () => { stopped = true; ctl.abort(); };
  cleanup.push(stop);
  return stop;
}

function every(ms, fn) {
  fn();
  const t = setInterval(fn, ms);
  cleanup.push(() => clearInterval(t));
}

// ---------- event rendering ----------
function eventRow(ev, fresh) {
  const binary = ev.data_base64 !== undefined;
  const body = binary
    ? h("div", {}, h("p", { class: "muted" }, `binary, ${fmt(b64size(ev.data_base64))} bytes (base64):`), h("pre", {}, ev.data_base64))
    : h("pre", { class: "data" }, pretty(ev.data));
  return h("details", { class: fresh ? "event fresh" : "event", "data-revision": ev.revision, "data-position": ev.position },
    h("summary", {},
      h("span", { class: "mono" }, "#" + ev.revision),
      h("span", { class: "mono muted" }, "@" + ev.position),
      h("span", {}, h("a", { href: "#/stream/" + enc(ev.stream), onclick: (e) => e.stopPropagation() }, ev.stream)),
      h("span", { class: "type" }, ev.type),
      h("span", { class: "muted wide" }, ev.timestamp)),
    h("dl", { class: "kv" },
      h("dt", {}, "id"), h("dd", {}, ev.id),
      h("dt", {}, "stream"), h("dd", {}, ev.stream),
      h("dt", {}, "revision"), h("dd", {}, ev.revision),
      h("dt", {}, "position"), h("dd", {}, ev.position),
      h("dt", {}, "timestamp"), h("dd", {}, ev.timestamp),
      h("dt", {}, "type"), h("dd", {}, ev.type)),
    h("h2", {}, "Data"), body,
    h("h2", {}, "Metadata"), h("pre", { class: "metadata" }, ev.metadata_base64 !== undefined ? ev.metadata_base64 : pretty(ev.metadata)));
}

// A list of events with paging, direction and follow-live: `base` is the read path.
function eventLog(container, base, cursorField, opts) {
  let direction = "backward", from = null, following = false, stopFollow = null, newest = null;
  const list = h("div", { class: "events", id: "events" });
  const status = h("span", { class: "badge", id: "live-status" }, "paused");
  const more = h("button", { onclick: () => load(false) }, "Older");
  const dirSel = h("select", { "aria-label": "Order", onchange: () => { direction = dirSel.value; reset(); } },
    h("option", { value: "backward" }, "Newest first"), h("option", { value: "forward" }, "Oldest first"));
  const liveBtn = h("button", { id: "follow", "aria-pressed": "false", onclick: () => toggleLive() }, "Follow live");
  const err = h("div");
  const jumpIn = h("input", { type: "text", inputmode: "numeric", size: 10, "aria-label": "Position" });
  const jump = opts && opts.jump ? h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); from = jumpIn.value.trim() || null; load(true, true); } },
    h("label", { class: "inline" }, "Jump to position", jumpIn), h("button", { type: "submit" }, "Go")) : null;
  container.append(h("div", { class: "row" }, dirSel, liveBtn, status), jump || "", err, list, h("div", { class: "pager" }, more));

  function sep() { return base.includes("?") ? "&" : "?"; }
  async function load(clear, jumped) {
    err.replaceChildren();
    if (clear) list.replaceChildren();
    let url = base + sep() + "direction=" + direction + "&limit=" + (opts && opts.limit || 50);
    if (from !== null) url += "&from=" + enc(from);
    try {
      const page = await api("GET", url);
      for (const ev of page.events) list.append(eventRow(ev, false));
      if (page.events.length && (direction === "backward" || newest === null)) {
        const cand = direction === "backward" ? page.events[0][cursorField] : null;
        if (clear && cand !== null) newest = cand;
      }
      if (direction === "forward" && page.events.length) newest = page.events[page.events.length - 1][cursorField];
      from = page.next;
      more.textContent = direction === "backward" ? "Older" : "Newer";
      more.disabled = page.end || page.next === null;
      if (!page.events.length && clear) list.append(h("p", { class: "muted" }, jumped ? "No events there." : "No events."));
    } catch (e) { err.append(errorBox(e)); }
  }
  function reset() { from = null; newest = null; if (following) toggleLive(); load(true); }
  function toggleLive() {
    following = !following;
    liveBtn.setAttribute("aria-pressed", String(following));
    liveBtn.textContent = following ? "Stop following" : "Follow live";
    if (!following) { if (stopFollow) stopFollow(); stopFollow = null; status.className = "badge"; status.textContent = "paused"; return; }
    const start = newest === null ? "end" : String(newest + 1);
    const url = base + sep() + "from=" + enc(start);
    stopFollow = follow(url, (ev) => {
      newest = ev[cursorField];
      const empty = list.querySelector("p.muted"); if (empty) empty.remove();
      const row = eventRow(ev, true);
      if (direction === "backward") list.prepend(row); else list.append(row);
    }, (state, e) => {
      status.className = "badge " + (state === "live" ? "live" : "");
      status.textContent = state;
      if (e) { err.replaceChildren(errorBox(e)); }
    });
  }
  load(true);
}

// ---------- screens ----------
const screens = {};

screens.dashboard = function () {
  main.append(h("h1", {}, "Dashboard"));
  const grid = h("div", { class: "grid" });
  const err = h("div");
  main.append(err, grid);
  const series = {};
  function stat(key, label) {
    const value = h("div", { class: "value", id: "stat-" + key }, "–");
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 100 30"); svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    grid.append(h("div", { class: "card stat" }, h("div", { class: "label" }, label), value, svg));
    series[key] = { value, svg, points: [[], []] };
  }
  stat("health", "Health"); stat("version", "Version"); stat("size", "Data size"); stat("segments", "Segments");
  stat("rate", "Append rate (appends/s)"); stat("fsync", "fsync latency p50 / p99 (ms)"); stat("subs", "Open subscriptions");
  function plot(key, i, v) {
    const s = series[key], pts = s.points[i];
    pts.push(v); if (pts.length > 40) pts.shift();
    const max = Math.max(1e-9, ...s.points.flat());
    s.svg.replaceChildren();
    s.points.forEach((p, j) => {
      if (!p.length) return;
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      // Right-aligned: the newest sample at the right edge, 40 slots.
      line.setAttribute("points", p.map((y, x) => `${((40 - p.length + x) * 100 / 39).toFixed(1)},${(29 - y / max * 27).toFixed(1)}`).join(" "));
      if (j) line.setAttribute("class", "second");
      s.svg.append(line);
    });
  }
  let prev = null;
  every(3000, async () => {
    try {
      const health = await fetch("/health").then((r) => r.json());
      series.health.value.replaceChildren(h("span", { class: "badge " + health.status }, health.status));
      const info = await api("GET", "/info");
      series.version.value.textContent = info.version;
      series.size.value.textContent = bytes(info.bytes_on_disk); plot("size", 0, info.bytes_on_disk);
      series.segments.value.textContent = fmt(info.segment_count); plot("segments", 0, info.segment_count);
      series.subs.value.textContent = fmt(info.open_subscriptions); plot("subs", 0, info.open_subscriptions);
      const text = await fetch("/metrics", { headers: authHeaders() }).then((r) => r.text());
      const m = parseMetrics(text), now = performance.now();
      if (prev) {
        const dt = (now - prev.t) / 1000;
        const rate = Math.max(0, (m.appends - prev.appends) / dt);
        series.rate.value.textContent = rate.toFixed(1); plot("rate", 0, rate);
        const d = m.fsync.map((b, i) => [b[0], b[1] - (prev.fsync[i] ? prev.fsync[i][1] : 0)]);
        const useDelta = d.length && d[d.length - 1][1] > 0;
        const buckets = useDelta ? d : m.fsync;
        const p50 = quantile(buckets, 0.5), p99 = quantile(buckets, 0.99);
        series.fsync.value.textContent = (p50 === null ? "–" : (p50 * 1000).toFixed(2)) + " / " + (p99 === null ? "–" : (p99 * 1000).toFixed(2));
        plot("fsync", 0, (p50 || 0) * 1000); plot("fsync", 1, (p99 || 0) * 1000);
      }
      prev = { t: now, appends: m.appends, fsync: m.fsync };
      err.replaceChildren();
    } catch (e) { err.replaceChildren(errorBox(e)); }
  });
};

function parseMetrics(text) {
  const out = { appends: 0, fsync: [] };
  for (const line of text.split("\n")) {
    if (line.startsWith("strata_appends_total ")) out.appends = Number(line.split(" ")[1]);
    const m = /^strata_fsync_duration_seconds_bucket\{le="([^"]+)"\} (\S+)/.exec(line);
    if (m) out.fsync.push([m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
  }
  return out;
}
// The upper bound of the bucket holding quantile q of a cumulative histogram.
function quantile(buckets, q) {
  if (!buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (!(total > 0)) return null;
  for (const [le, c] of buckets) if (c >= q * total) return le === Infinity ? buckets[buckets.length - 2][0] : le;
  return null;
}

screens.streams = function (query) {
  main.append(h("h1", {}, "Streams"));
  const params = new URLSearchParams(query || "");
  const prefix = h("input", { type: "text", id: "prefix", "aria-label": "Name prefix", placeholder: "name prefix", value: params.get("prefix") || "" });
  const table = h("tbody");
  const err = h("div");
  const pager = h("div", { class: "pager" });
  const afters = [];
  main.append(h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); afters.length = 0; load(null); } },
    prefix, h("button", { type: "submit" }, "Search")), err,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Stream"), h("th", { class: "num" }, "Last revision"), h("th", { class: "num" }, "Last position"))), table), pager);
  async function load(after) {
    err.replaceChildren();
    let url = "/streams?limit=50&prefix=" + enc(prefix.value);
    if (after) url += "&after=" + enc(after);
    try {
      const page = await api("GET", url);
      table.replaceChildren(...page.streams.map((s) => h("tr", {},
        h("td", {}, h("a", { href: "#/stream/" + enc(s.name) }, s.name)),
        h("td", { class: "num" }, fmt(s.last_revision)), h("td", { class: "num" }, fmt(s.last_position)))));
      if (!page.streams.length) table.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No streams.")));
      pager.replaceChildren(
        h("button", { disabled: !after, onclick: () => { afters.pop(); load(afters[afters.length - 1] || null); } }, "Previous"),
        h("button", { disabled: page.next === null, onclick: () => { afters.push(page.next); load(page.next); } }, "Next"));
    } catch (e) { err.append(errorBox(e)); }
  }
  load(null);
  prefix.focus();
};

screens.stream = function (name) {
  main.append(h("h1", {}, "Stream ", h("span", { class: "mono" }, name)));
  const path = "/streams/" + enc(name);
  const meta = h("pre", { id: "stream-metadata" }, "…");
  const metaEdit = h("textarea", { rows: 5, "aria-label": "Stream metadata JSON" });
  const metaMsg = h("div");
  const delMsg = h("div");
  const hard = h("input", { type: "checkbox", id: "hard" });
  const actions = h("div", { class: "card" },
    h("h2", {}, "Metadata"), meta,
    h("details", {}, h("summary", {}, "Edit metadata"), metaEdit,
      h("div", { class: "row" }, h("button", { onclick: saveMeta }, "Save metadata")), metaMsg),
    h("h2", {}, "Delete"),
    h("div", { class: "row" }, h("label", { class: "inline" }, hard, "hard delete (tombstone: the name can never be written again)"),
      h("button", { class: "danger", id: "delete-stream", onclick: del }, "Delete stream…")), delMsg,
    h("p", {}, h("a", { href: "#/append/" + enc(name) }, "Append to this stream")));
  const events = h("div", { class: "card" });
  main.append(events, actions);
  eventLog(events, path, "revision");
  async function loadMeta() {
    try { const m = await api("GET", path + "/metadata"); meta.textContent = pretty(m); metaEdit.value = pretty(m); }
    catch (e) { meta.replaceChildren(errorBox(e)); }
  }
  async function saveMeta() {
    metaMsg.replaceChildren();
    try { JSON.parse(metaEdit.value); } catch (e) { metaMsg.append(errorBox("metadata is not valid JSON: " + e.message)); return; }
    try { await api("PUT", path + "/metadata", { json: metaEdit.value }); metaMsg.append(h("div", { class: "notice" }, "Saved.")); loadMeta(); }
    catch (e) { metaMsg.append(errorBox(e)); }
  }
  async function del() {
    delMsg.replaceChildren();
    const kind = hard.checked ? "HARD delete (tombstone)" : "soft delete";
    if (!confirm(`${kind} stream "${name}"?`)) return;
    try { await api("DELETE", path + (hard.checked ? "?hard=true" : "")); delMsg.append(h("div", { class: "notice" }, `Stream "${name}" deleted.`)); }
    catch (e) { delMsg.append(errorBox(e)); }
  }
  loadMeta();
};

screens.all = function (query) {
  main.append(h("h1", {}, "$all"));
  const p = new URLSearchParams(query || "");
  const types = h("input", { type: "text", id: "f-types", placeholder: "TypeA,TypeB", value: p.get("types") || "" });
  const category = h("input", { type: "text", id: "f-category", placeholder: "order", value: p.get("category") || "" });
  const sprefix = h("input", { type: "text", id: "f-prefix", placeholder: "order-4", value: p.get("stream_prefix") || "" });
  const sys = h("input", { type: "checkbox", checked: p.get("include_system") === "true" });
  const box = h("div", { class: "card" });
  main.append(h("form", { class: "row card", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (types.value.trim()) q.set("types", types.value.trim());
    if (category.value.trim()) q.set("category", category.value.trim());
    if (sprefix.value.trim()) q.set("stream_prefix", sprefix.value.trim());
    if (sys.checked) q.set("include_system", "true");
    location.hash = "#/all?" + q.toString();
  } }, h("label", {}, "Event types", types), h("label", {}, "Category", category), h("label", {}, "Stream prefix", sprefix),
    h("label", { class: "inline" }, sys, "include $-streams"), h("button", { type: "submit", class: "primary" }, "Filter")), box);
  const q = new URLSearchParams();
  for (const k of ["types", "category", "stream_prefix", "include_system"]) if (p.get(k)) q.set(k, p.get(k));
  const qs = q.toString();
  eventLog(box, "/all" + (qs ? "?" + qs : ""), "position", { jump: true });
};

screens.append = function (stream) {
  main.append(h("h1", {}, "Append an event"));
  const s = h("input", { type: "text", id: "a-stream", required: true, value: stream || "" });
  const type = h("input", { type: "text", id: "a-type", required: true });
  const data = h("textarea", { id: "a-data", rows: 8 }, "{}");
  const meta = h("textarea", { id: "a-metadata", rows: 3, placeholder: "optional JSON" });
  const expected = h("input", { type: "text", id: "a-expected", placeholder: "any", size: 14 });
  const dataMsg = h("div", { class: "muted small", id: "a-data-check" });
  const result = h("div", { id: "a-result", "aria-live": "polite" });
  function check() {
    try { JSON.parse(data.value); dataMsg.className = "muted small"; dataMsg.textContent = "valid JSON"; return true; }
    catch (e) { dataMsg.className = "error"; dataMsg.textContent = "data is not valid JSON: " + e.message; return false; }
  }
  data.addEventListener("input", check);
  main.append(h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    result.replaceChildren();
    if (!check()) return;
    let metaText = meta.value.trim();
    if (metaText) { try { JSON.parse(metaText); } catch (err) { result.append(errorBox("metadata is not valid JSON: " + err.message)); return; } }
    const body = '{"type":' + JSON.stringify(type.value) + ',"data":' + data.value + (metaText ? ',"metadata":' + metaText : "") + "}";
    const headers = {};
    if (expected.value.trim()) headers["Expected-Revision"] = expected.value.trim();
    try {
      const r = await api("POST", "/streams/" + enc(s.value), { json: body, headers });
      result.append(h("div", { class: "notice" }, `Appended to ${r.stream}: revision ${r.first_revision}, position ${r.first_position}. `,
        h("a", { href: "#/stream/" + enc(r.stream) }, "Open the stream")));
    } catch (err) { result.append(errorBox(err)); }
  } },
    h("div", { class: "row" }, h("label", {}, "Stream", s), h("label", {}, "Event type", type),
      h("label", {}, "Expected revision (any, no_stream, stream_exists or a number)", expected)),
    h("label", { class: "block" }, "Data (JSON)"), data, dataMsg,
    h("label", {}, "Metadata (JSON, optional)"), meta,
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary", id: "a-submit" }, "Append")), result));
  check();
  (stream ? type : s).focus();
};

screens.groups = function () {
  main.append(h("h1", {}, "Consumer groups"));
  const body = h("tbody"), err = h("div");
  main.append(err, h("table", {}, h("thead", {}, h("tr", {}, ...["Group", "Source", "Lag", "In flight", "Parked", "Replaying", "Checkpoint"].map((t, i) => h("th", { class: i > 1 ? "num" : "" }, t)))), body));
  every(3000, async () => {
    try {
      const r = await api("GET", "/groups");
      body.replaceChildren(...r.groups.map((g) => h("tr", {},
        h("td", {}, h("a", { href: "#/group/" + enc(g.name) }, g.name)), h("td", { class: "mono" }, g.source),
        h("td", { class: "num" }, fmt(g.lag)), h("td", { class: "num" }, fmt(g.in_flight)), h("td", { class: "num" }, fmt(g.parked)),
        h("td", { class: "num" }, fmt(g.replaying)), h("td", { class: "num" }, fmt(g.checkpoint)))));
      if (!r.groups.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No consumer groups.")));
      err.replaceChildren();
    } catch (e) { err.replaceChildren(errorBox(e)); }
  });
};

screens.group = function (name) {
  main.append(h("h1", {}, "Group ", h("span", { class: "mono" }, name)));
  const path = "/groups/" + enc(name);
  const info = h("div", { class: "card" }), parked = h("div", { class: "card", id: "parked" }), msg = h("div", { id: "replay-result", "aria-live": "polite" });
  main.append(h("div", { class: "split" }, info, parked));
  async function load() {
    try {
      const g = await api("GET", path);
      info.replaceChildren(h("dl", { class: "kv" }, ...["source", "lag", "in_flight", "buffered", "parked", "replaying", "checkpoint", "waiting_polls", "error"].flatMap((k) => [h("dt", {}, k), h("dd", {}, fmt(g[k] === null ? "null" : g[k]))])),
        h("h2", {}, "Settings"), h("pre", {}, pretty(g.settings)), h("h2", {}, "Stats"), h("pre", {}, pretty(g.stats)));
      const p = await api("GET", path + "/parked?max=100");
      const rows = await Promise.all(p.parked.map(async (e) => {
        // A damaged event: what its bytes held is unknown (null fields); name the damage.
        if (e.reason === "corrupt") {
          const at = e.stream !== null ? `${e.stream} #${e.revision}` : `@${e.position}`;
          return h("div", { class: "parked-entry" },
            h("p", {}, h("span", { class: "mono" }, at), " — ", h("span", { class: "badge" }, e.reason), ` damaged bytes in ${e.file} at offset ${e.offset}, parked ${e.parked_at}`));
        }
        let ev = null;
        try { ev = await api("GET", "/streams/" + enc(e.stream) + "/" + e.revision); } catch (_) { /* gone: shown without the event */ }
        return h("div", { class: "parked-entry" },
          h("p", {}, h("span", { class: "mono" }, `${e.stream} #${e.revision} @${e.position}`), " ", e.type, " — ", h("span", { class: "badge" }, e.reason), ` after ${e.delivery} deliveries, parked ${e.parked_at}`),
          ev ? h("div", { class: "events" }, Object.assign(eventRow(ev, false), { open: true })) : h("p", { class: "muted" }, "the event can no longer be read"));
      }));
      parked.replaceChildren(h("h2", {}, `Parked events (${g.parked})`),
        h("div", { class: "row" }, h("button", { class: "primary", id: "replay-parked", disabled: !g.parked, onclick: replay }, "Replay parked events")), msg,
        ...(rows.length ? rows : [h("p", { class: "muted" }, "Nothing parked.")]));
    } catch (e) { info.replaceChildren(errorBox(e)); }
  }
  async function replay() {
    msg.replaceChildren();
    try {
      const r = await api("POST", path + "/parked/replay", { json: "{}" });
      await load();
      msg.replaceChildren(h("div", { class: "notice" }, `Replayed ${r.replayed}, missing ${r.missing}, remaining ${r.remaining}.`));
    } catch (e) { msg.replaceChildren(errorBox(e)); }
  }
  load();
};

screens.projections = function () {
  main.append(h("h1", {}, "Projections"), h("p", {}, h("a", { href: "#/projection-new", id: "new-projection" }, "New projection")));
  const body = h("tbody"), err = h("div");
  main.append(err, h("table", {}, h("thead", {}, h("tr", {}, ...["Name", "Status", "Position", "Lag", "Events/s", "Error"].map((t, i) => h("th", { class: i > 1 && i < 5 ? "num" : "" }, t)))), body));
  every(3000, async () => {
    try {
      const r = await api("GET", "/projections");
      body.replaceChildren(...r.projections.map((p) => h("tr", {},
        h("td", {}, h("a", { href: "#/projection/" + enc(p.name) }, p.name)), h("td", {}, h("span", { class: "badge " + p.status }, p.status)),
        h("td", { class: "num" }, fmt(p.position)), h("td", { class: "num" }, fmt(p.lag)), h("td", { class: "num" }, p.events_per_second.toFixed(1)),
        h("td", {}, p.error ? `${p.error.message} (at position ${fmt(p.error.position)})` : ""))));
      if (!r.projections.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No projections.")));
      err.replaceChildren();
    } catch (e) { err.replaceChildren(errorBox(e)); }
  });
};

function codeEditor(text) {
  const area = h("textarea", { id: "p-code", spellcheck: "false", rows: 16, "aria-label": "Projection script" });
  area.value = text;
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  let bad = null;
  function render() {
    const n = area.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) => i + 1 === bad ? h("span", { class: "bad" }, i + 1) : (i + 1) + "\n"));
  }
  area.addEventListener("input", () => { bad = null; render(); });
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  render();
  return {
    el: h("div", { class: "editor" }, gutter, area), area,
    mark(line, column) {
      bad = line; render();
      const lines = area.value.split("\n");
      let off = 0; for (let i = 0; i < line - 1 && i < lines.length; i++) off += lines[i].length + 1;
      off += Math.max(0, (column || 1) - 1);
      area.focus(); area.setSelectionRange(off, off);
    },
  };
}

screens["projection-new"] = function () { projectionScreen(null); };
screens.projection = function (name) { projectionScreen(name); };

function projectionScreen(name) {
  main.append(h("h1", {}, name ? ["Projection ", h("span", { class: "mono" }, name)] : "New projection"));
  const nameIn = h("input", { type: "text", id: "p-name", value: name || "", disabled: !!name });
  const editor = codeEditor(name ? "" : "fromAll()\n  .when({\n    $init: () => ({ count: 0 }),\n    $any: (s, e) => { s.count += 1; return s; },\n  });\n");
  const msg = h("div", { id: "p-result", "aria-live": "polite" });
  const status = h("div", { class: "card", id: "p-status" });
  const state = h("pre", { id: "p-state" });
  const partition = h("input", { type: "text", id: "p-partition", placeholder: "partition key (optional)" });
  const partList = h("datalist", { id: "p-partitions" });
  partition.setAttribute("list", "p-partitions");
  main.append(
    name ? status : "",
    h("form", { class: "card", onsubmit: save },
      h("div", { class: "row" }, h("label", {}, "Name", nameIn)),
      h("label", {}, "Script (Tab moves focus; Ctrl+Enter saves)"), editor.el,
      h("div", { class: "row" }, h("button", { type: "submit", class: "primary", id: "p-save" }, name ? "Update" : "Create")), msg),
    name ? h("div", { class: "card" }, h("h2", {}, "State"),
      h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); loadState(); } }, partition, partList, h("button", { type: "submit" }, "Show state")), state) : "");
  editor.area.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); save(e); } });

  async function save(e) {
    e.preventDefault();
    msg.replaceChildren();
    const target = name || nameIn.value.trim();
    if (!target) { msg.append(errorBox("a name is required")); return; }
    try {
      const p = await api("PUT", "/projections/" + enc(target), { text: editor.area.value, contentType: "application/javascript" });
      if (!name) { location.hash = "#/projection/" + enc(p.name); return; }
      msg.append(h("div", { class: "notice" }, "Saved.")); loadStatus();
    } catch (err) {
      msg.append(errorBox(err));
      if (err instanceof ApiError && err.body.line !== undefined) {
        msg.append(h("div", { class: "error", id: "p-error-line" }, `Syntax error at line ${err.body.line}` + (err.body.column !== undefined ? `, column ${err.body.column}` : "")));
        editor.mark(err.body.line, err.body.column);
      }
    }
  }
  async function action(what) {
    msg.replaceChildren();
    if (what === "delete" && !confirm(`Delete projection "${name}"? The events it emitted stay.`)) return;
    if (what === "reset" && !confirm(`Reset projection "${name}"? It folds the log again from the start.`)) return;
    try {
      if (what === "delete") { await api("DELETE", "/projections/" + enc(name)); location.hash = "#/projections"; return; }
      await api("POST", "/projections/" + enc(name) + "/" + what);
      loadStatus();
    } catch (err) { msg.append(errorBox(err)); }
  }
  async function loadStatus(first) {
    try {
      const p = await api("GET", "/projections/" + enc(name));
      if (first) { editor.area.value = p.query || ""; editor.area.dispatchEvent(new Event("input")); }
      status.replaceChildren(
        h("div", { class: "row" }, h("span", { class: "badge " + p.status }, p.status),
          ...["stop", "start", "reset", "delete"].map((a) => h("button", { class: a === "delete" ? "danger" : "", onclick: () => action(a) }, a[0].toUpperCase() + a.slice(1)))),
        h("dl", { class: "kv" }, ...["position", "lag", "events_per_second", "events_processed", "checkpoint_position", "partitions", "incarnation", "generation"]
          .flatMap((k) => [h("dt", {}, k), h("dd", {}, fmt(p[k]))]), h("dt", {}, "reads"), h("dd", {}, JSON.stringify(p.reads))),
        p.error ? h("div", { class: "error" }, `${p.error.message} at position ${fmt(p.error.position)}` + (p.error.stack ? "\n" + p.error.stack : "")) : "");
      if (p.partitioned && first) {
        const all = await api("GET", "/projections/" + enc(name) + "/state");
        partList.replaceChildren(...Object.keys(all || {}).slice(0, 500).map((k) => h("option", { value: k })));
      }
    } catch (err) { status.replaceChildren(errorBox(err)); }
  }
  async function loadState() {
    try {
      const q = partition.value.trim() ? "?partition=" + enc(partition.value.trim()) : "";
      state.textContent = pretty(await api("GET", "/projections/" + enc(name) + "/state" + q));
    } catch (err) { state.replaceChildren(errorBox(err)); }
  }
  // The state follows the projection like its status does (the shown partition, if any).
  if (name) { loadStatus(true); loadState(); every(3000, () => { loadStatus(false); loadState(); }); } else nameIn.focus();
}

// ---------- auth ----------
function showLogin(reason) {
  stopScreen();
  main.replaceChildren();
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true });
  const msg = h("div", { id: "login-result", "aria-live": "polite" }, reason && token() ? errorBox(reason) : "");
  main.append(h("form", { class: "card login", onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try { await api("GET", "/streams?limit=1", { noLogin: true }); updateWho(); route(); }
    catch (err) { sessionStorage.removeItem(TOKEN_KEY); msg.replaceChildren(errorBox(err)); input.select(); }
  } }, h("h1", {}, "Sign in"), h("p", { class: "muted" }, "This server requires a bearer token. It is kept in this tab's session storage only."),
    h("label", {}, "Token", input), h("div", { class: "row" }, h("button", { type: "submit", class: "primary", id: "login" }, "Sign in")), msg));
  input.focus();
}
function updateWho() {
  const who = document.getElementById("who");
  who.replaceChildren(token() ? h("span", {}, "token set", " ", h("button", { id: "logout", onclick: () => { sessionStorage.removeItem(TOKEN_KEY); updateWho(); route(); } }, "Sign out")) : "");
}

// ---------- router ----------
function stopScreen() { for (const f of cleanup.splice(0)) f(); }
function route() {
  stopScreen();
  main.replaceChildren();
  const raw = location.hash.replace(/^#\/?/, "") || "dashboard";
  const [pathPart, query] = raw.split("?");
  const slash = pathPart.indexOf("/");
  const screen = slash < 0 ? pathPart : pathPart.slice(0, slash);
  const arg = slash < 0 ? (query || "") : decodeURIComponent(pathPart.slice(slash + 1));
  for (const a of document.querySelectorAll("[data-nav]")) {
    const on = a.dataset.nav === screen || (a.dataset.nav + "s" === screen) || (screen === a.dataset.nav.replace(/s$/, "")) || (screen === "projection-new" && a.dataset.nav === "projections");
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  (screens[screen] || screens.dashboard)(arg);
  document.title = "Strata · " + screen;
}
window.addEventListener("hashchange", () => { route(); main.focus(); });
updateWho();
route();
