// The try-it page: reads /meta, embeds the user's files and queries through /vectorize (one request
// per file, so an error belongs to its file), ranks by cosine similarity. No dependencies.
"use strict";

// modality -> request field (Weaviate's multi2vec body); the answer's field is `${modality}Vectors`
const FIELDS = { text: "texts", image: "images", audio: "audio", video: "video", imu: "imu", thermal: "thermal", depth: "depth" };
const FILE_KINDS = {
  image: { label: "images", accept: ["image/*"] },
  depth: { label: "depth maps", accept: ["image/png", "image/tiff", ".png", ".tif", ".tiff"] },
  thermal: { label: "thermal images", accept: ["image/*"] },
  audio: { label: "audio", accept: ["audio/*", ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"] },
  video: { label: "videos", accept: ["video/*", ".mp4", ".webm", ".mkv", ".avi", ".mov"] },
  imu: { label: "IMU CSV", accept: [".csv", "text/csv"] },
};
const IN_FLIGHT = 3; // the page's own requests at once; the server batches them together
const RETRIES = 4; // on 429 and 503 (overloaded, loading), after Retry-After

const state = {
  meta: null,
  modalities: [], // what the loaded model embeds
  items: [], // {id, file, name, modality, status: queued|embedding|done|error, vector, error, url}
  queries: [], // kept queries: {text, vector}
  active: null, // what ranks the files: {kind: "text"|"item", text?, vector, id?}
  grid: null, // "text" | "files" | null
  limits: {},
  nextId: 1,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function api(path, body) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, body === undefined ? { headers: authHeaders() } : {
        method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, "the service did not answer (is it still running?)");
    }
    const text = await response.text();
    let data = null;
    try { data = JSON.parse(text); } catch (e) { /* not JSON: reported below */ }
    if (response.ok && data !== null) return data;
    const retryAfter = Number(response.headers.get("Retry-After"));
    if ((response.status === 429 || response.status === 503) && attempt < RETRIES && retryAfter > 0) {
      await sleep(Math.min(retryAfter, 10) * 1000);
      continue;
    }
    const message = (data && typeof data.error === "string") ? data.error : (text.trim() || response.statusText);
    throw new ApiError(response.status, message);
  }
}

/** One input of one modality -> its vector. */
async function embed(modality, input) {
  const field = FIELDS[modality];
  const answer = await api("/vectorize", { [field]: [input] });
  const vectors = answer[`${modality}Vectors`];
  if (!Array.isArray(vectors) || !Array.isArray(vectors[0])) {
    throw new ApiError(200, `the answer has no ${modality}Vectors`);
  }
  return vectors[0];
}

/** The API's message names the item's place in our one-item request ("images[0]: ..."): drop that. */
function itemMessage(error) {
  const message = String(error.message || error).replace(/^[a-z]+\[0\]:\s*/, "");
  return error.status ? `${message} (HTTP ${error.status})` : message;
}

// ------------------------------------------------------------------ maths

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}

const formatScore = (s) => s.toFixed(4);

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// ------------------------------------------------------------------ /meta

// HANDSPRING_API_KEY: the server may want a key; the user types it, it stays in this tab's memory.
let apiKey = "";
const authHeaders = () => (apiKey ? { Authorization: `Bearer ${apiKey}` } : {});

function askForKey(message) {
  const form = $("key-form");
  form.hidden = false;
  $("key-error").textContent = message;
  $("api-key").focus();
  return new Promise((resolve) => {
    form.onsubmit = (e) => {
      e.preventDefault();
      apiKey = $("api-key").value.trim();
      form.hidden = true;
      resolve();
    };
  });
}

async function loadMeta() {
  for (;;) {
    try {
      const meta = await fetch("/meta", { headers: authHeaders() });
      const data = await meta.json().catch(() => ({}));
      if (meta.ok) return data;
      if (meta.status === 401) {
        setStatus("");
        await askForKey(data.error || "this server wants an API key");
        continue;
      }
      if (meta.status !== 503) throw new Error(data.error || `HTTP ${meta.status}`);
      setStatus(`The model is loading (${data.error || "not ready"}); waiting for it…`, "busy");
    } catch (e) {
      setStatus(`Cannot read /meta: ${e.message}. Retrying…`, "error");
    }
    await sleep(1000);
  }
}

function setStatus(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind}`;
  status.hidden = !text;
}

// Each field read defensively: /meta may gain or lose fields between versions.
function describe(meta) {
  const weights = (meta.weights && typeof meta.weights === "object") ? meta.weights : {};
  const precision = meta.precision;
  let precisionText = "—";
  if (typeof precision === "string") precisionText = precision;
  else if (precision && typeof precision === "object") {
    precisionText = precision.resolved || precision.requested || "—";
    if (precision.requested && precision.resolved && precision.requested !== precision.resolved) {
      precisionText += ` (asked for ${precision.requested})`;
    }
  }
  const normalized = meta.normalized ?? meta.normalize;
  let output = typeof meta.output === "string" ? meta.output : null;
  if (!output && typeof normalized === "boolean") output = normalized ? "unit vectors (L2-normalized)" : "raw, not normalized";
  const source = weights.source ?? meta.source ?? null;
  const random = weights.random === true || meta.random === true || meta.demo === true
    || (typeof source === "string" && /^random\b/i.test(source));
  const aliases = Array.isArray(meta.aliases) ? meta.aliases : [];
  return {
    facts: [
      ["Model", meta.model ?? meta.feature ?? "unknown"],
      ["Feature", meta.feature ?? null],
      ["Also known as", aliases.filter((a) => a !== meta.model && a !== meta.feature).join(", ") || null],
      ["Modalities", Array.isArray(meta.modalities) ? meta.modalities.join(", ") : null],
      ["Dimensions", meta.dim ?? null],
      ["Precision", precisionText],
      ["Output", output],
      ["Licence", weights.license ?? meta.license ?? "not stated"],
      ["Weights", source],
    ].filter(([, v]) => v !== null && v !== undefined && v !== ""),
    random,
    source,
    version: meta.version,
  };
}

function showMeta(meta) {
  const info = describe(meta);
  const list = $("model");
  // long values (the output convention, the weights' source) get a row of their own, after the rest
  const wide = ([, v]) => String(v).length > 22;
  const facts = [...info.facts.filter((f) => !wide(f)), ...info.facts.filter(wide)];
  list.replaceChildren(...facts.map((f) => el("div", { class: wide(f) ? "fact wide" : "fact", "data-fact": f[0] },
    el("dt", { text: f[0] }), el("dd", { text: String(f[1]) }))));
  list.setAttribute("aria-busy", "false");
  $("demo-banner").hidden = !info.random;
  $("demo-source").textContent = info.random && info.source ? `/meta says: weights.source = “${info.source}”` : "";
  document.body.classList.toggle("is-demo", info.random);
  $("version").textContent = info.version ? `Handspring ${info.version}.` : "";

  state.modalities = Array.isArray(meta.modalities) && meta.modalities.length ? meta.modalities : ["text", "image"];
  state.limits = (meta.limits && typeof meta.limits === "object") ? meta.limits : {};
  const fileModalities = state.modalities.filter((m) => m in FILE_KINDS);
  const input = $("file-input");
  const accept = [...new Set(fileModalities.flatMap((m) => FILE_KINDS[m].accept))];
  input.accept = accept.join(",");
  input.disabled = fileModalities.length === 0;
  $("drop").classList.toggle("disabled", input.disabled);
  $("accept-hint").textContent = fileModalities.length
    ? `This model embeds ${fileModalities.map((m) => FILE_KINDS[m].label).join(", ")}.`
    : "This model embeds texts only: type queries below and compare them in the text grid.";

  // ImageBind reads image files as photos, depth maps or thermal images: the user says which.
  const imageLike = fileModalities.filter((m) => ["image", "depth", "thermal"].includes(m));
  const select = $("add-as");
  select.replaceChildren(...imageLike.map((m) => el("option", { value: m, text: FILE_KINDS[m].label })));
  $("as-wrap").hidden = imageLike.length < 2;

  const texts = state.modalities.includes("text");
  $("query").disabled = !texts;
  $("query-go").disabled = !texts;
  if (!texts) $("query").placeholder = "this model embeds no text";
}

// ------------------------------------------------------------------ files

function modalityOf(file) {
  const served = state.modalities;
  const type = file.type || "";
  const name = file.name.toLowerCase();
  const chosen = $("add-as").value;
  if (type.startsWith("image/") || /\.(png|jpe?g|gif|webp|bmp|tiff?)$/.test(name)) {
    if (chosen && served.includes(chosen)) return chosen;
    return ["image", "depth", "thermal"].find((m) => served.includes(m)) || null;
  }
  if (type.startsWith("audio/") || /\.(wav|flac|mp3|ogg|opus|m4a|aac)$/.test(name)) return served.includes("audio") ? "audio" : null;
  if (type.startsWith("video/") || /\.(mp4|webm|mkv|avi|mov)$/.test(name)) return served.includes("video") ? "video" : null;
  if (type === "text/csv" || name.endsWith(".csv")) return served.includes("imu") ? "imu" : null;
  // Unknown type: if the model takes one kind of file only, let the service judge it.
  const files = served.filter((m) => m in FILE_KINDS);
  return files.length === 1 ? files[0] : null;
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(new Error(`cannot read the file: ${reader.error?.message || "unknown error"}`));
    reader.readAsDataURL(file);
  });
}

function addFiles(files) {
  for (const file of files) {
    const modality = modalityOf(file);
    const item = { id: state.nextId++, file, name: file.name, size: file.size, modality, status: "queued", vector: null, error: null };
    item.url = URL.createObjectURL(file);
    if (!modality) {
      item.status = "error";
      const kinds = state.modalities.filter((m) => m in FILE_KINDS).map((m) => FILE_KINDS[m].label);
      item.error = `not a kind of file this model embeds (${file.type || "unknown type"}); it embeds ${kinds.join(", ") || "no files"}`;
    } else if (state.limits.max_body_bytes && file.size * 4 / 3 + 64 > state.limits.max_body_bytes) {
      item.status = "error";
      item.error = `${formatBytes(file.size)} is over the service's request limit of ${formatBytes(state.limits.max_body_bytes)} once base64-encoded (HANDSPRING_MAX_BODY_BYTES)`;
    }
    state.items.push(item);
  }
  renderItems();
  renderResults();
  pump();
}

let running = 0;
function pump() {
  while (running < IN_FLIGHT) {
    const item = state.items.find((i) => i.status === "queued");
    if (!item) return;
    running++;
    item.status = "embedding";
    updateItem(item);
    embedItem(item).finally(() => {
      running--;
      pump();
    });
  }
}

async function embedItem(item) {
  try {
    const data = await readBase64(item.file);
    item.vector = await embed(item.modality, data);
    item.status = "done";
  } catch (e) {
    item.status = "error";
    item.error = itemMessage(e);
  }
  if (!state.items.includes(item)) return; // removed meanwhile
  updateItem(item);
  renderResults();
  renderGrid();
}

function removeItem(item) {
  state.items = state.items.filter((i) => i !== item);
  URL.revokeObjectURL(item.url);
  if (state.active && state.active.kind === "item" && state.active.id === item.id) state.active = null;
  renderItems();
  renderResults();
  renderGrid();
}

function thumb(item, size = "") {
  const cls = `thumb ${size}`;
  if (["image", "depth", "thermal"].includes(item.modality)) {
    const img = el("img", { class: cls, src: item.url, alt: "", loading: "lazy", decoding: "async" });
    img.addEventListener("error", () => img.replaceWith(placeholder(item, cls, "no preview")));
    return img;
  }
  if (item.modality === "video") {
    // #t: a frame a little in, painted as the preview; a codec the browser lacks gets the placeholder
    const video = el("video", { class: cls, src: `${item.url}#t=0.5`, muted: true, preload: "metadata", "aria-hidden": "true" });
    video.addEventListener("error", () => video.replaceWith(placeholder(item, cls, "▶")));
    return video;
  }
  return placeholder(item, cls, item.modality === "audio" ? "♪" : item.modality === "imu" ? "IMU" : "?");
}

function placeholder(item, cls, text) {
  return el("span", { class: `${cls} placeholder${text.length === 1 ? " glyph" : ""}`, "aria-hidden": "true", text });
}

function statusNode(item) {
  if (item.status === "queued") return el("span", { class: "state", text: "waiting" });
  if (item.status === "embedding") return el("span", { class: "state busy", text: "embedding…" });
  if (item.status === "done") return el("span", { class: "state ok", text: `embedded, ${item.vector.length}-d` });
  return el("p", { class: "item-error", role: "alert", text: item.error });
}

function itemNode(item) {
  const similar = el("button", {
    type: "button", class: "quiet small", disabled: item.status !== "done",
    "aria-label": `Find files similar to ${item.name}`, text: "Find similar",
    onclick: () => rankBy({ kind: "item", id: item.id, vector: item.vector, text: item.name }),
  });
  const remove = el("button", {
    type: "button", class: "quiet small icon", "aria-label": `Remove ${item.name}`, title: "Remove", text: "×",
    onclick: () => removeItem(item),
  });
  return el("li", { class: `item ${item.status}`, "data-item": item.id, "data-name": item.name, "data-status": item.status },
    thumb(item),
    el("div", { class: "item-body" },
      el("p", { class: "item-name", title: item.name, text: item.name }),
      el("p", { class: "item-meta" },
        item.modality ? el("span", { class: `tag tag-${item.modality}`, text: item.modality }) : null,
        el("span", { text: formatBytes(item.size) })),
      statusNode(item)),
    el("div", { class: "item-actions" }, similar, remove));
}

function renderItems() {
  $("items").replaceChildren(...state.items.map(itemNode));
  $("clear-files").disabled = state.items.length === 0;
}

function updateItem(item) {
  const old = document.querySelector(`[data-item="${item.id}"]`);
  if (!old) return renderItems();
  const focused = old.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
  const fresh = itemNode(item);
  old.replaceWith(fresh);
  if (focused) fresh.querySelector(`[aria-label="${CSS.escape(focused)}"]`)?.focus();
}

// ------------------------------------------------------------------ queries and ranking

let typed = 0; // the latest query typed; older answers arriving late are dropped
let typingTimer = null;

async function embedQuery(text) {
  const kept = state.queries.find((q) => q.text === text);
  if (kept) return kept.vector;
  return embed("text", text);
}

async function runQuery(text, keep) {
  text = text.trim();
  const mine = ++typed;
  if (!text) {
    if (state.active && state.active.kind === "text") state.active = null;
    renderResults();
    return;
  }
  state.pending = text;
  renderResults();
  try {
    const vector = await embedQuery(text);
    if (keep && !state.queries.some((q) => q.text === text)) {
      state.queries.push({ text, vector });
      renderQueries();
      renderGrid();
    }
    if (mine !== typed) return; // a newer query was typed meanwhile
    state.pending = null;
    rankBy({ kind: "text", text, vector });
  } catch (e) {
    if (mine !== typed) return;
    state.pending = null;
    state.active = null;
    renderResults(`The query could not be embedded: ${itemMessage(e)}`);
  }
}

function rankBy(active) {
  state.active = active;
  if (active.kind === "item") {
    typed++; // an answer still coming for a typed query must not replace this ranking
    state.pending = null;
  }
  renderResults();
  if (active.kind === "item") $("results-h").scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function ranking() {
  const a = state.active;
  const done = state.items.filter((i) => i.status === "done" && !(a.kind === "item" && i.id === a.id));
  return done.map((item) => ({ item, score: cosine(a.vector, item.vector) })).sort((x, y) => y.score - x.score);
}

function renderResults(problem) {
  const list = $("results");
  const note = $("results-note");
  const heading = $("results-h");
  const a = state.active;
  list.replaceChildren();
  list.removeAttribute("data-query");
  if (problem) {
    heading.textContent = "Results";
    note.textContent = problem;
    note.className = "hint error";
    return;
  }
  note.className = "hint";
  if (state.pending) {
    heading.textContent = `Results for “${state.pending}”`;
    note.textContent = "Embedding the query…";
    if (!a) return;
  }
  if (!a) {
    heading.textContent = "Results";
    note.textContent = state.items.length
      ? "Type a query to rank the files by cosine similarity."
      : "Add files and type a query to rank them by cosine similarity.";
    return;
  }
  heading.textContent = a.kind === "text" ? `Results for “${a.text}”` : `Files most like ${a.text}`;
  const ranked = ranking();
  const waiting = state.items.filter((i) => i.status === "queued" || i.status === "embedding").length;
  const failed = state.items.filter((i) => i.status === "error").length;
  const notes = [];
  if (!ranked.length) notes.push(state.items.length ? "No embedded files to rank yet." : "Add files to rank them.");
  else notes.push(`${ranked.length} file${ranked.length === 1 ? "" : "s"} by cosine similarity, highest first.`);
  if (waiting) notes.push(`${waiting} still embedding.`);
  if (failed) notes.push(`${failed} not ranked: see the error beside ${failed === 1 ? "it" : "each"} above.`);
  if (!state.pending) note.textContent = notes.join(" ");
  list.setAttribute("data-query", a.kind === "text" ? a.text : `item:${a.id}`);
  const top = ranked.length ? ranked[0].score : 1;
  const bottom = ranked.length ? ranked[ranked.length - 1].score : 0;
  list.append(...ranked.map(({ item, score }, i) => {
    // the bar spans this ranking's range: random weights give cosines all close together
    const share = top > bottom ? (score - bottom) / (top - bottom) : 1;
    const bar = el("span", { class: "bar", "aria-hidden": "true" }, el("span", { class: "bar-fill" }));
    bar.firstChild.style.setProperty("--share", (0.08 + 0.92 * share).toFixed(3));
    return el("li", { class: "result", "data-name": item.name, "data-score": String(score) },
      el("span", { class: "rank", "aria-hidden": "true", text: String(i + 1) }),
      thumb(item, "large"),
      el("span", { class: "result-body" },
        el("span", { class: "result-name", title: item.name, text: item.name }),
        el("span", { class: `tag tag-${item.modality}`, text: item.modality })),
      el("span", { class: "result-score" },
        el("span", { class: "score", text: formatScore(score), "aria-label": `cosine ${formatScore(score)}` }),
        bar));
  }));
}

function renderQueries() {
  $("queries").replaceChildren(...state.queries.map((q) => el("li", { class: "chip" },
    el("button", { type: "button", class: "chip-main", "aria-label": `Rank by “${q.text}”`, text: q.text,
      onclick: () => { $("query").value = q.text; typed++; rankBy({ kind: "text", text: q.text, vector: q.vector }); } }),
    el("button", { type: "button", class: "chip-x", "aria-label": `Forget “${q.text}”`, text: "×",
      onclick: () => { state.queries = state.queries.filter((x) => x !== q); renderQueries(); renderGrid(); } }))));
}

// ------------------------------------------------------------------ grids

function renderGrid() {
  const box = $("grid");
  $("grid-text").setAttribute("aria-pressed", String(state.grid === "text"));
  $("grid-files").setAttribute("aria-pressed", String(state.grid === "files"));
  if (!state.grid) return box.replaceChildren();
  let rows;
  if (state.grid === "text") {
    rows = state.queries.map((q) => ({ label: q.text, vector: q.vector, head: el("span", { class: "grid-label", title: q.text, text: q.text }) }));
  } else {
    rows = state.items.filter((i) => i.status === "done").map((i) => ({
      label: i.name, vector: i.vector,
      head: el("span", { class: "grid-label" }, thumb(i, "tiny"), el("span", { class: "grid-name", title: i.name, text: i.name })),
    }));
  }
  if (rows.length < 2) {
    const what = state.grid === "text" ? "Keep two queries or more (type one, press Enter)" : "Embed two files or more";
    return box.replaceChildren(el("p", { class: "hint", text: `${what} to see their grid.` }));
  }
  const scores = rows.map((r) => rows.map((c) => cosine(r.vector, c.vector)));
  const off = scores.flatMap((row, i) => row.filter((_, j) => j !== i));
  const lo = Math.min(...off), hi = Math.max(...off);
  const caption = state.grid === "text" ? "Cosine similarity between kept queries" : "Cosine similarity between embedded files";
  const table = el("table", { class: "grid" },
    el("caption", { text: `${caption} (colour spans ${formatScore(lo)} to ${formatScore(hi)})` }),
    el("thead", {}, el("tr", {}, el("td", {}), ...rows.map((r) => el("th", { scope: "col" }, r.head.cloneNode(true))))),
    el("tbody", {}, ...rows.map((r, i) => el("tr", {},
      el("th", { scope: "row" }, r.head),
      ...rows.map((c, j) => {
        const s = scores[i][j];
        const v = hi > lo ? (s - lo) / (hi - lo) : 1;
        const cell = el("td", { class: i === j ? "diag" : "", title: `${r.label} · ${c.label}: ${formatScore(s)}`, text: s.toFixed(2) });
        if (i !== j) cell.style.setProperty("--v", v.toFixed(3));
        return cell;
      })))));
  box.replaceChildren(table);
}

function toggleGrid(kind) {
  state.grid = state.grid === kind ? null : kind;
  renderGrid();
}

// ------------------------------------------------------------------ wiring

function wire() {
  const drop = $("drop");
  const input = $("file-input");
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      if (!input.disabled) drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (!input.disabled && e.dataTransfer?.files?.length) addFiles([...e.dataTransfer.files]);
  });
  // A file dropped beside the zone must not make the browser navigate away to it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  $("clear-files").addEventListener("click", () => {
    for (const item of state.items) URL.revokeObjectURL(item.url);
    state.items = [];
    if (state.active && state.active.kind === "item") state.active = null;
    renderItems();
    renderResults();
    renderGrid();
    $("file-input").focus();
  });

  const query = $("query");
  query.addEventListener("input", () => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => runQuery(query.value, false), 250);
  });
  $("query-form").addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(typingTimer);
    runQuery(query.value, true);
  });
  $("grid-text").addEventListener("click", () => toggleGrid("text"));
  $("grid-files").addEventListener("click", () => toggleGrid("files"));
}

async function main() {
  wire();
  const meta = await loadMeta();
  state.meta = meta;
  showMeta(meta);
  setStatus("");
  document.body.dataset.ready = "true";
  renderResults();
}

main();
