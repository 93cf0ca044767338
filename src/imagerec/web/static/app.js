// imagerec serve: the page. Plain JS, no dependencies, works offline.
// State lives in the URL (?view=&id=&token=&folder=&k=&we=&wc=&wd=): back/forward re-render from it.
"use strict";

const PAGE_SIZE = 60;
const THUMB = 256;
const SIGNALS = [["embedding", "we"], ["color", "wc"], ["dhash", "wd"]];
const $ = (sel) => document.querySelector(sel);
let defaults = { k: 10, weights: { embedding: 0.7, color: 0.2, dhash: 0.1 } };
let selected = -1;
let browseOffset = 0;
let rerankTimer = null;
let rerankSeq = 0;
let loadingMore = false;

class ApiError extends Error {
  constructor(status, kind, detail) { super(detail); this.status = status; this.kind = kind; }
}

async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new ApiError(0, "network", "the server cannot be reached (is 'imagerec serve' still running?)");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { /* not JSON: reported below */ }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `server error ${response.status}`;
    throw new ApiError(response.status, body && body.kind ? body.kind : "http", detail);
  }
  return body;
}

// -- URL state ------------------------------------------------------------------------------------

function readState() {
  const p = new URLSearchParams(location.search);
  const num = (key, fallback) => (p.has(key) && p.get(key) !== "" && !isNaN(+p.get(key)) ? +p.get(key) : fallback);
  const weights = {};
  for (const [name, key] of SIGNALS) weights[name] = num(key, defaults.weights[name]);
  return { view: p.get("view") || "browse", id: p.get("id"), token: p.get("token"), folder: p.get("folder") || "",
           k: num("k", defaults.k), weights };
}

function stateUrl(state) {
  const p = new URLSearchParams();
  p.set("view", state.view);
  if (state.id != null) p.set("id", state.id);
  if (state.token) p.set("token", state.token);
  if (state.folder) p.set("folder", state.folder);
  if (state.view !== "browse") {
    p.set("k", state.k);
    for (const [name, key] of SIGNALS) p.set(key, state.weights[name]);
  }
  return "?" + p.toString();
}

function go(changes, replace = false) {
  const state = Object.assign(readState(), changes);
  history[replace ? "replaceState" : "pushState"](null, "", stateUrl(state));
  render();
}

function queryString(state) {
  const p = new URLSearchParams({ k: state.k });
  for (const [name] of SIGNALS) p.set("w_" + name, state.weights[name]);
  return p.toString();
}

// -- messages -------------------------------------------------------------------------------------

function showMessage(text, info = false) {
  const box = $("#message");
  box.textContent = text || "";
  box.className = info ? "info" : "";
  box.hidden = !text;
}

function showBanner(lines) {
  const box = $("#banner");
  box.textContent = lines.filter(Boolean).join(" · ");
  box.hidden = !box.textContent;
}

// -- cards ----------------------------------------------------------------------------------------

function card(image) {
  const fig = document.createElement("figure");
  fig.className = "card";
  fig.dataset.id = image.id;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = image.path;
  img.src = `/api/images/${image.id}/thumbnail?size=${THUMB}`;
  const caption = document.createElement("figcaption");
  caption.title = image.path;
  caption.textContent = image.path;
  fig.append(img, caption);
  fig.addEventListener("click", () => go({ view: "similar", id: String(image.id), token: null, ...controls() }));
  return fig;
}

function setScore(fig, result) {
  let score = fig.querySelector(".score");
  if (!score) {
    score = document.createElement("div");
    score.className = "score";
    fig.querySelector("figcaption").before(score);
  }
  const s = result.scores;
  score.textContent = `#${result.rank} ${result.score.toFixed(3)} · emb ${s.embedding.toFixed(2)} col ${s.color.toFixed(2)} dh ${s.dhash.toFixed(2)}`;
  let dup = fig.querySelector(".dup");
  if (result.near_duplicate && !dup) {
    dup = document.createElement("span");
    dup.className = "dup";
    dup.textContent = "near-duplicate";
    fig.append(dup);
  } else if (!result.near_duplicate && dup) dup.remove();
}

// Re-rank in place: existing cards are moved (their <img> is kept, so no thumbnail is fetched again).
function showResults(results) {
  const grid = $("#grid");
  const old = new Map([...grid.querySelectorAll(".card")].map((el) => [el.dataset.id, el]));
  const selectedId = selected >= 0 && grid.children[selected] ? grid.children[selected].dataset.id : null;
  const cards = results.map((r) => {
    const fig = old.get(String(r.id)) || card(r);
    setScore(fig, r);
    return fig;
  });
  grid.replaceChildren(...cards);
  if (!results.length) grid.append(emptyNote("no similar images found"));
  select(selectedId ? cards.findIndex((c) => c.dataset.id === selectedId) : -1);
}

function emptyNote(text) {
  const div = document.createElement("div");
  div.className = "empty";
  div.textContent = text;
  return div;
}

function select(index) {
  const cards = [...$("#grid").querySelectorAll(".card")];
  cards.forEach((c) => c.classList.remove("selected"));
  selected = cards.length ? Math.max(0, Math.min(index, cards.length - 1)) : -1;
  if (index < 0) selected = -1;
  if (selected >= 0) {
    cards[selected].classList.add("selected");
    cards[selected].scrollIntoView({ block: "nearest" });
  }
}

// -- pages ----------------------------------------------------------------------------------------

async function renderBrowse(state, reset = true) {
  $("#query").hidden = true;
  const grid = $("#grid");
  if (reset) { grid.replaceChildren(); browseOffset = 0; selected = -1; }
  if (status.database === false) {
    grid.replaceChildren(emptyNote(status.hint));
    $("#more").hidden = true;
    return;
  }
  const params = new URLSearchParams({ offset: browseOffset, limit: PAGE_SIZE });
  if (state.folder) params.set("folder", state.folder);
  const page = await api(`/api/images?${params}`);
  grid.append(...page.images.map(card));
  browseOffset += page.images.length;
  if (!page.total) grid.append(emptyNote(status.hint || "no images in this folder"));
  $("#more").hidden = browseOffset >= page.total;
  $("#more").textContent = `Load more (${browseOffset} of ${page.total})`;
}

function showQuery(html) {
  const box = $("#query");
  box.replaceChildren(...html);
  box.hidden = false;
}

async function renderSimilar(state) {
  $("#more").hidden = true;
  const img = document.createElement("img");
  img.src = `/api/images/${encodeURIComponent(state.id)}/thumbnail?size=512`;
  img.alt = "query image";
  const info = document.createElement("div");
  info.id = "query-info";
  info.textContent = `similar to image ${state.id}`;
  const link = document.createElement("a");
  link.href = `/api/images/${encodeURIComponent(state.id)}/file`;
  link.textContent = "open original";
  link.target = "_blank";
  info.append(document.createElement("br"), link);
  if ($("#query").dataset.for !== "id" + state.id) { showQuery([img, info]); $("#query").dataset.for = "id" + state.id; }
  const answer = await api(`/api/images/${encodeURIComponent(state.id)}/similar?${queryString(state)}`);
  $("#query-info").firstChild.textContent = `similar to ${answer.query.path} (id ${state.id})`;
  return answer;
}

async function renderUpload(state) {
  $("#more").hidden = true;
  if (!state.token) throw new ApiError(400, "upload", "pick or drop an image to search");
  const answer = await api(`/api/search/${encodeURIComponent(state.token)}?${queryString(state)}`);
  if ($("#query").dataset.for !== "t" + state.token) {
    const info = document.createElement("div");
    info.id = "query-info";
    info.textContent = `similar to uploaded ${answer.queries ? answer.queries.join(", ") : "image"}`;
    showQuery([info]);
    $("#query").dataset.for = "t" + state.token;
  }
  return answer;
}

const DUP_PARAMS = [["tier", "tier"], ["max_bits", "mb"], ["min_similarity", "ms"]];
const DUP_SHOWN = 200;

// Duplicates: the groups of /api/duplicates, thresholds adjustable (kept in the URL as tier=, mb=, ms=).
async function renderDuplicates() {
  $("#more").hidden = true;
  const url = new URLSearchParams(location.search);
  const params = new URLSearchParams();
  for (const [name, key] of DUP_PARAMS) if (url.get(key)) params.set(name, url.get(key));
  if ($("#query").dataset.for !== "dups") { showQuery([duplicateControls()]); $("#query").dataset.for = "dups"; }
  for (const [name, key] of DUP_PARAMS) { const el = $(`#dup-${key}`); if (url.get(key)) el.value = url.get(key); }
  $("#dup-summary").textContent = "looking for duplicates…";
  const report = await api(`/api/duplicates?${params}`);
  const p = report.params;
  $("#dup-tier").value = p.tier; $("#dup-mb").value = p.max_bits; $("#dup-ms").value = p.min_similarity;
  const tiers = Object.entries(report.groups_by_tier).map(([t, n]) => `${n} ${t}`).join(", ");
  $("#dup-summary").textContent = `${report.n_groups} groups (${tiers || "none"}), ${report.n_images_in_groups} of ` +
    `${report.images} images` + (report.n_groups > DUP_SHOWN ? ` — showing the first ${DUP_SHOWN}` : "") +
    ". Nothing is deleted: the suggested keeper is framed.";
  const grid = $("#grid");
  grid.replaceChildren(...report.groups.slice(0, DUP_SHOWN).map(duplicateGroup));
  if (!report.groups.length) grid.append(emptyNote("no duplicates found at these thresholds"));
  showBanner([status.hint, ...(report.notices || [])]);
  select(-1);
}

function duplicateControls() {
  const form = document.createElement("form");
  form.id = "dup-controls";
  form.innerHTML = `<label>tier <select id="dup-tier"><option>exact</option><option>near</option><option>similar</option></select></label>
    <label>max dHash bits <input id="dup-mb" type="number" min="0" max="32" step="1"></label>
    <label>min similarity <input id="dup-ms" type="number" min="-1" max="1" step="0.01"></label>
    <button type="submit">Find</button> <span id="dup-summary" aria-live="polite"></span>`;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const p = new URLSearchParams({ view: "duplicates", tier: $("#dup-tier").value, mb: $("#dup-mb").value, ms: $("#dup-ms").value });
    history.pushState(null, "", "?" + p.toString());
    render();
  });
  return form;
}

function duplicateGroup(group, index) {
  const box = document.createElement("section");
  box.className = "dup-group";
  const title = document.createElement("h2");
  title.textContent = `group ${index + 1}: ${group.tier}, ${group.size} images`;
  const cards = group.members.slice().sort((a, b) => b.keep - a.keep).map((m) => {
    const fig = card({ id: m.id, path: m.relpath });
    const note = document.createElement("div");
    note.className = "score";
    note.textContent = m.keep ? `keep · ${m.width}×${m.height}` :
      `${m.width}×${m.height} · ${m.hamming} bits` + (m.cosine == null ? "" : ` · cos ${m.cosine.toFixed(3)}`);
    fig.querySelector("figcaption").before(note);
    if (m.keep) fig.classList.add("keep");
    return fig;
  });
  box.append(title, ...cards);
  return box;
}

// One entry per page; a page returns a search answer (results shown in the grid) or renders itself.
const PAGES = { browse: renderBrowse, similar: renderSimilar, upload: renderUpload, duplicates: renderDuplicates };

let status = {};

async function render() {
  const state = readState();
  syncControls(state);
  document.querySelectorAll("#pages a").forEach((a) => a.classList.toggle("active", a.dataset.view === state.view));
  $("#controls").classList.toggle("browse", state.view === "browse");
  $("#controls").hidden = state.view === "duplicates";
  showMessage("");
  const page = PAGES[state.view] || renderBrowse;
  const seq = ++rerankSeq;
  try {
    if (page !== renderBrowse && $("#grid").dataset.view === "browse") $("#grid").replaceChildren();
    $("#grid").dataset.view = page === renderBrowse ? "browse" : state.view;
    if (page === renderBrowse) $("#query").dataset.for = "";
    const answer = await page(state);
    if (answer && seq === rerankSeq) {
      showResults(answer.results);
      showBanner([status.hint, ...(answer.notices || [])]);
    }
  } catch (err) {
    if (seq !== rerankSeq) return;
    if (state.view !== "browse") $("#grid").replaceChildren();
    showMessage(err.message);
  }
}

// -- controls -------------------------------------------------------------------------------------

function syncControls(state) {
  const k = $("#k");
  if (![...k.options].some((o) => +o.value === state.k)) k.add(new Option(state.k, state.k));
  k.value = String(state.k);
  for (const [name] of SIGNALS) {
    const input = $(`#w-${name}`);
    input.value = state.weights[name];
    input.nextElementSibling.textContent = (+input.value).toFixed(2);
  }
  $("#folder").value = state.folder;
}

// What the k selector and sliders show now (also carried into the next search from the browse page).
function controls() {
  const weights = {};
  for (const [name] of SIGNALS) weights[name] = +$(`#w-${name}`).value;
  return { k: +$("#k").value, weights };
}

function controlsChanged() {
  const now = controls();
  for (const [name] of SIGNALS) $(`#w-${name}`).nextElementSibling.textContent = now.weights[name].toFixed(2);
  clearTimeout(rerankTimer);
  rerankTimer = setTimeout(() => {
    if (!["browse", "duplicates"].includes(readState().view)) go(controls(), true);
  }, 120);
}

async function upload(files) {
  const images = [...files].filter((f) => f.size >= 0);
  if (!images.length) return;
  const state = Object.assign(readState(), controls());
  const form = new FormData();
  images.forEach((f) => form.append("images", f, f.name));
  showMessage(`searching with ${images.map((f) => f.name).join(", ")}…`, true);
  try {
    const answer = await api(`/api/search?${queryString(state)}`, { method: "POST", body: form });
    history.pushState(null, "", stateUrl(Object.assign(state, { view: "upload", token: answer.token, id: null })));
    await render();
  } catch (err) {
    showMessage(err.message);
  }
}

function onKey(event) {
  const tag = event.target.tagName;
  if (event.key === "Escape") {
    event.preventDefault();
    if (readState().view !== "browse") history.back();
    return;
  }
  if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
  const cards = [...$("#grid").querySelectorAll(".card")];
  if (!cards.length) return;
  const top = cards[0].offsetTop;
  const columns = Math.max(1, cards.filter((c) => c.offsetTop === top).length);
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns };
  if (event.key in moves) {
    event.preventDefault();
    select(selected < 0 ? 0 : selected + moves[event.key]);
  } else if (event.key === "Enter" && selected >= 0) {
    event.preventDefault();
    go({ view: "similar", id: cards[selected].dataset.id, token: null, ...controls() });
  }
}

async function loadStatus() {
  try {
    status = await api("/api/status");
    if (status.defaults) defaults = status.defaults;
    const ann = status.ann ? `ANN ${status.ann.state} (${status.ann.count ?? "?"})` : "no ANN index";
    $("#counts").textContent = `${status.images} images · ${status.with_embedding} with embedding · ${ann}`;
    showBanner([status.hint]);
    if (status.database) {
      const folders = await api("/api/folders");
      for (const [name, count] of Object.entries(folders)) $("#folder").add(new Option(`${name} (${count})`, name));
    }
  } catch (err) {
    showMessage(err.message);
  }
}

function setup() {
  $("#k").addEventListener("change", controlsChanged);
  for (const [name] of SIGNALS) $(`#w-${name}`).addEventListener("input", controlsChanged);
  $("#folder").addEventListener("change", (e) => go({ view: "browse", folder: e.target.value, id: null, token: null }));
  $("#upload").addEventListener("change", (e) => { upload(e.target.files); e.target.value = ""; });
  $("#more").addEventListener("click", () => {
    if (loadingMore) return;
    loadingMore = true;
    renderBrowse(readState(), false).catch((err) => showMessage(err.message)).finally(() => { loadingMore = false; });
  });
  new IntersectionObserver((entries) => {
    if (entries[0].isIntersecting && !$("#more").hidden) $("#more").click();
  }).observe($("#more"));
  document.addEventListener("keydown", onKey);
  window.addEventListener("popstate", render);
  document.addEventListener("dragover", (e) => { e.preventDefault(); $("#drop-overlay").hidden = false; });
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) $("#drop-overlay").hidden = true; });
  document.addEventListener("drop", (e) => { e.preventDefault(); $("#drop-overlay").hidden = true; upload(e.dataTransfer.files); });
  document.querySelectorAll("#pages a, #home").forEach((a) => a.addEventListener("click", (e) => {
    e.preventDefault();
    go({ view: a.dataset.view || "browse", id: null, token: null });
  }));
}

setup();
loadStatus().then(render);
