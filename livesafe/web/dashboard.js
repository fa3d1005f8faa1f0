"use strict";
// livesafe moderators' dashboard: streams, the live event feed, actions, the audit log, webhooks.
//
// Rules this file keeps:
// - Server data reaches the page through textContent / DOM properties only, never innerHTML:
//   stream ids, reasons and list names are chosen by publishers, viewers and list authors.
// - The API token lives in sessionStorage (gone with the tab) and travels only in the
//   Authorization header, never in a URL (URLs end up in logs and Referer headers).
// - No picture of a stream is shown unless a moderator presses "View blurred preview", and
//   the server audits that view. Events never carry pixels; hashes are shown truncated.
// - The feed is read with fetch() (EventSource cannot send Authorization) and resumed after
//   a disconnect from the last event id seen, so a flaky network loses no event.
(() => {
  const TOKEN_KEY = "livesafe.token";
  const BASE_TITLE = "livesafe moderation";
  const FEED_ROWS = 300;
  const AUDIT_ROWS = 300;
  const HISTORY = 50;
  const STREAMS_EVERY_MS = 1000;
  const AUDIT_EVERY_MS = 3000;
  const WEBHOOKS_EVERY_MS = 5000;
  const LISTS_EVERY_MS = 5000;
  const MAX_BACKOFF_MS = 30000;
  const WHOAMI_RETRY_MS = 3000;
  const MAX_SSE_BUFFER = 1 << 20;
  const ACTIONS = [
    // [action, scope, label, css class]
    ["redact", null, "Redact now", ""],
    ["resume", null, "Resume", ""],
    ["keep", null, "Keep redacted", ""],
    ["confirm", null, "Confirm match", ""],
    ["false_positive", "stream", "False positive (this stream)", ""],
    ["false_positive", "global", "False positive (all streams)", ""],
    ["terminate", null, "Terminate", "danger"],
  ];
  const NEEDS_LIVE = new Set(["redact", "resume", "keep", "terminate"]);
  const OLDER_PAGE = 50;

  // What tests (and curious moderators, from the console) can read; nothing here is secret.
  const state = {
    whoami: null,
    streams: [],
    eventsFromHistory: 0,
    eventsLive: 0, // received over the live feed (not from the history request)
    liveTypes: {}, // event type -> count received over the live feed
    lastEventId: null,
    feedConnected: false,
    feedConnects: 0,
    reconnects: 0,
    keepalives: 0,
    alerts: 0, // high-severity events since the last acknowledgement
    auditEntries: 0,
    actionsSent: 0,
    lastAction: null,
    previews: 0,
    olderPages: 0, // pages of older events read with the "Older events" button
    listsShown: 0,
    lastError: null,
    blockedByPolicy: [], // Content-Security-Policy violations: markup from data that tried to run or load
  };
  window.livesafeDashboard = state;
  document.addEventListener("securitypolicyviolation", (e) => {
    state.blockedByPolicy.push(`${e.effectiveDirective} ${e.blockedURI || ""}`.trim());
  });

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** An element with text (never HTML) and a class. */
  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function cell(text, cls) {
    return el("td", text === undefined || text === null ? "" : text, cls);
  }

  // ----------------------------------------------------------------- errors

  const errors = new Map(); // source -> message

  function setError(source, message) {
    errors.set(source, message);
    state.lastError = message;
    renderErrors();
  }

  function clearError(source) {
    if (errors.delete(source)) renderErrors();
  }

  function renderErrors() {
    const banner = $("error");
    banner.replaceChildren(...[...errors.values()].map((m) => el("div", m)));
    banner.hidden = errors.size === 0;
  }

  // -------------------------------------------------------------------- API

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** A call to the API with our token; a failure throws the server's one-line reason. */
  async function api(path, { method = "GET", body, headers = {}, signal, raw = false } = {}) {
    const all = { ...headers };
    const t = token();
    if (t) all.Authorization = `Bearer ${t}`;
    if (body !== undefined) all["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers: all, signal, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      const text = (await response.text().catch(() => "")).trim() || response.statusText;
      throw new ApiError(response.status, `${response.status}: ${text}`);
    }
    return raw ? response : response.json();
  }

  // ----------------------------------------------------------------- who am I

  const canAct = () => state.whoami !== null && state.whoami.role === "moderator";

  /** "ok", "refused" (a token problem: wait for a new one) or "unreachable" (worth retrying). */
  async function loadWhoami() {
    try {
      state.whoami = await api("/api/whoami");
      clearError("auth");
      return "ok";
    } catch (e) {
      state.whoami = null;
      if (e.status === 401 || e.status === 403) {
        setError("auth", token() ? `Token refused (${e.message}). Check it and press "Use token".`
                                 : `Sign in: paste your API token above (${e.message}).`);
        return "refused";
      }
      setError("auth", `Cannot reach the moderation API (${e.message || e}); retrying.`);
      return "unreachable";
    } finally {
      renderWho();
    }
  }

  function renderWho() {
    const who = $("who");
    const me = state.whoami;
    who.textContent = me ? `${me.name} · ${me.role}` : "not signed in";
    who.className = `who ${me ? me.role : ""}`;
    for (const row of rows.values()) updateControls(row);
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = ""; // out of the DOM once stored
    start();
  });

  $("token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    start();
  });

  // ---------------------------------------------------------------- streams

  const rows = new Map(); // stream id -> row record

  function makeRow(id) {
    const r = { id, summary: null, busy: false, buttons: [] };
    // Two rows: the stream's figures, then its actions across the whole table (so they wrap, never off screen).
    r.tr = el("tr", null, "stream-row");
    r.tr.dataset.stream = id;
    r.actTr = el("tr", null, "act-row");
    r.actTr.dataset.stream = id;
    r.badge = el("span", "", "state");
    r.cells = {
      id: cell(id, "mono"), state: el("td"), profile: cell(""), viewers: cell("", "num"), framesIn: cell("", "num"),
      redacted: cell("", "num"), dropped: cell("", "num"), kept: cell(""),
    };
    const actCell = el("td");
    actCell.colSpan = Object.keys(r.cells).length;
    r.cells.state.append(r.badge);
    r.reason = el("input", null, "reason");
    r.reason.maxLength = 1000;
    r.reason.placeholder = "reason (required, audited)";
    r.reason.setAttribute("aria-label", `reason for acting on ${id}`);
    const box = el("div", null, "actions");
    box.append(r.reason);
    for (const [action, scope, label, cls] of ACTIONS) {
      const b = el("button", label, `act act-${action}${scope ? `-${scope}` : ""} ${cls}`.trim());
      b.type = "button";
      b.dataset.action = action;
      b.addEventListener("click", () => act(r, action, scope, label));
      r.buttons.push(b);
      box.append(b);
    }
    r.preview = el("button", "View blurred preview", "preview");
    r.preview.type = "button";
    r.preview.addEventListener("click", () => preview(r));
    box.append(r.preview);
    r.status = el("span", "", "row-status");
    actCell.append(box, r.status);
    r.tr.append(...Object.values(r.cells));
    r.actTr.append(actCell);
    return r;
  }

  function fillRow(r, s) {
    r.summary = s;
    r.badge.textContent = s.state;
    r.badge.className = `state ${["live", "redacted", "ended"].includes(s.state) ? s.state : ""}`;
    r.tr.className = `stream-row${s.state === "ended" ? " ended" : ""}`;
    r.actTr.className = `act-row${s.state === "ended" ? " ended" : ""}`;
    r.cells.profile.textContent = s.profile || "";
    r.cells.viewers.textContent = s.viewers ?? "";
    r.cells.framesIn.textContent = s.frames_in ?? "";
    r.cells.redacted.textContent = s.frames_redacted ?? "";
    r.cells.dropped.textContent = s.frames_dropped ?? "";
    r.cells.kept.textContent = s.redaction_kept ? "kept" : "—";
    r.cells.kept.className = s.redaction_kept ? "kept" : "muted";
    updateControls(r);
  }

  function updateControls(r) {
    const ended = r.summary !== null && r.summary.state === "ended";
    const allowed = canAct();
    r.reason.disabled = !allowed;
    for (const b of r.buttons) b.disabled = !allowed || r.busy || (ended && NEEDS_LIVE.has(b.dataset.action));
    r.preview.hidden = !(state.whoami && state.whoami.preview);
    r.preview.disabled = !allowed || r.busy || ended;
    const why = allowed ? "" : state.whoami ? `role ${state.whoami.role}: read only` : "sign in to act";
    for (const b of [...r.buttons, r.preview]) b.title = why;
  }

  function renderStreams(summaries) {
    state.streams = summaries;
    const body = $("streams").tBodies[0];
    const seen = new Set();
    for (const s of summaries) {
      if (typeof s.id !== "string") continue;
      seen.add(s.id);
      let r = rows.get(s.id);
      if (!r) rows.set(s.id, (r = makeRow(s.id)));
      fillRow(r, s);
    }
    for (const [id, r] of rows) {
      if (!seen.has(id)) {
        r.tr.remove();
        r.actTr.remove();
        rows.delete(id);
      }
    }
    // Live streams first; only move rows when the order changes (moving would drop focus from a reason).
    const order = [...rows.values()].sort((a, b) => (a.summary.state === "ended") - (b.summary.state === "ended"));
    const wanted = order.flatMap((r) => [r.tr, r.actTr]);
    const current = [...body.rows];
    if (wanted.length !== current.length || wanted.some((tr, i) => current[i] !== tr)) body.append(...wanted);
    $("no-streams").hidden = rows.size > 0;
    updateFilterChoices();
  }

  let streamsTimer = null;

  async function pollStreams() {
    clearTimeout(streamsTimer);
    try {
      renderStreams(await api("/api/streams"));
      clearError("streams");
      $("streams-status").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    } catch (e) {
      setError("streams", `streams: ${e.message || e}`);
    } finally {
      clearTimeout(streamsTimer); // a poll run early (after an event) must not start a second chain
      streamsTimer = setTimeout(pollStreams, STREAMS_EVERY_MS);
    }
  }

  // ---------------------------------------------------------------- actions

  function rowStatus(r, text, kind) {
    r.status.textContent = text;
    r.status.className = `row-status ${kind || ""}`;
    const global = $("action-status");
    global.textContent = `${r.id}: ${text}`;
    global.className = `status ${kind || ""}`;
  }

  async function act(r, action, scope, label) {
    const reason = r.reason.value.trim();
    if (!reason) {
      state.lastError = "a reason is required";
      rowStatus(r, `${label}: type a reason first (it goes in the audit log).`, "failed");
      r.reason.focus();
      return;
    }
    if (action === "terminate" &&
        !window.confirm(`Terminate stream ${r.id}?\nThe publisher is disconnected and its stream key revoked.`)) {
      rowStatus(r, "terminate cancelled", "");
      return;
    }
    const body = { action, reason };
    if (scope) body.scope = scope;
    r.busy = true;
    updateControls(r);
    rowStatus(r, `${label}: sending…`, "");
    try {
      const result = await api(`/api/streams/${encodeURIComponent(r.id)}/actions`, { method: "POST", body });
      state.actionsSent += 1;
      state.lastAction = { stream: r.id, action, scope, ok: true, audit: result.audit && result.audit.id };
      rowStatus(r, `${label}: done, recorded in the audit log.`, "ok");
      r.reason.value = "";
      refreshAudit();
      pollStreams();
    } catch (e) {
      const message = e.message || String(e);
      state.lastAction = { stream: r.id, action, scope, ok: false, error: message };
      state.lastError = message;
      rowStatus(r, `${label} failed: ${message}`, "failed");
    } finally {
      r.busy = false;
      updateControls(r);
    }
  }

  // ---------------------------------------------------------------- preview

  async function preview(r) {
    r.busy = true;
    updateControls(r);
    try {
      const response = await api(`/api/streams/${encodeURIComponent(r.id)}/preview`, { method: "POST", raw: true });
      const blob = await response.blob();
      if (blob.type !== "image/png") throw new Error(`expected a PNG, got ${blob.type || "nothing"}`);
      const url = URL.createObjectURL(blob);
      const img = $("preview-image");
      img.onload = img.onerror = () => URL.revokeObjectURL(url);
      img.src = url;
      $("preview-stream").textContent = r.id;
      $("preview-panel").hidden = false;
      state.previews += 1;
      rowStatus(r, "preview shown (your view was audited)", "ok");
      refreshAudit();
    } catch (e) {
      state.lastError = e.message || String(e);
      rowStatus(r, `preview failed: ${state.lastError}`, "failed");
    } finally {
      r.busy = false;
      updateControls(r);
    }
  }

  $("preview-close").addEventListener("click", () => {
    $("preview-image").removeAttribute("src");
    $("preview-panel").hidden = true;
  });

  // ------------------------------------------------------------------ events

  const seenEvents = new Set();

  function short(hash) {
    if (typeof hash !== "string" || !hash) return "";
    return hash.length > 12 ? `${hash.slice(0, 12)}…` : hash;
  }

  const looksLikeHash = (v) => typeof v === "string" && /^[0-9a-f]{24,}$/i.test(v);

  function plain(value) {
    if (value === null || value === undefined) return "";
    if (looksLikeHash(value)) return short(value);
    if (typeof value === "object") {
      const text = JSON.stringify(value);
      return text.length > 200 ? `${text.slice(0, 200)}…` : text;
    }
    return String(value);
  }

  function formatDetails(details) {
    if (!details || typeof details !== "object") return "";
    return Object.entries(details).map(([k, v]) => `${k}=${plain(v)}`).join(" · ");
  }

  function describe(ev) {
    switch (ev.type) {
      case "report.received":
        return [`reason: ${plain(ev.reason)}`, `${plain(ev.reporters_in_window)} reporter(s) in window`,
                ev.redacts ? "redacts the stream" : ""].filter(Boolean).join(" · ");
      case "action.taken":
        return [`${plain(ev.actor)}: ${plain(ev.action)} — ${plain(ev.reason)}`, ev.scope ? `scope ${plain(ev.scope)}` : "",
                ev.endpoint ? `webhook ${plain(ev.endpoint)}` : "",
                ev.viewed_content ? "had viewed content" : "", ev.stream_key_revoked ? "stream key revoked" : ""]
          .filter(Boolean).join(" · ");
      case "webhook.failed":
        return [`${plain(ev.endpoint)}: ${plain(ev.error)}`, ev.gave_up ? `gave up on ${plain(ev.event_type)}` : ""]
          .filter(Boolean).join(" · ");
      case "lists.stale":
      case "lists.recovered":
        return [`${plain(ev.kind)} ${plain(ev.source)}`, ev.last_error ? plain(ev.last_error) : "",
                `version ${plain(ev.version)} (${plain(ev.entries)} entries) kept in force`].filter(Boolean).join(" · ");
      case "lists.flood":
        return `entry matched ${plain(ev.streams)} streams in ${plain(ev.window_seconds)} s (limit ${plain(ev.limit)}): ` +
          "quarantined, still redacting; allow it if it is a false positive";
      default:
        return (ev.quarantined ? "QUARANTINED entry (flood) · " : "") + formatDetails(ev.details);
    }
  }

  function hashes(ev) {
    const parts = [];
    if (ev.matched_hash) parts.push(`matched ${short(ev.matched_hash)}`);
    if (ev.query_hash) parts.push(`seen ${short(ev.query_hash)}`);
    if (ev.allowed_hash) parts.push(`allowed ${short(ev.allowed_hash)}`);
    return parts.join(" · ");
  }

  /** Today's times alone; anything older says its day ("yesterday 23:59:10", "2026-12-01 08:00:00"). */
  function fmtTime(at) {
    if (typeof at !== "number") return "";
    const d = new Date(at * 1000);
    const time = d.toLocaleTimeString([], { hour12: false });
    const day = (x) => x.toDateString();
    const yesterday = new Date();
    yesterday.setDate(yesterday.getDate() - 1);
    if (day(d) === day(new Date())) return time;
    if (day(d) === day(yesterday)) return `yesterday ${time}`;
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  /** A time cell that also carries the full date and time (and zone) on hover. */
  function timeCell(at) {
    const td = cell(fmtTime(at), "time");
    if (typeof at === "number") td.title = new Date(at * 1000).toString();
    return td;
  }

  // ---------------------------------------------------------- feed filters

  // Every filter is asked of the server too (history and older pages: min_severity is "this and above"),
  // and applied here to what the live feed brings.
  const filters = { stream: "", severity: "", type: "" };
  const SEVERITY_RANK = { info: 0, warning: 1, high: 2 };
  const knownStreams = new Set();
  const knownTypes = new Set();
  let feedLimit = FEED_ROWS; // grows with every page of older events, so paging back is not undone
  let oldestId = null; // the oldest event read from the history under the current filters: the next page's cursor

  function matches(ev) {
    if (filters.stream && ev.stream_id !== filters.stream) return false;
    if (filters.type && ev.type !== filters.type) return false;
    return !filters.severity || (SEVERITY_RANK[ev.severity] ?? 0) >= SEVERITY_RANK[filters.severity];
  }

  function historyQuery(last, before) {
    const params = new URLSearchParams({ last: String(last) });
    if (filters.stream) params.set("stream", filters.stream);
    if (filters.type) params.set("type", filters.type);
    if (filters.severity) params.set("min_severity", filters.severity);
    if (before) params.set("before", before);
    return `/api/events?${params}`;
  }

  /** Keep a select's options in step with what has been seen, without losing its selection. */
  function setChoices(select, values) {
    const wanted = ["", ...[...values].sort()];
    const current = [...select.options].map((o) => o.value);
    if (wanted.length === current.length && wanted.every((v, i) => current[i] === v)) return;
    const chosen = select.value;
    select.replaceChildren(...wanted.map((v) => {
      const option = el("option", v || "all");
      option.value = v;
      return option;
    }));
    select.value = wanted.includes(chosen) ? chosen : "";
  }

  function updateFilterChoices() {
    for (const s of state.streams) if (typeof s.id === "string") knownStreams.add(s.id);
    if (filters.stream) knownStreams.add(filters.stream);
    if (filters.type) knownTypes.add(filters.type);
    setChoices($("filter-stream"), knownStreams);
    setChoices($("filter-type"), knownTypes);
  }

  function renderFeedCount() {
    const n = $("feed").tBodies[0].rows.length;
    const on = [filters.stream && `stream ${filters.stream}`, filters.severity && `${filters.severity}+`,
                filters.type && filters.type].filter(Boolean);
    $("feed-count").textContent = `${n} event(s) shown${on.length ? ` · filtered: ${on.join(", ")}` : ""}`;
  }

  /** A filter changed: the table starts again from the newest events that pass it. */
  let filterGen = 0; // a page asked for under filters since changed is dropped

  async function applyFilters() {
    const mine = ++filterGen;
    filters.stream = $("filter-stream").value;
    filters.severity = $("filter-severity").value;
    filters.type = $("filter-type").value;
    $("feed").tBodies[0].replaceChildren();
    seenEvents.clear();
    feedLimit = FEED_ROWS;
    oldestId = null;
    $("feed-older").disabled = false;
    $("feed-older-status").textContent = "";
    renderFeedCount();
    if (!state.whoami) return;
    try {
      const { events } = await api(historyQuery(HISTORY));
      if (mine !== filterGen) return;
      for (const ev of events) addEvent(ev, false);
      if (events.length) oldestId = events[0].id;
      clearError("feed-history");
    } catch (e) {
      setError("feed-history", `events: ${e.message || e}`);
    }
    renderFeedCount();
  }

  for (const id of ["filter-stream", "filter-severity", "filter-type"]) $(id).addEventListener("change", applyFilters);

  /** The page of events before the oldest one read so far (same filters). */
  async function loadOlder() {
    const button = $("feed-older");
    const note = $("feed-older-status");
    const body = $("feed").tBodies[0];
    const cursor = oldestId || (body.lastElementChild && body.lastElementChild.dataset.id);
    if (!cursor) {
      note.textContent = "no older events";
      return;
    }
    button.disabled = true;
    const mine = filterGen;
    try {
      const { events } = await api(historyQuery(OLDER_PAGE, cursor));
      if (mine !== filterGen) return;
      feedLimit += OLDER_PAGE;
      let shown = 0;
      for (const ev of events) if (addEvent(ev, false)) shown += 1;
      if (events.length) oldestId = events[0].id;
      state.olderPages += 1;
      const last = events.length < OLDER_PAGE;
      note.textContent = `${events.length} older event(s) read, ${shown} shown${last ? "; no more before them" : ""}`;
      button.disabled = last;
      clearError("feed-history");
    } catch (e) {
      button.disabled = false;
      setError("feed-history", `older events: ${e.message || e}`);
    }
    renderFeedCount();
  }

  $("feed-older").addEventListener("click", loadOlder);

  /** One feed row, placed by seq (newest first). */
  function addEvent(ev, live) {
    if (!ev || typeof ev.id !== "string" || seenEvents.has(ev.id)) return false;
    if (typeof ev.stream_id === "string") knownStreams.add(ev.stream_id);
    if (typeof ev.type === "string") knownTypes.add(ev.type);
    if (!matches(ev)) return false;
    seenEvents.add(ev.id);
    const severity = ["info", "warning", "high"].includes(ev.severity) ? ev.severity : "info";
    const tr = el("tr", null, `${severity}${live ? " fresh" : ""}`);
    tr.dataset.type = String(ev.type);
    tr.dataset.seq = String(ev.seq ?? "");
    tr.dataset.live = live ? "1" : "0";
    tr.dataset.id = ev.id;
    const sev = el("span", severity, `sev ${severity}`);
    const sevCell = el("td");
    sevCell.append(sev);
    tr.append(
      timeCell(ev.at), cell(plain(ev.stream_id), "mono"), cell(plain(ev.type)), sevCell, cell(plain(ev.list_name)),
      cell(plain(ev.category)), cell(plain(ev.signal)), cell(plain(ev.distance), "num"), cell(plain(ev.action)),
      cell(hashes(ev), "mono"), cell(describe(ev), "wrap details"),
    );
    const body = $("feed").tBodies[0];
    const seq = Number(ev.seq) || 0;
    let before = body.firstElementChild;
    while (before && Number(before.dataset.seq) > seq) before = before.nextElementSibling;
    body.insertBefore(tr, before);
    while (body.rows.length > feedLimit) {
      seenEvents.delete(body.lastElementChild.dataset.id);
      body.lastElementChild.remove();
      oldestId = body.lastElementChild.dataset.id; // older pages go on from what is still shown
    }
    return true;
  }

  function onLiveEvent(ev) {
    if (!ev || typeof ev.id !== "string" || seenEvents.has(ev.id)) return;
    addEvent(ev, true); // (not shown if the filters leave it out; counted and alarmed on all the same)
    renderFeedCount();
    state.eventsLive += 1;
    state.liveTypes[ev.type] = (state.liveTypes[ev.type] || 0) + 1;
    if (ev.severity === "high") alarm(ev);
    if (ev.type === "action.taken") refreshAudit();
    if (ev.type === "webhook.failed") refreshWebhooks();
    if (/^(stream|match|redaction)\./.test(ev.type)) pollStreams(); // state changed: don't wait for the next poll
  }

  async function loadHistory() {
    const { events, last_id: lastId } = await api(historyQuery(HISTORY));
    for (const ev of [...events].sort((a, b) => a.seq - b.seq)) {
      if (addEvent(ev, false)) state.eventsFromHistory += 1;
    }
    if (events.length && !oldestId) oldestId = events[0].id;
    // The feed resumes after the newest event in the store only when none were filtered out by the server.
    if (lastId && !filters.stream && !filters.type) state.lastEventId = lastId;
    historyLoaded = true;
    updateFilterChoices();
    renderFeedCount();
  }

  /** Read Server-Sent Events from a fetch() response until it ends; returns normally on EOF. */
  async function readSse(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      buffer = buffer.replace(/\r\n|\r(?!$)/g, "\n"); // a lone CR at the end may be half of a CRLF
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatchSse(block, onEvent);
      }
      if (buffer.length > MAX_SSE_BUFFER) throw new Error("feed message too large");
    }
  }

  function dispatchSse(block, onEvent) {
    let id = null;
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "") continue;
      if (line.startsWith(":")) {
        state.keepalives += 1;
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) id = value;
    }
    if (id) state.lastEventId = id;
    if (data.length === 0) return;
    let ev;
    try {
      ev = JSON.parse(data.join("\n"));
    } catch (e) {
      setError("feed", `feed: unreadable event ${id || ""} (${e.message})`);
      return;
    }
    if (ev && typeof ev === "object") {
      if (!ev.type) ev.type = type;
      onEvent(ev);
    }
  }

  function setFeedStatus(text) {
    $("feed-status").textContent = text;
  }

  let historyLoaded = false;
  let generation = 0;
  let feedAbort = null;

  /** The live feed, reconnecting with backoff from the last id seen, until the token changes. */
  async function runFeed(gen) {
    let delay = 1000;
    while (gen === generation) {
      try {
        if (!historyLoaded) await loadHistory();
        const abort = new AbortController();
        feedAbort = abort;
        const headers = { Accept: "text/event-stream" };
        if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
        const response = await api("/api/events/stream", { headers, signal: abort.signal, raw: true });
        if (gen !== generation) {
          abort.abort(); // the token changed while we connected: that feed belongs to nobody
          return;
        }
        state.feedConnected = true;
        state.feedConnects += 1;
        delay = 1000;
        clearError("feed");
        setFeedStatus("live");
        await readSse(response, (ev) => { if (gen === generation) onLiveEvent(ev); });
        throw new Error("the server closed the feed");
      } catch (e) {
        state.feedConnected = false;
        if (gen !== generation) return;
        if (e.status === 401 || e.status === 403) {
          setError("feed", `event feed refused: ${e.message}`);
          setFeedStatus("stopped");
          return;
        }
        if (e.status === 410) {
          // Our last id is past retention: take the recent history again and go on from there.
          state.lastEventId = null;
          historyLoaded = false;
        }
        state.reconnects += 1;
        const message = e.message || String(e);
        setError("feed", `event feed lost (${message}); reconnecting in ${delay / 1000} s`);
        setFeedStatus(`reconnecting in ${delay / 1000} s…`);
        await sleep(delay);
        delay = Math.min(delay * 2, MAX_BACKOFF_MS);
      }
    }
  }

  // ------------------------------------------------------------------ alarm

  let flashTimer = null;

  function alarm(ev) {
    state.alerts += 1;
    const where = ev.stream_id ? ` on ${plain(ev.stream_id)}` : "";
    const text = `HIGH: ${plain(ev.type)}${where}${ev.list_name ? ` (list ${plain(ev.list_name)})` : ""}` +
      `${ev.reason ? ` — ${plain(ev.reason)}` : ""}${state.alerts > 1 ? ` · ${state.alerts} alerts` : ""}`;
    $("alarm-text").textContent = text;
    $("alarm").hidden = false;
    if (flashTimer === null) {
      let on = false;
      const flash = () => {
        on = !on;
        document.title = `${on ? "⚠ " : ""}HIGH (${state.alerts}) · ${BASE_TITLE}`;
      };
      flash();
      flashTimer = setInterval(flash, 800);
    }
  }

  $("alarm-ack").addEventListener("click", () => {
    clearInterval(flashTimer);
    flashTimer = null;
    state.alerts = 0;
    document.title = BASE_TITLE;
    $("alarm").hidden = true;
  });

  // ------------------------------------------------------------------ audit

  let auditAfter = 0;
  let auditRunning = null;
  let auditAgain = false;

  function addAudit(entry) {
    const tr = el("tr");
    tr.dataset.seq = String(entry.seq ?? "");
    tr.dataset.action = String(entry.action);
    const viewed = cell(entry.viewed_content ? "yes" : "no", entry.viewed_content ? "viewed" : "muted");
    tr.append(timeCell(entry.at), cell(plain(entry.actor)), cell(plain(entry.role)), cell(plain(entry.action)),
              cell(plain(entry.stream_id), "mono"), cell(plain(entry.reason), "wrap"), viewed);
    const body = $("audit").tBodies[0];
    body.insertBefore(tr, body.firstElementChild); // entries come oldest first: newest ends on top
    while (body.rows.length > AUDIT_ROWS) body.lastElementChild.remove();
    state.auditEntries += 1;
  }

  /** New audit entries since the last one shown; a call during a refresh runs once more after it. */
  function refreshAudit() {
    if (!state.whoami) return Promise.resolve();
    if (auditRunning) {
      auditAgain = true;
      return auditRunning;
    }
    auditRunning = (async () => {
      try {
        do {
          auditAgain = false;
          for (let page = 0; page < 20; page++) {
            // Opening: the newest entries only; from then on, whatever came after the last one shown.
            const query = auditAfter === 0 ? `last=${AUDIT_ROWS}` : `after=${auditAfter}&limit=500`;
            const { entries } = await api(`/api/audit?${query}`);
            for (const entry of entries) {
              if (entry.seq > auditAfter) {
                addAudit(entry);
                auditAfter = entry.seq;
              }
            }
            if (entries.length < 500) break;
          }
        } while (auditAgain);
        clearError("audit");
      } catch (e) {
        setError("audit", `audit log: ${e.message || e}`);
      } finally {
        auditRunning = null;
      }
    })();
    return auditRunning;
  }

  // --------------------------------------------------------------- webhooks

  async function refreshWebhooks() {
    if (!state.whoami) return;
    try {
      const { endpoints, pending } = await api("/api/webhooks");
      const body = $("webhooks").tBodies[0];
      body.replaceChildren(...endpoints.map((w) => {
        const tr = el("tr");
        const stateCell = el("td");
        stateCell.append(el("span", plain(w.state), `hook ${w.state === "failing" ? "failing" : "ok"}`));
        const lastError = [w.last_error ? plain(w.last_error) : "", w.last_error_at ? `at ${fmtTime(w.last_error_at)}` : "",
                           w.retry_at ? `next try ${fmtTime(w.retry_at)}` : ""].filter(Boolean).join(" · ");
        const retryCell = el("td");
        if (w.state === "failing") {
          const retry = el("button", "Retry now", "retry");
          retry.type = "button";
          retry.disabled = !canAct();
          retry.title = canAct() ? "try it now instead of at the end of its backoff" : "moderators only";
          retry.addEventListener("click", () => retryWebhook(w.name));
          retryCell.append(retry);
        }
        tr.dataset.hook = w.name;
        tr.append(cell(plain(w.name)), cell(plain(w.url), "mono"), stateCell, cell(plain(w.consecutive_failures), "num"),
                  cell(plain(w.pending), "num"), cell(plain(w.delivered), "num"), cell(plain(w.failed), "num"),
                  cell(lastError, "wrap"), cell(fmtTime(w.last_delivered_at)), retryCell);
        return tr;
      }));
      $("no-webhooks").hidden = endpoints.length > 0;
      $("webhooks-pending").textContent = `${plain(pending)} pending in total`;
      clearError("webhooks");
    } catch (e) {
      setError("webhooks", `webhooks: ${e.message || e}`);
    }
  }

  /** After a long outage an endpoint waits minutes between tries: a moderator who knows it is back says so. */
  async function retryWebhook(name) {
    const reason = (window.prompt(`Retry webhook ${name} now? Reason (audited):`) || "").trim();
    const status = $("webhooks-status");
    if (!reason) {
      status.textContent = `${name}: not retried (a reason is required)`;
      return;
    }
    try {
      const result = await api(`/api/webhooks/${encodeURIComponent(name)}/retry`, { method: "POST", body: { reason } });
      status.textContent = `${name}: retrying now, ${plain(result.endpoint.pending)} pending; recorded in the audit log.`;
      refreshAudit();
    } catch (e) {
      status.textContent = `${name}: retry failed: ${e.message || e}`;
    }
    refreshWebhooks();
  }

  // ------------------------------------------------------------------ lists

  /** How long ago, in words a moderator reads at a glance. */
  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return `${Math.round(seconds / 3600)} h ago`;
  }

  async function refreshLists() {
    if (!state.whoami) return;
    try {
      const { lists } = await api("/api/lists");
      const body = $("lists").tBodies[0];
      body.replaceChildren(...lists.map((l) => {
        const tr = el("tr");
        const condition = l.stale ? "stale" : l.last_error && l.failing_since ? "failing" : "ok";
        const stateCell = el("td");
        stateCell.append(el("span", condition + (l.restored ? " (kept copy)" : ""), `list ${condition}`));
        const unmatchable = Object.entries(l.unmatchable || {}).map(([kind, n]) => `${n} ${kind}`).join(", ");
        const entries = el("td", plain(l.entries), "num");
        if (unmatchable) entries.append(el("div", `+ ${unmatchable} (cannot match live)`, "muted"));
        const quarantined = l.quarantined.map((qe) => `${plain(qe.signal)} ${short(qe.matched_hash)}: ${plain(qe.streams)} streams`);
        tr.dataset.list = l.name;
        tr.dataset.state = condition;
        tr.append(cell(plain(l.name)), cell(plain(l.kind)), cell(plain(l.source), "mono wrap"), cell(plain(l.category)),
                  cell(plain(l.action)), cell(plain(l.version), "mono"), entries, stateCell,
                  cell(ago(l.staleness_seconds)), cell(l.last_error ? plain(l.last_error) : "", "wrap"),
                  cell(quarantined.join("; "), quarantined.length ? "wrap quarantined" : "muted"));
        return tr;
      }));
      $("no-lists").hidden = lists.length > 0;
      const troubled = lists.filter((l) => l.stale || l.failing_since).length;
      const entries = lists.reduce((n, l) => n + l.entries, 0);
      $("lists-summary").textContent = `${lists.length} lists, ${entries} entries${troubled ? `, ${troubled} failing` : ""}`;
      state.listsShown = lists.length;
      clearError("lists");
    } catch (e) {
      if (e.status === 404) { // a relay embedded without its lists: nothing to show, nothing wrong
        $("no-lists").hidden = false;
        clearError("lists");
        return;
      }
      setError("lists", `lists: ${e.message || e}`);
    }
  }

  // ------------------------------------------------------------------ start

  /** (Re)start everything that needs a principal: after load and after every token change. */
  async function start() {
    const gen = ++generation;
    if (feedAbort) feedAbort.abort();
    feedAbort = null;
    state.feedConnected = false;
    for (const source of ["feed", "audit", "webhooks", "lists"]) clearError(source);
    setFeedStatus("connecting…");
    const who = await loadWhoami();
    if (who !== "ok") {
      if (gen !== generation) return;
      setFeedStatus(who === "refused" ? "not connected: needs a valid token" : "not connected: retrying…");
      if (who === "unreachable") setTimeout(() => { if (gen === generation) start(); }, WHOAMI_RETRY_MS);
      return;
    }
    if (gen !== generation) return;
    refreshAudit();
    refreshWebhooks();
    refreshLists();
    runFeed(gen);
  }

  setInterval(refreshAudit, AUDIT_EVERY_MS);
  setInterval(refreshWebhooks, WEBHOOKS_EVERY_MS);
  setInterval(refreshLists, LISTS_EVERY_MS);
  pollStreams();
  start();
})();
