// The monitoring page: plain JavaScript over the gateway's HTTP API, no build step, no other origin.
// The token lives in sessionStorage (this tab only) and goes in an Authorization header on every call,
// never in a URL. Images (which <img src> could only fetch without that header) and the alert stream
// (which EventSource could only open without it) are fetched with fetch() instead.
"use strict";

const TOKEN_KEY = "cubestream.token";
const POLL_MS = 2000;
const MAX_THUMBS = 400; // object URLs kept; the oldest are released
const MAX_ALERTS = 50;
const RECENT_ALERTS = 10; // shown on sign-in, before live ones

const S = {
  token: sessionStorage.getItem(TOKEN_KEY),
  role: null,
  streams: [],
  selected: null, // stream id
  timeline: [],
  entry: null, // the entry shown under the timeline
  cited: [], // [{start, end}] of the last answer
  connected: null,
  pollTimer: null,
  events: null, // AbortController of the alert stream
  lastEventId: null,
  generation: 0, // bumped on sign-out: late answers of the old session are ignored
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// -- DOM helpers ------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") for (const [p, x] of Object.entries(v)) node.style.setProperty(p, x); // CSSOM: CSP allows it
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// Only on change: a live region (a stream's state) re-announces whatever is written into it.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function say(id, text, kind = "error") {
  const node = $(id);
  node.textContent = text || "";
  node.dataset.kind = kind;
}

function fmtTime(s) {
  if (s === null || s === undefined || !isFinite(s)) return "?";
  const sign = s < 0 ? "-" : "";
  s = Math.abs(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const ss = sec.toFixed(1).padStart(4, "0");
  return sign + (h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`);
}

const span = (a, b) => `${fmtTime(a)}–${fmtTime(b)}`;
const overlaps = (e, c) => e.start < c.end && c.start < e.end || (e.start === c.start && e.end === c.end);

// -- the API ----------------------------------------------------------------------------------------

async function api(method, path, body) {
  const generation = S.generation;
  const headers = { Authorization: `Bearer ${S.token}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    setConnected(false);
    throw new ApiError(0, "the server cannot be reached");
  }
  setConnected(true);
  if (generation !== S.generation) throw new ApiError(0, "signed out");
  if (r.status === 401) {
    refused();
    throw new ApiError(401, "the server refused the token");
  }
  if (!r.ok) throw new ApiError(r.status, await errorText(r));
  const type = r.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) return r.json();
  if (type.startsWith("image/")) return r.blob();
  return r.text();
}

async function errorText(r) {
  const text = (await r.text()).trim();
  try {
    const j = JSON.parse(text);
    if (j && typeof j.error === "string") return j.error;
    if (j && j.error && typeof j.error.message === "string") return j.error.message;
  } catch (e) { /* plain text */ }
  return text || r.statusText || `HTTP ${r.status}`;
}

const refusal = (e) => e.status ? `Refused (${e.status}): ${e.message}` : `Failed: ${e.message}`;
const sid = (id) => encodeURIComponent(id);

// -- connection state -------------------------------------------------------------------------------

function setConnected(ok) {
  if (S.connected === ok) return;
  const was = S.connected;
  S.connected = ok;
  const conn = $("conn");
  conn.dataset.state = ok ? "connected" : "disconnected";
  conn.textContent = ok ? "connected" : "disconnected — retrying";
  document.body.classList.toggle("offline", !ok);
  $("offline").hidden = ok;
  if (!ok) { // what the streams do now is not known here
    for (const badge of document.querySelectorAll("#streams .state")) {
      badge.dataset.state = "unknown";
      setText(badge, "unknown");
    }
  }
  if (ok && was === false && S.role) { // back: pick the alert stream up again where it left off
    followEvents();
  }
}

// -- signing in and out -----------------------------------------------------------------------------

async function signIn(token) {
  S.token = token;
  S.generation++;
  say("signin-msg", "Checking the token…", "info");
  let me;
  try {
    me = await api("GET", "/whoami");
  } catch (e) {
    if (e.status === 401) return; // refused() said so
    S.token = null;
    say("signin-msg", e.status ? `The server answered ${e.status}: ${e.message}` :
      "The server cannot be reached. Is cubestream running?");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  S.role = me.role;
  say("signin-msg", "");
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  $("role").hidden = false;
  $("role").textContent = S.role;
  document.body.dataset.role = S.role;
  for (const node of document.querySelectorAll(".admin-only")) node.hidden = S.role !== "admin";
  $("streams-h").focus(); // the sign-in form that had the focus is gone
  poll();
  followEvents();
}

function signOut(message = "", kind = "info") {
  S.generation++;
  S.token = null;
  S.role = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(S.pollTimer);
  if (S.events) S.events.abort();
  S.events = null;
  S.streams = [];
  select(null);
  S.lastEventId = null;
  for (const url of thumbs.values()) if (typeof url === "string") URL.revokeObjectURL(url);
  thumbs.clear();
  for (const id of ["streams", "results", "alerts", "watches"]) $(id).replaceChildren();
  for (const id of ["streams-msg", "add-msg", "search-msg", "watches-msg"]) say(id, "");
  $("alerts-state").textContent = "";
  $("app").hidden = true;
  $("signout").hidden = true;
  $("role").hidden = true;
  delete document.body.dataset.role;
  $("signin").hidden = false;
  $("token").value = "";
  say("signin-msg", message, kind);
  $("token").focus();
}

function refused() {
  signOut("The server refused this token (401 Unauthorized). Check the token and sign in again.", "error");
}

// -- thumbnails -------------------------------------------------------------------------------------

const thumbs = new Map(); // "stream/entry" -> object URL, or null (none), or a pending promise

async function thumbnail(streamId, entryId) {
  const key = `${streamId}/${entryId}`;
  if (thumbs.has(key)) return thumbs.get(key);
  const pending = api("GET", `/streams/${sid(streamId)}/thumbnails/${entryId}`)
    .then((blob) => URL.createObjectURL(blob), () => null)
    .then((url) => { thumbs.set(key, url); return url; });
  thumbs.set(key, pending);
  while (thumbs.size > MAX_THUMBS) {
    const [oldest, url] = thumbs.entries().next().value;
    if (typeof url === "string") URL.revokeObjectURL(url);
    thumbs.delete(oldest);
  }
  return pending;
}

// A link the server gave (an absolute or relative URL of this gateway) -> an object URL.
async function thumbnailAt(link) {
  const m = /\/streams\/([^/]+)\/thumbnails\/(\d+)$/.exec(new URL(link, location.href).pathname);
  return m ? thumbnail(decodeURIComponent(m[1]), Number(m[2])) : null;
}

function setImage(img, url, alt) {
  if (url) {
    if (img.getAttribute("src") !== url) img.src = url;
    img.alt = alt;
    img.hidden = false;
  } else {
    img.removeAttribute("src");
    img.hidden = true;
  }
}

// -- polling streams and the selected timeline ------------------------------------------------------

async function poll() {
  clearTimeout(S.pollTimer);
  const generation = S.generation;
  try {
    S.streams = await api("GET", "/streams");
    say("streams-msg", "");
    renderStreams();
    if (S.selected && !S.streams.some((s) => s.id === S.selected)) select(null);
    if (S.selected) await loadTimeline();
    await Promise.all(S.streams.map(newestThumbnail));
  } catch (e) {
    if (e.status) say("streams-msg", refusal(e));
  }
  if (generation === S.generation && S.token) S.pollTimer = setTimeout(poll, POLL_MS);
}

async function newestThumbnail(stream) {
  const timeline = stream.id === S.selected ? S.timeline : await api("GET", `/streams/${sid(stream.id)}/timeline`);
  const newest = [...timeline].reverse().find((e) => e.thumbnail);
  const img = document.querySelector(`[data-stream="${CSS.escape(stream.id)}"] img.thumb`);
  if (!img) return;
  const url = newest ? await thumbnail(stream.id, newest.id) : null;
  setImage(img, url, newest ? `newest frame of ${stream.id}, ${span(newest.start, newest.end)}` : "");
  img.nextElementSibling.hidden = !!url;
}

const STATE_TEXT = { connected: "connected", connecting: "connecting", reconnecting: "reconnecting",
  failed: "failed", ended: "ended", external: "waiting for its publisher", unavailable: "unavailable" };

function renderStreams() {
  const list = $("streams");
  const seen = new Set();
  for (const s of S.streams) {
    seen.add(s.id);
    let card = list.querySelector(`[data-stream="${CSS.escape(s.id)}"]`);
    if (!card) {
      card = streamCard(s.id);
      list.append(card);
    }
    const src = s.source || {}, enc = s.encoder_counters || {};
    const state = src.state || "unknown";
    card.classList.toggle("selected", s.id === S.selected);
    card.querySelector(".pick").setAttribute("aria-pressed", String(s.id === S.selected));
    const badge = card.querySelector(".state");
    badge.dataset.state = state;
    setText(badge, STATE_TEXT[state] || state);
    const err = card.querySelector(".error");
    setText(err, src.last_error ? `last error: ${src.last_error}` : "");
    err.hidden = !src.last_error;
    setText(card.querySelector(".spec"), s.spec || src.spec || "");
    const counters = [
      ["frames", enc.frames], ["cubes", enc.cubes], ["entries", enc.entries], ["tokens", enc.memory_tokens],
      ["decoded", src.frames_decoded], ["dropped", src.frames_dropped], ["skipped", src.frames_skipped],
      ["behind", src.lag ? `${src.lag.toFixed(1)} s` : undefined], ["reconnects", src.reconnects],
      ["latency p50", s.latency_p50 === null || s.latency_p50 === undefined ? undefined : `${(s.latency_p50 * 1000).toFixed(0)} ms`],
    ].filter(([, v]) => v !== undefined && v !== null);
    card.querySelector(".counters").replaceChildren(...counters.map(([k, v]) =>
      el("div", {}, el("dt", { text: k }), el("dd", { text: String(v) }))));
  }
  for (const card of [...list.children]) if (!seen.has(card.dataset.stream)) card.remove();
  $("streams-empty").hidden = S.streams.length > 0;
}

function streamCard(id) {
  const admin = S.role === "admin";
  return el("li", { class: "stream", "data-stream": id },
    el("img", { class: "thumb", alt: "", hidden: true, width: 96, height: 96 }),
    el("div", { class: "thumb none", text: "no image yet" }),
    el("div", { class: "info" },
      el("div", { class: "head" },
        el("button", { type: "button", class: "pick", "aria-pressed": "false", text: id,
          "aria-label": `Show stream ${id}`, onclick: () => select(id) }),
        el("span", { class: "state", role: "status" })),
      el("p", { class: "spec small muted" }),
      el("p", { class: "error small", hidden: true }),
      el("dl", { class: "counters small" }),
      admin ? el("button", { type: "button", class: "remove admin-only danger", text: "Remove",
        "aria-label": `Remove stream ${id}`, onclick: () => removeStream(id) }) : null));
}

function select(id) {
  if (S.selected === id) return;
  S.selected = id;
  S.timeline = [];
  S.entry = null;
  S.cited = [];
  $("timeline").replaceChildren();
  $("axis").replaceChildren();
  $("entry").hidden = true;
  $("answer").hidden = true;
  say("ask-msg", "");
  $("detail-h").textContent = id ? `Timeline of ${id}` : "Timeline";
  $("detail-none").hidden = !!id;
  $("detail-body").hidden = !id;
  renderStreams();
  if (id) {
    loadTimeline().catch(() => {});
    loadWatches();
  }
}

async function loadTimeline() {
  const id = S.selected;
  let timeline;
  try {
    timeline = await api("GET", `/streams/${sid(id)}/timeline`);
  } catch (e) {
    if (e.status === 404 && id === S.selected) select(null);
    throw e;
  }
  if (id !== S.selected) return;
  S.timeline = timeline;
  renderTimeline();
}

// -- the timeline -----------------------------------------------------------------------------------

function renderTimeline() {
  const box = $("timeline");
  const entries = S.timeline;
  if (!entries.length) {
    box.replaceChildren(el("p", { class: "muted small", text: "No cube has closed yet." }));
    $("axis").replaceChildren();
    return;
  }
  box.querySelector("p")?.remove();
  const t0 = Math.min(...entries.map((e) => e.start)), t1 = Math.max(...entries.map((e) => e.end));
  const width = Math.max(t1 - t0, 1e-6);
  const levels = [...new Set(entries.map((e) => e.level))].sort((a, b) => a - b);
  box.style.setProperty("--lanes", levels.length);
  box.dataset.entries = entries.length;
  box.dataset.end = t1;
  // lane labels
  const labels = levels.map((lv, i) => el("span", { class: "lane-label", style: { "--lane": i }, text: `L${lv}` }));
  for (const old of box.querySelectorAll(".lane-label")) old.remove();
  box.prepend(...labels);
  const buttons = new Map([...box.querySelectorAll("button.cube")].map((b) => [Number(b.dataset.id), b]));
  const focusable = S.entry && entries.some((e) => e.id === S.entry.id) ? S.entry.id : entries[entries.length - 1].id;
  for (const e of entries) {
    let b = buttons.get(e.id);
    buttons.delete(e.id);
    if (!b) {
      b = el("button", { type: "button", class: "cube", "data-id": e.id, onclick: () => showEntry(e.id),
        onkeydown: timelineKeys });
      box.append(b);
    }
    b.style.left = `${((e.start - t0) / width) * 100}%`;
    b.style.width = `${((e.end - e.start) / width) * 100}%`;
    b.style.setProperty("--lane", levels.indexOf(e.level));
    b.dataset.level = e.level;
    b.dataset.start = e.start;
    b.dataset.end = e.end;
    b.classList.toggle("cited", S.cited.some((c) => overlaps(e, c)));
    b.classList.toggle("current", S.entry !== null && S.entry.id === e.id);
    b.tabIndex = e.id === focusable ? 0 : -1;
    b.setAttribute("aria-label", `entry ${e.id}, level ${e.level}, ${span(e.start, e.end)}, ${e.num_frames} frames` +
      (b.classList.contains("cited") ? ", cited" : ""));
    b.title = `${span(e.start, e.end)} · level ${e.level} · ${e.num_frames} frames`;
  }
  for (const b of buttons.values()) b.remove(); // merged into coarser entries
  const ticks = 5;
  $("axis").replaceChildren(...Array.from({ length: ticks }, (_, i) =>
    el("span", { style: { left: `${(i / (ticks - 1)) * 100}%` }, text: fmtTime(t0 + (width * i) / (ticks - 1)) })));
  if (S.entry) { // the shown entry may have been merged away
    const still = entries.find((e) => e.id === S.entry.id);
    if (!still) $("entry-caption").textContent += " (since merged into a coarser entry)";
  }
}

function timelineKeys(ev) {
  const buttons = [...$("timeline").querySelectorAll("button.cube")]
    .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left) || a.dataset.level - b.dataset.level);
  const i = buttons.indexOf(ev.currentTarget);
  const to = { ArrowLeft: i - 1, ArrowRight: i + 1, Home: 0, End: buttons.length - 1 }[ev.key];
  if (to === undefined) return;
  ev.preventDefault();
  const target = buttons[Math.max(0, Math.min(buttons.length - 1, to))];
  for (const b of buttons) b.tabIndex = b === target ? 0 : -1;
  target.focus();
  showEntry(Number(target.dataset.id));
}

async function showEntry(entryId) {
  const e = S.timeline.find((x) => x.id === entryId);
  if (!e) return;
  S.entry = e;
  const streamId = S.selected;
  for (const b of $("timeline").querySelectorAll("button.cube")) b.classList.toggle("current", Number(b.dataset.id) === entryId);
  $("entry").hidden = false;
  $("entry-caption").textContent = `${streamId} · entry ${e.id} · ${span(e.start, e.end)} · level ${e.level} · ` +
    `${e.num_frames} frames in ${e.cubes} cube${e.cubes === 1 ? "" : "s"}` +
    (S.cited.some((c) => overlaps(e, c)) ? " · in the highlighted span" : "");
  const cached = thumbs.get(`${streamId}/${e.id}`);
  if (typeof cached !== "string") setImage($("entry-img"), null); // not the previous entry's while this one loads
  const url = e.thumbnail ? await thumbnail(streamId, e.id) : null;
  if (S.entry === e) setImage($("entry-img"), url, `thumbnail of ${streamId} at ${span(e.start, e.end)}`);
}

// -- asking -----------------------------------------------------------------------------------------

async function ask(question) {
  const id = S.selected;
  say("ask-msg", "Asking…", "info");
  const button = $("ask-form").querySelector("button");
  button.disabled = true;
  try {
    const a = await api("POST", `/streams/${sid(id)}/ask`, { question });
    if (id !== S.selected) return;
    say("ask-msg", "");
    S.cited = (a.citations || []).map((c) => ({ start: c.start, end: c.end, score: c.score }));
    $("answer").hidden = false;
    $("answer-text").textContent = a.text;
    $("citations").replaceChildren(...S.cited.map((c) => el("li", {},
      el("button", { type: "button", class: "chip", onclick: () => showCited(c),
        text: `${span(c.start, c.end)}${typeof c.score === "number" ? ` (score ${c.score.toFixed(2)})` : ""}` }))));
    renderTimeline();
  } catch (e) {
    say("ask-msg", refusal(e));
  } finally {
    button.disabled = false;
  }
}

function showCited(c) {
  const e = S.timeline.find((x) => overlaps(x, c));
  if (e) {
    showEntry(e.id);
    $("timeline").querySelector(`button.cube[data-id="${e.id}"]`)?.focus();
  }
}

// A stream's span from elsewhere (a search result, an alert): its timeline, the span highlighted, its entry shown.
async function showSpan(streamId, start, end) {
  select(streamId);
  S.cited = [{ start, end }];
  $("answer").hidden = true;
  try {
    await loadTimeline();
  } catch (e) {
    return;
  }
  if (S.selected === streamId) showCited(S.cited[0]);
}

// -- streams: add and remove (admin) ----------------------------------------------------------------

async function addStream(id, source) {
  say("add-msg", "Adding…", "info");
  try {
    await api("POST", "/streams", { id, source });
    say("add-msg", `Added ${id}.`, "info");
    $("add-id").value = "";
    $("add-source").value = "";
    await poll();
    select(id);
  } catch (e) {
    say("add-msg", refusal(e));
  }
}

async function removeStream(id) {
  if (!confirm(`Remove stream ${id}? Its memory is deleted.`)) return;
  try {
    await api("DELETE", `/streams/${sid(id)}`);
    say("streams-msg", `Removed ${id}.`, "info");
    if (S.selected === id) select(null);
    await poll();
  } catch (e) {
    say("streams-msg", refusal(e));
  }
}

// -- search -----------------------------------------------------------------------------------------

async function search(q) {
  say("search-msg", "Searching…", "info");
  const list = $("results");
  try {
    const found = await api("GET", `/search?q=${encodeURIComponent(q)}`);
    const results = Array.isArray(found) ? found : found.results || [];
    say("search-msg", results.length ? "" : "Nothing found.", "info");
    list.replaceChildren(...results.map((r) => resultItem(r)));
  } catch (e) {
    list.replaceChildren();
    if (e.status === 404) say("search-msg", "This server has no search.", "info");
    else say("search-msg", refusal(e));
  }
}

function resultItem(r) {
  const img = el("img", { class: "thumb", alt: "", hidden: true, width: 64, height: 64 });
  const link = r.thumbnail || r.thumbnail_url;
  if (link) thumbnailAt(link).then((url) => setImage(img, url, `${r.stream} at ${span(r.start, r.end)}`));
  return el("li", { class: "result" }, img,
    el("div", {},
      el("button", { type: "button", class: "linkish", text: `${r.stream} · ${span(r.start, r.end)}`,
        onclick: () => showSpan(r.stream, r.start, r.end) }),
      typeof r.score === "number" ? el("p", { class: "small muted", text: `score ${r.score.toFixed(3)}` }) : null));
}

// -- watches (admin adds and removes) ----------------------------------------------------------------

async function loadWatches() {
  const id = S.selected;
  try {
    const found = await api("GET", `/streams/${sid(id)}/watches`);
    if (id !== S.selected) return;
    const watches = Array.isArray(found) ? found : found.watches || [];
    say("watches-msg", "");
    $("watches").replaceChildren(...watches.map((w) => el("li", { class: "watch" },
      el("span", { text: `“${w.question}” fires on “${(w.answers || ["yes"]).join("” or “")}”` +
        (typeof w.cooldown_s === "number" ? `, cool-down ${w.cooldown_s} s` : "") }),
      S.role === "admin" ? el("button", { type: "button", class: "admin-only danger small", text: "Remove",
        "aria-label": `Remove watch ${w.question}`, onclick: () => removeWatch(id, w.id) }) : null)));
    $("watches-empty").hidden = watches.length > 0;
  } catch (e) {
    $("watches").replaceChildren();
    $("watches-empty").hidden = true;
    if (e.status === 404) say("watches-msg", "This server has no watches.", "info");
    else say("watches-msg", refusal(e));
  }
}

const list = (text) => text.split(",").map((x) => x.trim()).filter((x) => x);

async function addWatch(question, answers, options, cooldown) {
  const id = S.selected;
  try {
    const body = { question };
    if (answers.length) body.answer = answers;
    if (options.length) body.options = options;
    if (cooldown !== "") body.cooldown_s = Number(cooldown);
    await api("POST", `/streams/${sid(id)}/watches`, body);
    say("watches-msg", "Watch added.", "info");
    for (const f of ["watch-question", "watch-answer", "watch-options"]) $(f).value = "";
    loadWatches();
  } catch (e) {
    say("watches-msg", refusal(e));
  }
}

async function removeWatch(streamId, watchId) {
  try {
    await api("DELETE", `/streams/${sid(streamId)}/watches/${encodeURIComponent(watchId)}`);
    loadWatches();
  } catch (e) {
    say("watches-msg", refusal(e));
  }
}

// -- the alert feed: Server-Sent Events read with fetch (so that the token goes in a header) ----------

async function followEvents() {
  if (S.events) S.events.abort();
  const control = new AbortController();
  S.events = control;
  const generation = S.generation;
  if (S.lastEventId === null) { // first: the newest few alerts, then live ones after them (not the whole log)
    try {
      const recent = await api("GET", `/events?limit=${RECENT_ALERTS}`);
      if (generation !== S.generation) return;
      for (const a of recent) onEvent({ data: JSON.stringify(a) });
      S.lastEventId = String(recent.length ? recent[recent.length - 1].id : 0);
    } catch (e) {
      if (e.status === 404) $("alerts-state").textContent = "This server has no alert feed.";
      else if (e.status) $("alerts-state").textContent = refusal(e);
      return; // unreachable: setConnected starts this again once the server answers

    }
  }
  let delay = 1000;
  while (generation === S.generation && !control.signal.aborted) {
    const headers = { Authorization: `Bearer ${S.token}`, Accept: "text/event-stream" };
    if (S.lastEventId !== null) headers["Last-Event-ID"] = S.lastEventId;
    try {
      const r = await fetch("/events", { headers, signal: control.signal, cache: "no-store" });
      setConnected(true);
      if (r.status === 401) return refused();
      if (r.status === 404) {
        $("alerts-state").textContent = "This server has no alert feed.";
        return;
      }
      if (!r.ok) throw new ApiError(r.status, await errorText(r));
      $("alerts-state").textContent = "Live: alerts appear here as watches fire.";
      delay = 1000;
      await readEvents(r.body, (ev) => { if (generation === S.generation) onEvent(ev); });
    } catch (e) {
      if (control.signal.aborted) return;
      if (!(e instanceof ApiError)) setConnected(false);
      $("alerts-state").textContent = "Alert feed interrupted; reconnecting…";
    }
    await new Promise((ok) => setTimeout(ok, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// The SSE wire format (https://html.spec.whatwg.org/multipage/server-sent-events.html): events are
// blocks of "field: value" lines ended by a blank line; ":" starts a comment (a keep-alive).
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
    buffer = blocks.pop();
    for (const block of blocks) {
      const ev = { type: "message", data: [], id: null };
      for (const line of block.split(/\r\n|\n|\r/)) {
        if (!line || line.startsWith(":")) continue;
        const at = line.indexOf(":");
        const field = at < 0 ? line : line.slice(0, at);
        const val = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (field === "data") ev.data.push(val);
        else if (field === "event") ev.type = val;
        else if (field === "id") ev.id = val;
      }
      if (ev.id !== null) S.lastEventId = ev.id;
      if (ev.data.length) onEvent({ type: ev.type, id: ev.id, data: ev.data.join("\n") });
    }
  }
}

function onEvent(ev) {
  let a;
  try {
    a = JSON.parse(ev.data);
  } catch (e) {
    return;
  }
  if (!a || typeof a !== "object") return;
  const img = el("img", { class: "thumb", alt: "", hidden: true, width: 64, height: 64 });
  const link = a.thumbnail || a.thumbnail_url;
  if (link) thumbnailAt(link).then((url) => setImage(img, url, `${a.stream} when the alert fired`));
  const question = a.question || (a.watch && a.watch.question) || a.watch_id || a.watch || "";
  const item = el("li", { class: "result alert" }, img,
    el("div", {},
      el("button", { type: "button", class: "linkish", text: `${a.stream} · ${span(a.start, a.end)}`,
        onclick: () => showSpan(a.stream, a.start, a.end) }),
      el("p", { class: "small", text: `${typeof question === "string" ? question : ""}${a.answer ? ` → ${a.answer}` : ""}` }),
      a.time ? el("p", { class: "small muted", text: new Date(a.time * 1000).toLocaleTimeString() }) : null));
  $("alerts").prepend(item);
  while ($("alerts").children.length > MAX_ALERTS) $("alerts").lastElementChild.remove();
}

// -- wiring -----------------------------------------------------------------------------------------

function onSubmit(id, handler) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    handler();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("conn").textContent = "";
  onSubmit("signin-form", () => signIn($("token").value.trim()));
  onSubmit("add-stream", () => addStream($("add-id").value.trim(), $("add-source").value.trim()));
  onSubmit("ask-form", () => ask($("question").value.trim()));
  onSubmit("search-form", () => search($("search-q").value.trim()));
  onSubmit("watch-form", () => addWatch($("watch-question").value.trim(), list($("watch-answer").value),
    list($("watch-options").value), $("watch-cooldown").value.trim()));
  $("signout").addEventListener("click", () => signOut("Signed out.", "info"));
  if (S.token) signIn(S.token);
  else $("token").focus();
});
