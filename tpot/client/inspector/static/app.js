// The inspector's page: the live list of exchanges, the detail of the selected one, replay.
// Every captured value reaches the DOM through textContent or createElement, never as
// markup: a visitor's request must not be able to run script here.
"use strict";

const MAX_ROWS = 500;
const MAX_RAW_SHOWN = 256 * 1024;
const TUNNELS_EVERY_MS = 5000;
// The same list as present.py's IMAGE_TYPES: anything else is never put in an <img> src.
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/x-icon"]);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const token = document.querySelector('meta[name="tpot-token"]').content;
const $ = (id) => document.getElementById(id);
const rows = new Map(); // id -> <tr>, newest first in #requests
let selected = null; // the detail shown: the /api/requests/ID answer
let events = null;

// ---- small DOM helpers ----

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function clear(node) {
  node.replaceChildren();
  return node;
}

function fillPairs(table, pairs, none) {
  clear(table);
  if (!pairs || pairs.length === 0) {
    table.append(el("tr", "", el("td", "muted", none)));
    return;
  }
  for (const [name, value] of pairs) table.append(el("tr", "", el("td", "", name), el("td", "", value)));
}

// ---- formatting ----

function formatTime(epoch) {
  const date = new Date(epoch * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function timeCell(epoch) {
  const cell = el("td", "time", formatTime(epoch));
  cell.title = new Date(epoch * 1000).toISOString();
  return cell;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return seconds < 1 ? `${(seconds * 1000).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
}

function formatSize(size) {
  if (size === null || size === undefined) return "";
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

function statusClass(status) {
  return status ? `status status-${String(status)[0]}` : "status status-none";
}

function statusText(summary) {
  if (summary.status !== null && summary.status !== undefined) return String(summary.status);
  return summary.outcome || "…";
}

function base64Bytes(text) {
  const binary = atob(text || "");
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function bytesBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

// Raw bytes as text: printable ASCII as it is, CR LF TAB as escapes (a line break kept after
// LF so that heads read line by line), every other byte as \xHH.
function escapeBytes(bytes) {
  const shown = bytes.subarray(0, MAX_RAW_SHOWN);
  const out = [];
  for (const byte of shown) {
    if (byte === 0x0a) out.push("\\n\n");
    else if (byte === 0x0d) out.push("\\r");
    else if (byte === 0x09) out.push("\\t");
    else if (byte === 0x5c) out.push("\\\\");
    else if (byte >= 0x20 && byte < 0x7f) out.push(String.fromCharCode(byte));
    else out.push("\\x" + byte.toString(16).padStart(2, "0"));
  }
  if (bytes.length > shown.length) out.push(`\n… ${bytes.length - shown.length} more bytes not shown`);
  return out.join("");
}

// ---- the filter ----

// One term matches a path substring, a method (any case), a status or a class like 4xx;
// several terms separated by spaces must all match.
function termMatches(term, summary) {
  const status = summary.status === null || summary.status === undefined ? "" : String(summary.status);
  if (/^[1-5]xx$/i.test(term)) return status[0] === term[0];
  return summary.path.includes(term) || summary.method.toUpperCase() === term.toUpperCase() || status === term;
}

function passesFilter(summary) {
  const terms = $("filter").value.trim().split(/\s+/).filter(Boolean);
  return terms.every((term) => termMatches(term, summary));
}

function applyFilter() {
  for (const row of rows.values()) row.hidden = !passesFilter(row.summary);
  updateEmpty();
}

function updateEmpty() {
  const visible = [...rows.values()].some((row) => !row.hidden);
  $("empty").hidden = visible;
  $("empty").textContent = rows.size ? "No request matches the filter." : "No requests yet. Visit your tunnel's URL and they appear here.";
}

// ---- the list ----

function makeRow(summary) {
  const row = el("tr", "exchange");
  row.dataset.id = summary.id;
  row.summary = summary;
  // The tags first: a long path is cut with an ellipsis (shown whole on hover).
  const path = el("td", "path");
  path.title = summary.path;
  if (summary.replay_of !== null && summary.replay_of !== undefined) path.append(el("span", "replay-of", `replay of #${summary.replay_of}`));
  if (summary.upgrade) path.append(el("span", "tag", "upgrade"));
  path.append(summary.path);
  row.append(
    timeCell(summary.started),
    el("td", "method", summary.method),
    path,
    el("td", statusClass(summary.status), statusText(summary)),
    el("td", "duration", formatDuration(summary.duration)),
    el("td", "size", formatSize(summary.response_size)),
    el("td", "visitor", summary.visitor || ""),
  );
  row.addEventListener("click", () => select(summary.id));
  return row;
}

// Newest (highest id) first; an exchange already listed is replaced in place.
function addExchange(summary) {
  const body = $("requests");
  const row = makeRow(summary);
  row.hidden = !passesFilter(summary);
  const old = rows.get(summary.id);
  if (old) {
    row.classList.toggle("selected", old.classList.contains("selected"));
    old.replaceWith(row);
  } else {
    let before = body.firstElementChild;
    while (before && Number(before.dataset.id) > summary.id) before = before.nextElementSibling;
    body.insertBefore(row, before);
  }
  rows.set(summary.id, row);
  while (body.rows.length > MAX_ROWS) dropRow(body.lastElementChild);
  updateEmpty();
}

function dropRow(row) {
  rows.delete(Number(row.dataset.id));
  row.remove();
}

function clearList() {
  rows.clear();
  clear($("requests"));
  selected = null;
  $("detail").hidden = true;
  updateEmpty();
}

// The whole list again (at start, after a reconnect, on `resync`); exchanges that arrived
// over the event stream while this was being fetched are kept.
async function loadList() {
  const before = new Set(rows.keys());
  const answer = await api("GET", `/api/requests?limit=${MAX_ROWS}`);
  if (!answer.ok) return showState(`could not load the list: ${answer.error}`);
  const listed = answer.data.requests;
  const ids = new Set(listed.map((summary) => summary.id));
  for (const [id, row] of [...rows]) if (before.has(id) && !ids.has(id)) dropRow(row);
  for (const summary of [...listed].reverse()) addExchange(summary);
  if (selected && !rows.has(selected.id)) {
    selected = null;
    $("detail").hidden = true;
  }
  updateEmpty();
}

// ---- the event stream ----

function follow() {
  events = new EventSource("/api/events");
  events.addEventListener("open", () => {
    showState("live");
    loadList();
  });
  events.addEventListener("exchange", (event) => addExchange(JSON.parse(event.data)));
  events.addEventListener("clear", clearList);
  events.addEventListener("resync", loadList);
  events.addEventListener("error", () => {
    showState("reconnecting…");
    // EventSource retries by itself after a dropped stream, but gives up on an HTTP error.
    if (events.readyState === EventSource.CLOSED) {
      loadList();
      setTimeout(follow, 3000);
    }
  });
}

function showState(text) {
  $("state").textContent = text;
}

// ---- the API ----

async function api(method, url, body) {
  const init = { method, headers: {} };
  if (method !== "GET") init.headers["X-TPoT-Token"] = token;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    const response = await fetch(url, init);
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (response.ok) return { ok: true, data };
    return { ok: false, error: (data && data.error) || `${response.status} ${response.statusText}` };
  } catch (error) {
    return { ok: false, error: "the inspector did not answer (is tpot still running?)" };
  }
}

// ---- the tunnels ----

async function loadTunnels() {
  const answer = await api("GET", "/api/tunnels");
  if (!answer.ok) return;
  const list = clear($("tunnels"));
  for (const tunnel of answer.data.tunnels) {
    const item = el("li", `tunnel tunnel-${tunnel.status}`, el("b", "", tunnel.name), " → ");
    const url = tunnel.public_url || "";
    if (/^(https?|tcp):\/\//.test(url)) {
      const link = el("a", "", url);
      if (url.startsWith("http")) link.href = url;
      item.append(link);
    } else item.append(el("span", "muted", url || tunnel.status));
    item.append(" → ", tunnel.target);
    if (tunnel.status !== "online") item.append(el("span", "tag", tunnel.status));
    list.append(item);
  }
}

// ---- the detail ----

async function select(id) {
  for (const row of rows.values()) row.classList.toggle("selected", Number(row.dataset.id) === id);
  const answer = await api("GET", `/api/requests/${id}`);
  if (!answer.ok) {
    showAction(answer.error, true);
    return;
  }
  selected = answer.data;
  showDetail(selected);
}

function showDetail(exchange) {
  const request = exchange.request;
  const response = exchange.response;
  $("detail").hidden = false;
  $("edit-form").hidden = true;
  showAction("");
  $("request-line").textContent = request.display.start_line;
  showTiming(exchange);
  fillPairs($("query"), exchange.query, "none");
  fillPairs($("request-headers"), request.display.headers, "none");
  showBody($("request-body"), request);
  $("response-line").textContent = response ? response.display.start_line : exchange.outcome || "no response";
  $("response-line").className = `mono ${statusClass(exchange.status)}`;
  fillPairs($("response-headers"), response ? response.display.headers : [], "none");
  if (response) showBody($("response-body"), response);
  else clear($("response-body")).append(el("p", "muted", "no response"));
  $("request-raw").textContent = escapeBytes(base64Bytes(request.raw));
  $("response-raw").textContent = response ? escapeBytes(base64Bytes(response.raw)) : "";
  $("curl").textContent = exchange.curl;
}

function showTiming(exchange) {
  const timing = clear($("timing"));
  timing.append(`#${exchange.id} · ${exchange.tunnel} · from ${exchange.visitor || "?"} · ${new Date(exchange.started * 1000).toLocaleString()}`);
  if (exchange.duration !== null && exchange.duration !== undefined) timing.append(` · took ${formatDuration(exchange.duration)}`);
  if (exchange.replay_of !== null && exchange.replay_of !== undefined) {
    const link = el("a", "replay-of", `replay of #${exchange.replay_of}`);
    link.href = "#";
    link.addEventListener("click", (event) => {
      event.preventDefault();
      select(exchange.replay_of);
    });
    timing.append(" · ", link);
  }
}

function showBody(container, message) {
  const body = message.display.body;
  clear(container);
  const about = [`${formatSize(body.size)}`];
  if (body.encoding) about.push(`${body.encoding}-decoded for display`);
  if (message.truncated) about.push(`captured in part: the body was ${formatSize(message.body_size)}`);
  else if (body.truncated) about.push("decoding stopped at the display limit");
  if (body.kind !== "empty") container.append(el("p", "muted about", about.join(" · ")));
  const view = BODY_VIEWS[body.kind] || BODY_VIEWS.unknown;
  view(container, body);
}

const BODY_VIEWS = {
  empty: (container) => container.append(el("p", "muted", "empty")),
  json: (container, body) => {
    if (body.error) container.append(el("p", "error", `not valid JSON: ${body.error}`));
    container.append(el("pre", "json", body.text));
  },
  form: (container, body) => {
    const table = el("table", "pairs");
    fillPairs(table, body.fields, "no fields");
    container.append(table);
  },
  multipart: (container, body) => {
    const list = el("ol", "parts");
    for (const part of body.parts) list.append(multipartPart(part));
    container.append(list);
  },
  text: (container, body) => container.append(el("pre", "text", body.text)),
  image: (container, body) => {
    if (!IMAGE_TYPES.has(body.media_type) || !BASE64.test(body.data)) {
      container.append(el("p", "muted", `an image of type ${body.media_type}, not shown`));
      return;
    }
    const image = el("img");
    image.alt = `${body.media_type} body`;
    image.src = `data:${body.media_type};base64,${body.data}`;
    container.append(image);
  },
  hex: (container, body) => container.append(el("pre", "hex", body.text)),
  unknown: (container, body) => container.append(el("pre", "", typeof body.text === "string" ? body.text : `(a ${body.kind} body)`)),
};

function multipartPart(part) {
  const title = [part.name !== null ? `name ${part.name}` : "no name"];
  if (part.filename !== null) title.push(`file ${part.filename}`);
  if (part.content_type !== null) title.push(part.content_type);
  title.push(formatSize(part.size));
  const item = el("li", "part", el("p", "mono", title.join(" · ")));
  const headers = el("table", "pairs");
  fillPairs(headers, part.headers, "no headers");
  item.append(headers);
  if (part.preview) item.append(el("pre", "text", part.preview));
  return item;
}

function showAction(text, failed = false) {
  $("action-state").textContent = text;
  $("action-state").className = failed ? "error" : "muted";
}

// ---- actions ----

async function replay(edits) {
  if (!selected) return;
  const id = selected.id;
  setBusy(true);
  showAction(`replaying #${id}…`);
  const answer = await api("POST", `/api/requests/${id}/replay`, edits);
  setBusy(false);
  if (!answer.ok) return showAction(`replay failed: ${answer.error}`, true);
  addExchange(answer.data);
  showAction(`replayed #${id} as #${answer.data.id}: ${statusText(answer.data)}`);
}

function setBusy(busy) {
  for (const id of ["replay", "replay-edit", "edit-send"]) $(id).disabled = busy;
}

// The body as text when it is UTF-8 and complete; otherwise null (it cannot be edited as text).
function editableBody(request) {
  if (request.truncated) return null;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(base64Bytes(request.body));
  } catch (error) {
    return null;
  }
}

function openEditForm() {
  if (!selected) return;
  const form = $("edit-form");
  if (!form.hidden) {
    form.hidden = true;
    return;
  }
  const request = selected.request;
  const [method, ...rest] = request.display.start_line.split(" ");
  $("edit-method").value = selected.method || method;
  $("edit-path").value = selected.path || rest.slice(0, -1).join(" ");
  $("edit-headers").value = request.display.headers.map(([name, value]) => `${name}: ${value}`).join("\n");
  const text = editableBody(request);
  const bodyField = $("edit-body");
  bodyField.value = text === null ? "" : text;
  bodyField.placeholder = text === null ? (request.truncated ? "the body was cut: type the body to send" : "a binary body, sent as it was unless you type a new one") : "";
  // Compared with the field on sending: an untouched body goes back byte for byte (a
  // textarea turns CR LF into LF).
  bodyField.original = bodyField.value;
  form.hidden = false;
  $("edit-method").focus();
}

function parseHeaders(text) {
  const headers = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, "");
    if (!line.trim()) continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`header line ${i + 1} should read Name: value`);
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return headers;
}

function editedBody(request) {
  const field = $("edit-body");
  if (field.value === field.original) return request.truncated || editableBody(request) === null ? undefined : request.body;
  let text = field.value;
  // Bodies that had CR LF line ends (multipart, say) keep them after an edit.
  const original = editableBody(request);
  if (original !== null && original.includes("\r\n")) text = text.replace(/\r?\n/g, "\r\n");
  return bytesBase64(new TextEncoder().encode(text));
}

function sendEdits(event) {
  event.preventDefault();
  if (!selected) return;
  let headers;
  try {
    headers = parseHeaders($("edit-headers").value);
  } catch (error) {
    return showAction(error.message, true);
  }
  const edits = { method: $("edit-method").value.trim(), path: $("edit-path").value.trim(), headers };
  const body = editedBody(selected.request);
  if (body !== undefined) edits.body = body;
  replay(edits);
}

async function copyCurl() {
  if (!selected) return;
  try {
    await navigator.clipboard.writeText(selected.curl);
    showAction("curl command copied");
  } catch (error) {
    // No clipboard permission: select the command so that Ctrl+C copies it.
    const range = document.createRange();
    range.selectNodeContents($("curl"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    showAction("press Ctrl+C to copy the selected command");
  }
}

async function clearAll() {
  const answer = await api("DELETE", "/api/requests");
  if (!answer.ok) return showState(`could not clear: ${answer.error}`);
  clearList();
}

// Arrow keys move the selection through the visible rows.
function moveSelection(event) {
  if (event.target.closest("input, textarea") || !["ArrowUp", "ArrowDown"].includes(event.key)) return;
  const visible = [...$("requests").rows].filter((row) => !row.hidden);
  if (!visible.length) return;
  const at = visible.findIndex((row) => row.classList.contains("selected"));
  const next = event.key === "ArrowDown" ? Math.min(at + 1, visible.length - 1) : Math.max(at - 1, 0);
  event.preventDefault();
  visible[next].scrollIntoView({ block: "nearest" });
  select(Number(visible[next].dataset.id));
}

function start() {
  $("filter").addEventListener("input", applyFilter);
  $("clear").addEventListener("click", clearAll);
  $("replay").addEventListener("click", () => replay(undefined));
  $("replay-edit").addEventListener("click", openEditForm);
  $("edit-form").addEventListener("submit", sendEdits);
  $("copy-curl").addEventListener("click", copyCurl);
  document.addEventListener("keydown", moveSelection);
  updateEmpty();
  follow();
  loadTunnels();
  setInterval(loadTunnels, TUNNELS_EVERY_MS);
}

start();
