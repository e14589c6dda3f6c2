// claude-peers dashboard: renders what the broker pushes (server-sent events), sends actions.
// No framework and nothing from elsewhere; every text from peers goes in as textContent.
"use strict";

const MAX_FLOW = 300;
const MAX_LOG = 200;
const state = { peers: [], flow: [], health: {}, kills: [], log: [] };
const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function clock(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  return isNaN(when) ? iso : when.toLocaleTimeString();
}

function time(iso) {
  return el("time", { dateTime: iso || "", text: clock(iso) });
}

function duration(seconds) {
  seconds = Math.floor(seconds || 0);
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600), m = Math.floor(seconds % 3600 / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : m ? `${m} min ${seconds % 60} s` : `${seconds} s`;
}

// --- broker health ---------------------------------------------------------------------
// The broker sends its health when something happens; the page counts the uptime itself.
function uptime() {
  const started = Date.parse(state.health.started_at || "");
  return isNaN(started) ? state.health.uptime_seconds : (Date.now() - started) / 1000;
}

function tickUptime() {
  const cell = document.querySelector("#health [data-figure='Up'] dd");
  if (cell) cell.textContent = duration(uptime());
}

function renderHealth() {
  const h = state.health, c = h.counters || {};
  const rows = [
    ["Host", h.host], ["Version", h.version], ["Broker pid", h.pid], ["Up", duration(uptime())],
    ["Online / offline / gone", `${h.online} / ${h.offline} / ${h.gone}`], ["Unread", h.unread],
    ["Sent / shown / woke", `${c.sent || 0} / ${c.shown || 0} / ${c.woke || 0}`], ["Refused", c.refused || 0],
    ["Commits", h.commits], ["Writes", h.writes], ["Queued writes", h.queued_writes], ["Queued pushes", h.queued_pushes],
  ];
  $("health").replaceChildren(...rows.map(([k, v]) => el("div", { "data-figure": k },
    el("dt", { text: k }), el("dd", { text: String(v ?? "") }))));
}

// --- peers, by host and repository -----------------------------------------------------
function peerCard(peer) {
  const card = el("article", { class: "peer", "data-peer-id": peer.id, "aria-label": `peer ${peer.name}` });
  card.append(el("div", { class: "peer-head" },
    el("span", { class: "peer-name", text: peer.name }),
    el("span", { class: "peer-id", text: peer.id }),
    el("span", { class: `state state-${peer.state}`, text: peer.state }),
    el("span", { class: "meta", text: peer.client_type }),
    el("span", { class: "meta unread", text: `${peer.unread} unread` })));
  card.append(el("div", { class: "summary", text: peer.summary || "(no summary)" }));
  const where = [peer.cwd, peer.branch ? `branch ${peer.branch}` : null, peer.delivery ? `delivery: ${peer.delivery}` : null];
  card.append(el("div", { class: "meta", text: where.filter(Boolean).join(" · ") }));
  if (Array.isArray(peer.groups) && peer.groups.length) {
    card.append(el("div", { class: "meta", text: `groups: ${peer.groups.map((g) => g.name || g).join(", ")}` }));
  }
  if (Array.isArray(peer.claims) && peer.claims.length) {
    card.append(el("ul", { class: "claims", "aria-label": `claims of ${peer.name}` },
      ...peer.claims.map((c) => el("li", { text: `${c.path || c.pattern || ""}${c.reason ? ` (${c.reason})` : ""}${c.expires_at ? `, until ${clock(c.expires_at)}` : ""}` }))));
  }
  if (peer.state !== "gone") {
    card.append(el("div", { class: "peer-actions" },
      el("button", { type: "button", class: "message", text: "Message", onclick: () => pickRecipient(peer), "aria-label": `message ${peer.name}` }),
      el("button", { type: "button", class: "kill", text: "Kill…", onclick: () => askKill(peer), "aria-label": `kill ${peer.name}` })));
  }
  return card;
}

function renderPeers() {
  // Keep keyboard focus on the same control of the same peer across a re-render.
  const focused = document.activeElement;
  const card = focused && focused.closest ? focused.closest(".peer") : null;
  const keep = card ? [card.dataset.peerId, focused.className] : null;
  const hosts = new Map();
  for (const peer of state.peers) {
    const repos = hosts.get(peer.host) || new Map();
    hosts.set(peer.host, repos);
    const repo = peer.repo || peer.cwd;
    (repos.get(repo) || repos.set(repo, []).get(repo)).push(peer);
  }
  const blocks = [];
  for (const [host, repos] of hosts) {
    const block = el("section", { class: "host", "aria-label": `host ${host}` }, el("h3", { text: `Host ${host}` }));
    for (const [repo, peers] of repos) block.append(el("h4", { text: repo }), ...peers.map(peerCard));
    blocks.push(block);
  }
  $("peers").replaceChildren(...blocks);
  $("peers-empty").hidden = state.peers.length > 0;
  renderRecipients();
  if (keep) {
    const again = document.querySelector(`.peer[data-peer-id="${CSS.escape(keep[0])}"] button.${CSS.escape(keep[1] || "x")}`)
      || document.querySelector(`.peer[data-peer-id="${CSS.escape(keep[0])}"] button`);
    if (again) again.focus();
  }
}

function renderRecipients() {
  const select = $("send-to"), chosen = select.value;
  const live = state.peers.filter((p) => p.state !== "gone");
  select.replaceChildren(...live.map((p) => el("option", { value: p.id, text: `${p.name} (${p.id}, ${p.state})` })));
  if (live.some((p) => p.id === chosen)) select.value = chosen;
}

function pickRecipient(peer) {
  $("send-to").value = peer.id;
  $("send-body").focus();
}

// --- the message flow, threads, events, kills ------------------------------------------
function flowLine(item, withBody) {
  const line = el("li", { "data-message-id": String(item.message_id ?? "") },
    time(item.at), el("span", { class: "who", text: `${item.from_name} → ${item.to_name} ` }),
    el("span", { class: `outcome outcome-${item.status}`, text: item.status }));
  if (withBody && item.body != null) line.append(el("div", { class: "body", text: item.body }));
  if (!withBody && (item.thread_id != null || state.health.threads) && item.message_id != null) {
    const label = item.thread_id != null ? `thread ${item.thread_id}` : "thread";
    line.append(" ", el("button", { type: "button", class: "thread-link", text: label,
      onclick: () => openThread(item.message_id), "aria-label": `open the thread of message ${item.message_id}` }));
  }
  return line;
}

function addFlow(items, skipped) {
  const list = $("flow");
  for (const item of items) {
    state.flow.push(item);
    list.prepend(flowLine(item));
  }
  while (list.children.length > MAX_FLOW) list.lastElementChild.remove();
  state.flow = state.flow.slice(-MAX_FLOW);
  const note = $("flow-skipped");
  if (skipped) {
    note.hidden = false;
    note.textContent = `Busy: ${skipped} more messages in the last moment are not listed.`;
  }
}

async function openThread(messageId) {
  let title = `Thread of message ${messageId}`, items = [], note = "";
  try {
    const answer = await fetch(`/api/thread?id=${encodeURIComponent(messageId)}`, { credentials: "same-origin" });
    const value = await answer.json();
    if (!answer.ok) throw new Error(value.error || `HTTP ${answer.status}`);
    items = value.items;
    title = `Thread ${value.thread_id}`;
    if (value.more) note = `${value.more} older messages are not shown.`;
  } catch (e) {
    items = state.flow.filter((item) => item.message_id === messageId);
    note = `The broker did not give the thread: ${e.message}`;
  }
  $("thread-title").textContent = title;
  $("thread").replaceChildren(...items.map((item) => flowLine(item, true)));
  $("thread-note").textContent = note;
  $("thread-dialog").showModal();
  $("thread-close").focus();
}

function addLog(items) {
  const list = $("log");
  for (const item of items) list.prepend(el("li", {}, time(item.at), el("span", { text: `${item.kind}: ${item.detail}` })));
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

function nameOf(peerId) {
  const peer = state.peers.find((p) => p.id === peerId);
  return peer ? `${peer.name} (${peerId})` : peerId;
}

function renderKills() {
  $("kills").replaceChildren(...state.kills.map((k) => el("li", {}, time(k.at),
    el("span", { class: `outcome outcome-${k.outcome}`, text: k.outcome }),
    el("span", { text: ` ${nameOf(k.target_id)} (pid ${k.target_pid}) by ${nameOf(k.by_id)}: ${k.detail}` }))));
  $("kills-empty").hidden = state.kills.length > 0;
}

// --- actions ---------------------------------------------------------------------------
async function post(path, body) {
  const answer = await fetch(path, { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  let value = {};
  try { value = await answer.json(); } catch (e) { value = { error: `HTTP ${answer.status}` }; }
  if (!answer.ok) throw new Error(value.error || `HTTP ${answer.status}`);
  return value;
}

function say(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

async function sendNote(event) {
  event.preventDefault();
  const result = $("send-result"), button = $("send-button");
  button.disabled = true;
  try {
    const a = await post("/api/send", { to: $("send-to").value, body: $("send-body").value });
    say(result, `${a.status} — message ${a.message_id} to ${a.to_name}${a.detail ? `: ${a.detail}` : ""}`);
    $("send-body").value = "";
  } catch (e) {
    say(result, `Not sent: ${e.message}`, true);
  } finally {
    button.disabled = false;
  }
}

let pendingKill = null;

async function askKill(peer) {
  const dialog = $("kill-dialog");
  say($("kill-result"), "");
  try {
    pendingKill = await post("/api/kill/preview", { peer: peer.id });
  } catch (e) {
    pendingKill = null;
    $("kill-what").textContent = `Cannot kill ${peer.name}: ${e.message}`;
    $("kill-command").textContent = "";
    $("kill-confirm").hidden = true;
    dialog.showModal();
    return;
  }
  const p = pendingKill;
  $("kill-what").textContent = `${p.name} (${p.peer_id}, ${p.client_type}) — process ${p.pid} on ${p.host}, started as:`;
  $("kill-command").textContent = p.command;
  const confirm = $("kill-confirm");
  $("kill-cancel").textContent = "Cancel";
  confirm.hidden = false;
  confirm.disabled = false;
  confirm.textContent = `Kill pid ${p.pid}`;
  dialog.showModal();
  $("kill-cancel").focus();
}

async function confirmKill() {
  if (!pendingKill) return;
  const p = pendingKill, confirm = $("kill-confirm");
  confirm.disabled = true;
  try {
    const a = await post("/api/kill", { peer: p.peer_id, pid: p.pid, start: p.start });
    say($("kill-result"), `${a.outcome}: ${a.detail}`);
    pendingKill = null;
    confirm.hidden = true;
    $("kill-cancel").textContent = "Close";
    $("kill-cancel").focus();
  } catch (e) {
    say($("kill-result"), `Not killed: ${e.message}`, true);
    confirm.disabled = false;
  }
}

// --- the stream ------------------------------------------------------------------------
function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { $("connection").textContent = "live"; });
  source.addEventListener("error", () => {
    $("connection").textContent = source.readyState === EventSource.CLOSED
      ? "disconnected: run claude-peers dashboard for a new link" : "reconnecting…";
  });
  source.addEventListener("state", (e) => {
    const s = JSON.parse(e.data);
    Object.assign(state, { peers: s.peers, health: s.health, kills: s.kills, flow: [] });
    $("flow").replaceChildren();
    $("log").replaceChildren();
    addFlow(s.flow, 0);
    addLog(s.log);
    renderHealth(); renderPeers(); renderKills();
    document.body.dataset.ready = "true";
  });
  source.addEventListener("peers", (e) => { state.peers = JSON.parse(e.data).peers; renderPeers(); });
  source.addEventListener("health", (e) => { state.health = JSON.parse(e.data).health; renderHealth(); });
  source.addEventListener("flow", (e) => { const s = JSON.parse(e.data); addFlow(s.items, s.skipped); });
  source.addEventListener("log", (e) => addLog(JSON.parse(e.data).items));
  source.addEventListener("kills", (e) => { state.kills = JSON.parse(e.data).kills; renderKills(); });
}

document.addEventListener("DOMContentLoaded", () => {
  $("send-form").addEventListener("submit", sendNote);
  $("kill-confirm").addEventListener("click", confirmKill);
  $("kill-cancel").addEventListener("click", () => $("kill-dialog").close());
  $("thread-close").addEventListener("click", () => $("thread-dialog").close());
  connect();
  setInterval(tickUptime, 1000);
});
