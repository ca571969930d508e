// llama-scorer's page: a client of the public API (same endpoints, same key). No build step, no
// dependencies. Numbers shown come straight from the API's JSON; the page only subtracts them.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// ---------------------------------------------------------------- API key and requests

const KEY_NAME = "llama-scorer.api-key";

function apiKey() {
  return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "";
}

function saveKey(key, remember) {
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
  if (key) (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
}

/** An API failure, with the server's error message and status. */
class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API with the stored key; throws ApiFailure with a readable message. */
async function api(path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiFailure(0, "cannot reach the server: " + e.message);
  }
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const message = (json && json.error && json.error.message) || text || response.statusText;
    if (response.status === 401) {
      throw new ApiFailure(401, (key ? "The API key was refused: " : "This server needs an API key: ") +
        message + ". Enter the key at the top right.");
    }
    throw new ApiFailure(response.status, `${response.status}: ${message}`);
  }
  return json;
}

// ---------------------------------------------------------------- scoring

/**
 * Scores one item under each of `policies`; returns {policy: result} with results normalized by
 * `normalize`. This is the one place that knows how the request is made: today one /v1/logprobs call per
 * policy; once the multi-policy request exists it becomes a single call with `models` and `base`.
 */
async function fetchScores(policies, item, options) {
  // One request for every policy: the server runs them together and answers one entry per policy.
  const answer = await api("/v1/logprobs", {
    models: policies, ...item, echo: true,
    top_logprobs: options.top, score_end_of_turn: options.endOfTurn,
  });
  const out = {};
  answer.data.forEach((d) => { out[d.model] = normalize(d.model, d); });
  return out;
}

/** One policy's answer as the page uses it: totals and one entry per token, prompt tokens first. */
function normalize(policy, d) {
  const tokens = d.logprobs.content.map((t, i) => ({
    index: i,
    text: t.token,
    id: t.token_id,
    bytes: t.bytes,
    logprob: t.logprob,
    sampling: t.sampling_logprob,
    top: (t.top_logprobs || []).map((a) => ({ text: a.token, id: a.token_id, bytes: a.bytes,
      logprob: a.logprob, sampling: a.sampling_logprob })),
    prompt: i < d.prompt_tokens,
  }));
  return {
    policy,
    temperature: d.temperature,
    logprob: d.logprob,
    sampling: d.sampling_logprob,
    promptTokens: d.prompt_tokens,
    responseTokens: d.response_tokens,
    scoredTokens: d.scored_tokens,
    cached: d.cached,
    tokens,
  };
}

/**
 * Log-ratio of `r` against `base`: the difference of the totals always; per-token differences only when
 * the scored tokens (response, and end-of-turn) have the same ids, else `aligned` is false.
 */
function compare(r, base) {
  const mine = r.tokens.filter((t) => !t.prompt);
  const theirs = base.tokens.filter((t) => !t.prompt);
  const aligned = mine.length === theirs.length && mine.every((t, i) => t.id === theirs[i].id);
  return {
    logRatio: r.sampling - base.sampling,
    aligned,
    perToken: aligned ? mine.map((t, i) => t.sampling - theirs[i].sampling) : null,
  };
}

// ---------------------------------------------------------------- colour scales

// Sequential (log-prob, 0 = certain … −10 and below = very surprising): magma, light to dark.
const MAGMA = ["#fcfdbf", "#feb078", "#f1605d", "#b73779", "#721f81", "#2c115f"];
// Diverging (log-ratio): blue = less likely under the policy than the base, red = more likely.
const RDBU = ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b"];
const LOGPROB_FLOOR = -10;

function hex(c) {
  return [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
}

function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t));
  const x = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const a = hex(stops[i]);
  const b = hex(stops[i + 1]);
  const f = x - i;
  const rgb = a.map((v, k) => Math.round(v + (b[k] - v) * f));
  return { css: `rgb(${rgb.join(",")})`, dark: 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140 };
}

const scales = {
  logprob: { color: (v) => ramp(MAGMA, v / LOGPROB_FLOOR), stops: MAGMA,
    ticks: [[0, "0"], [0.5, "−5"], [1, "≤ −10"]], title: "log-prob (nats, at the policy's temperature)" },
  ratio: (range) => ({ color: (v) => ramp(RDBU, (v / range + 1) / 2), stops: RDBU,
    ticks: [[0, "−" + fmtRange(range)], [0.5, "0"], [1, "+" + fmtRange(range)]],
    title: "log-ratio per token (policy − base, nats)" }),
};

function fmtRange(r) { return r >= 1 ? r.toFixed(0) : r.toFixed(1); }

function renderLegend(scale) {
  const legend = $("#legend");
  legend.replaceChildren();
  const title = el("span", "legend-title", scale.title);
  const bar = el("div", "legend-bar");
  bar.style.background = `linear-gradient(to right, ${scale.stops.join(", ")})`;
  const ticks = el("div", "legend-ticks");
  for (const [at, label] of scale.ticks) {
    const tick = el("span", "", label);
    tick.style.left = at * 100 + "%";
    ticks.append(tick);
  }
  const boundary = el("span", "legend-boundary", "▏ response starts");
  legend.append(title, el("div", "legend-scale", [bar, ticks]), boundary);
}

// ---------------------------------------------------------------- small DOM helpers

function el(tag, cls, content) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (Array.isArray(content)) e.append(...content);
  else if (content !== undefined && content !== null) e.textContent = String(content);
  return e;
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "—";
  return (v > 0 ? "+" : v < 0 ? "−" : "") + Math.abs(v).toFixed(digits);
}

function status(message, state = "info") {
  const s = $("#status");
  s.textContent = message;
  s.dataset.state = message ? state : "idle";
}

/** A token's text made visible: newlines and tabs as symbols (and spaces too where `spaces`). */
function shown(text, spaces = false) {
  const s = text.replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍");
  return (spaces ? s.replace(/ /g, "␣") : s) || "∅";
}

// ---------------------------------------------------------------- state and rendering of results

const state = {
  policies: [],      // served policy ids
  results: null,     // {policy: normalized}
  order: [],         // policies in display order
  base: null,
  view: "logprob",
  fileTokens: false, // the shown results come from a score file (T = 1 token values, ids only)
};

function renderResults() {
  const cards = $("#cards");
  cards.replaceChildren();
  if (!state.results) return;
  const base = state.results[state.base];
  const comparisons = {};
  let range = 0.5;
  for (const p of state.order) {
    if (base && p !== state.base) {
      comparisons[p] = compare(state.results[p], base);
      for (const v of comparisons[p].perToken || []) range = Math.max(range, Math.abs(v));
    }
  }
  range = Math.min(10, Math.ceil(range * 2) / 2);
  const scale = state.view === "ratio" ? scales.ratio(range) : scales.logprob;
  renderLegend(scale);
  for (const p of state.order) cards.append(card(state.results[p], p === state.base, comparisons[p], scale));
}

function card(r, isBase, cmp, scale) {
  const c = el("article", "card");
  c.dataset.policyCard = r.policy;
  c.dataset.totalSamplingLogprob = String(r.sampling);
  c.dataset.totalLogprob = String(r.logprob);
  if (cmp) c.dataset.logRatio = String(cmp.logRatio);
  const head = el("header", "card-head");
  head.append(el("h3", "", r.policy));
  if (isBase) head.append(el("span", "badge base", "base"));
  if (r.temperature !== undefined) head.append(el("span", "badge", "T = " + r.temperature));
  if (r.cached) head.append(el("span", "badge", "cached"));
  const totals = el("dl", "totals");
  const add = (label, value, cls, attr) => {
    const dd = el("dd", cls, value);
    if (attr) dd.dataset.value = attr;
    totals.append(el("dt", "", label), dd);
  };
  add("Σ log-prob" + (state.fileTokens ? "" : " (T)"), fmt(r.sampling), "total");
  if (!state.fileTokens) add("Σ log-prob (T = 1)", fmt(r.logprob));
  add("tokens", `${r.promptTokens ?? "?"} prompt · ${r.scoredTokens ?? r.responseTokens} scored`);
  if (cmp) {
    add("log-ratio vs " + state.base, fmt(cmp.logRatio), "ratio " + (cmp.logRatio >= 0 ? "pos" : "neg"));
  }
  head.append(totals);
  c.append(head);
  if (state.view === "ratio" && cmp && !cmp.aligned) {
    c.append(el("p", "notice", "The response tokens differ from the base's, so only the sums are comparable; " +
      "tokens are shown uncoloured."));
  }
  if (state.view === "ratio" && isBase) {
    c.append(el("p", "muted small", "The base: other policies are compared against it."));
  }
  c.append(tokenStrip(r, cmp, scale, isBase));
  return c;
}

function tokenStrip(r, cmp, scale, isBase) {
  const strip = el("div", "tokens");
  strip.dataset.policy = r.policy;
  let k = 0; // index among scored (non-prompt) tokens
  r.tokens.forEach((t, i) => {
    if (!t.prompt && i > 0 && r.tokens[i - 1].prompt) {
      const b = el("span", "boundary", "");
      b.dataset.boundary = "";
      b.title = "response starts here";
      strip.append(b);
    }
    const s = el("span", "tok" + (t.prompt ? " prompt" : ""), shown(t.text));
    s.dataset.index = String(i);
    s.dataset.kind = t.prompt ? "prompt" : "response";
    s.dataset.tokenId = String(t.id);
    if (t.sampling !== null && t.sampling !== undefined) s.dataset.samplingLogprob = String(t.sampling);
    if (t.logprob !== null && t.logprob !== undefined) s.dataset.logprob = String(t.logprob);
    let ratio = null;
    if (!t.prompt) {
      if (cmp && cmp.perToken) ratio = cmp.perToken[k];
      if (ratio !== null) s.dataset.logRatio = String(ratio);
      k++;
    }
    const value = state.view === "ratio" ? (isBase ? null : ratio) : t.sampling;
    if (value !== null && value !== undefined && !(state.view === "ratio" && t.prompt)) {
      const c = scale.color(value);
      s.style.background = c.css;
      if (c.dark) s.classList.add("dark");
    } else {
      s.classList.add("plain");
    }
    s.tabIndex = 0;
    s._info = { t, ratio, policy: r.policy };
    strip.append(s);
    if (t.text.includes("\n")) strip.append(el("br"));
  });
  return strip;
}

// ---------------------------------------------------------------- tooltip

function showTip(target) {
  const info = target._info;
  if (!info) return;
  const { t, ratio, policy } = info;
  const tip = $("#tooltip");
  tip.replaceChildren();
  const bytes = (t.bytes || []).map((b) => b.toString(16).padStart(2, "0")).join(" ");
  tip.append(el("div", "tip-token", shown(t.text, true)));
  const dl = el("dl", "tip-grid");
  const row = (k, v) => dl.append(el("dt", "", k), el("dd", "", v));
  row("policy", policy);
  row("token id", t.id);
  if (bytes) row("bytes", bytes);
  row("position", `${t.index} (${t.prompt ? "prompt" : "response"})`);
  row(state.fileTokens ? "log-prob (T = 1)" : "log-prob (T)", t.sampling === null ? "— (no context)" : fmt(t.sampling, 4));
  if (!state.fileTokens && t.logprob !== null && t.logprob !== t.sampling) row("log-prob (T = 1)", fmt(t.logprob, 4));
  if (ratio !== null) row("log-ratio vs " + state.base, fmt(ratio, 4));
  tip.append(dl);
  if (t.top && t.top.length) {
    const table = el("table", "tip-top");
    table.append(el("tr", "", [el("th", "", "alternative"), el("th", "num", "id"), el("th", "num", "log-prob")]));
    for (const a of t.top) {
      const tr = el("tr", a.id === t.id ? "same" : "",
        [el("td", "mono", shown(a.text, true)), el("td", "num", a.id), el("td", "num", fmt(a.sampling, 3))]);
      table.append(tr);
    }
    tip.append(table);
  }
  tip.hidden = false;
  const box = target.getBoundingClientRect();
  const w = tip.offsetWidth;
  const h = tip.offsetHeight;
  let x = Math.min(window.innerWidth - w - 8, Math.max(8, box.left));
  let y = box.bottom + 6;
  if (y + h > window.innerHeight - 8) y = Math.max(8, box.top - h - 6);
  tip.style.left = x + window.scrollX + "px";
  tip.style.top = y + window.scrollY + "px";
}

function hideTip() { $("#tooltip").hidden = true; }

// ---------------------------------------------------------------- the form

function chosenPolicies() {
  return $$("#policies input:checked").map((i) => i.value);
}

function messageRow(role = "user", content = "") {
  const row = $("#message-row").content.firstElementChild.cloneNode(true);
  $(".role", row).value = role;
  $(".content", row).value = content;
  $(".remove", row).addEventListener("click", () => row.remove());
  $("#messages").append(row);
}

function promptMode() { return $("input[name=prompt-mode]:checked").value; }

function setPromptMode(mode) {
  $(`input[name=prompt-mode][value=${mode}]`).checked = true;
  $("#prompt").hidden = mode !== "text";
  $("#chat").hidden = mode !== "chat";
  if (mode === "chat" && !$("#messages").children.length) messageRow();
}

function currentItem() {
  const item = { response: $("#response").value };
  if (promptMode() === "chat") {
    item.messages = $$("#messages .message").map((m) => ({ role: $(".role", m).value, content: $(".content", m).value }));
  } else {
    item.prompt = $("#prompt").value;
  }
  return item;
}

async function score() {
  let policies = chosenPolicies();
  const base = $("#base").value;
  if (base && !policies.includes(base)) policies = [base, ...policies];
  if (!policies.length) { status("Choose at least one policy.", "error"); return; }
  const options = { top: Math.max(0, Math.min(20, Number($("#top").value) || 0)), endOfTurn: $("#end-of-turn").checked };
  $("#score").disabled = true;
  status(`Scoring under ${policies.length} polic${policies.length === 1 ? "y" : "ies"}…`, "busy");
  try {
    const results = await fetchScores(policies, currentItem(), options);
    state.results = results;
    state.order = policies;
    state.base = base || null;
    state.fileTokens = false;
    renderResults();
    $("#cards").dataset.scored = "true";
    status("");
  } catch (e) {
    status(e.message, "error");
  } finally {
    $("#score").disabled = false;
  }
}

async function loadPolicies() {
  const box = $("#policies");
  try {
    const models = await api("/v1/models");
    state.policies = models.data.map((m) => m.id);
    box.replaceChildren();
    state.policies.forEach((id, i) => {
      const input = el("input");
      input.type = "checkbox";
      input.value = id;
      input.checked = i < 2;
      input.dataset.policy = id;
      box.append(el("label", "check policy", [input, " " + id]));
    });
    const baseSelect = $("#base");
    baseSelect.replaceChildren(el("option", "", "(none)"));
    baseSelect.firstChild.value = "";
    for (const id of state.policies) {
      const o = el("option", "", id);
      o.value = id;
      baseSelect.append(o);
    }
    baseSelect.value = state.policies[0] || "";
    box.dataset.loaded = "true";
    status("");
  } catch (e) {
    box.replaceChildren(el("p", "muted", "Policies could not be listed."));
    box.dataset.loaded = "error";
    status(e.message, "error");
  }
}

// ---------------------------------------------------------------- score files

const files = { lines: [], inputs: new Map() };

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsText(file);
  });
}

function parseJsonl(text) {
  const out = [];
  let bad = 0;
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    try { out.push(JSON.parse(line)); } catch (_) { bad++; }
  }
  return { rows: out, bad };
}

const idKey = (id) => JSON.stringify(id);

async function loadScoreFile(file) {
  const { rows, bad } = parseJsonl(await readFile(file));
  files.lines = rows.filter((r) => r.policy !== undefined && typeof r.sampling_logprob === "number");
  const errors = rows.length - files.lines.length;
  const policies = [...new Set(files.lines.map((r) => r.policy))];
  const select = $("#file-base");
  select.replaceChildren(...policies.map((p) => { const o = el("option", "", p); o.value = p; return o; }));
  if (policies.includes($("#base").value)) select.value = $("#base").value;
  $("#file-view").hidden = false;
  $("#file-summary").textContent = `${file.name}: ${files.lines.length} scores, ${policies.length} policies` +
    (errors ? `, ${errors} error lines` : "") + (bad ? `, ${bad} unreadable lines` : "");
  renderFileTable();
}

async function loadInputFile(file) {
  const { rows } = parseJsonl(await readFile(file));
  files.inputs = new Map();
  rows.forEach((r, i) => files.inputs.set(idKey(r.id === undefined ? i + 1 : r.id), r));
  status(`Input file ${file.name}: ${files.inputs.size} items.`, "info");
}

/** Rows (id, policy, log-ratio against `base`), largest |log-ratio| first. */
function fileRows(base) {
  const byId = new Map();
  for (const r of files.lines) {
    const k = idKey(r.id);
    if (!byId.has(k)) byId.set(k, {});
    byId.get(k)[r.policy] = r;
  }
  const rows = [];
  for (const [k, group] of byId) {
    const b = group[base];
    if (!b) continue;
    for (const [p, r] of Object.entries(group)) {
      if (p === base) continue;
      rows.push({ key: k, id: r.id, policy: p, line: r, base: b, logRatio: r.sampling_logprob - b.sampling_logprob });
    }
  }
  rows.sort((a, b) => Math.abs(b.logRatio) - Math.abs(a.logRatio));
  return rows;
}

function renderFileTable() {
  const base = $("#file-base").value;
  const body = $("#file-table tbody");
  body.replaceChildren();
  const rows = fileRows(base);
  for (const row of rows) {
    const tr = el("tr", "", [
      el("td", "mono", typeof row.id === "string" ? row.id : JSON.stringify(row.id)),
      el("td", "", row.policy),
      el("td", "num " + (row.logRatio >= 0 ? "pos" : "neg"), fmt(row.logRatio)),
      el("td", "num", fmt(row.line.sampling_logprob)),
      el("td", "num", fmt(row.base.sampling_logprob)),
      el("td", "num", row.line.response_tokens ?? ""),
    ]);
    tr.dataset.itemId = row.key;
    tr.dataset.policy = row.policy;
    tr.dataset.logRatio = String(row.logRatio);
    tr.tabIndex = 0;
    tr.addEventListener("click", () => inspect(row, base, tr));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") inspect(row, base, tr); });
    body.append(tr);
  }
  if (!rows.length) body.append(el("tr", "", [el("td", "muted", `No item has both a policy and the base ${base}.`)]));
}

/** From the file's token detail (`--token-logprobs`), a result shaped like `normalize`'s. */
function fromFile(line) {
  return {
    policy: line.policy, temperature: line.temperature, logprob: line.logprob, sampling: line.sampling_logprob,
    promptTokens: line.prompt_tokens, responseTokens: line.response_tokens, scoredTokens: line.token_ids.length,
    cached: false,
    tokens: line.token_ids.map((id, i) => ({ index: i, text: "#" + id, id, bytes: null,
      logprob: line.token_logprobs[i], sampling: line.token_logprobs[i], top: [], prompt: false })),
  };
}

async function inspect(row, base, tr) {
  $$("#file-table tr.selected").forEach((r) => r.classList.remove("selected"));
  tr.classList.add("selected");
  const input = files.inputs.get(row.key) || (row.line.response !== undefined ? row.line : null);
  if (input && (input.response !== undefined || input.response_token_ids !== undefined)) {
    fillForm(input, [base, row.policy], base);
    await score();
  } else if (Array.isArray(row.line.token_ids) && Array.isArray(row.base.token_ids)) {
    state.results = { [base]: fromFile(row.base), [row.policy]: fromFile(row.line) };
    state.order = [base, row.policy];
    state.base = base;
    state.fileTokens = true;
    renderResults();
    status("Token values from the file (at temperature 1, token ids only); load the input file to see text " +
      "and alternatives.", "info");
  } else {
    status("This line has no token detail: load the input file (or score with --token-logprobs) to inspect it.", "error");
  }
  $("#cards").scrollIntoView({ behavior: "smooth", block: "start" });
}

function fillForm(input, policies, base) {
  if (input.messages) {
    setPromptMode("chat");
    $("#messages").replaceChildren();
    for (const m of input.messages) messageRow(m.role, m.content);
  } else {
    setPromptMode("text");
    $("#prompt").value = input.prompt ?? "";
  }
  $("#response").value = input.response ?? "";
  for (const box of $$("#policies input")) box.checked = policies.includes(box.value);
  $("#base").value = base;
}

// ---------------------------------------------------------------- wiring

function init() {
  $("#api-key").value = apiKey();
  $("#remember-key").checked = !!localStorage.getItem(KEY_NAME);
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    saveKey($("#api-key").value.trim(), $("#remember-key").checked);
    loadPolicies();
  });
  for (const r of $$("input[name=prompt-mode]")) r.addEventListener("change", () => setPromptMode(promptMode()));
  $("#add-message").addEventListener("click", () => messageRow());
  $("#score").addEventListener("click", score);
  for (const r of $$("input[name=view]")) {
    r.addEventListener("change", () => { state.view = $("input[name=view]:checked").value; renderResults(); });
  }
  $("#score-file").addEventListener("change", (e) => {
    if (e.target.files[0]) loadScoreFile(e.target.files[0]).catch((err) => status(err.message, "error"));
  });
  $("#input-file").addEventListener("change", (e) => {
    if (e.target.files[0]) loadInputFile(e.target.files[0]).catch((err) => status(err.message, "error"));
  });
  $("#file-base").addEventListener("change", renderFileTable);
  const cards = $("#cards");
  cards.addEventListener("mouseover", (e) => { const t = e.target.closest(".tok"); if (t) showTip(t); });
  cards.addEventListener("mouseout", (e) => { if (e.target.closest(".tok")) hideTip(); });
  cards.addEventListener("focusin", (e) => { const t = e.target.closest(".tok"); if (t) showTip(t); });
  cards.addEventListener("focusout", hideTip);
  renderLegend(scales.logprob);
  loadPolicies();
}

document.addEventListener("DOMContentLoaded", init);
