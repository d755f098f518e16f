// smartset review: the front end. Plain JavaScript, no build step, nothing from elsewhere.
// Every text from the catalog (labels, class names, file names, reasons) is put on the page
// with textContent, never parsed as HTML.
"use strict";

const PAGE = 200;
const S = {
  token: null, author: "", session: null, classes: [], keyToClass: new Map(),
  queues: [], queue: null, entries: [], items: new Map(), cursor: 0, page: -1,
  view: "grid", selected: null, undo: [], mode: null, chain: Promise.resolve(),
  focusSeq: 0, boxes: [], box: -1, boxSample: null, boxSize: null, boxCategories: [],
};
// Measurements the benchmark and the tests read.
const metrics = { firstPaintMs: null, decisions: [], navigations: [], pending: 0, marks: {} };
window.smartsetReview = { metrics, state: S };
// Overlay painters for the focus view: fn(data, svg, img). The detection boxes and masks
// painter is built in (below); others may register here.
window.smartsetReview.overlays = [];

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child == null) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

// -- the API ------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, envelope) {
    super(envelope ? envelope.message : `HTTP ${status}`);
    this.status = status;
    this.envelope = envelope;
  }
}

async function api(method, path, body) {
  const options = { method, headers: { "X-Smartset-Token": S.token } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) throw new ApiError(response.status, data && data.error);
  return data;
}

function imageUrl(id, kind, sha) {
  return `/api/samples/${encodeURIComponent(id)}/${kind}?token=${encodeURIComponent(S.token)}` +
    (sha ? `&v=${encodeURIComponent(sha)}` : "");
}

let toastTimer = null;
function toast(message, isError = false) {
  const box = $("toast");
  box.textContent = message;
  box.classList.toggle("error", isError);
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 7000 : 2500);
}

function fail(error) {
  if (error instanceof ApiError && error.status === 403) {
    toast("The session token is missing or wrong: open the URL 'smartset review' printed.", true);
  } else {
    toast(error.message || String(error), true);
  }
}

// -- session, classes, queues ---------------------------------------------------------------
function setClasses(classes) {
  S.classes = classes;
  S.keyToClass = new Map(classes.filter((c) => c.key).map((c) => [c.key, c.name]));
  renderClasses();
}

function renderClasses() {
  const list = $("class-list");
  const item = currentItem();
  const chosen = S.mode ? S.mode.chosen : null;
  list.replaceChildren(...S.classes.map((c) => {
    const button = el("button", { type: "button", title: `Assign '${c.name}'`,
      onclick: () => classKey(c.name) },
      el("kbd", { class: c.key ? "" : "none", text: c.key || "·" }),
      el("span", { class: "name", text: c.name }),
      el("span", { class: "n", text: String(c.count) }));
    if (item && item.label === c.name) button.classList.add("current");
    if (chosen && chosen.has(c.name)) button.classList.add("chosen");
    return el("li", {}, button);
  }));
  $("class-names").replaceChildren(...S.classes.map((c) => el("option", { value: c.name })));
}

function renderQueues() {
  const list = $("queue-list");
  list.replaceChildren(...S.queues.map((q) => {
    const button = el("button", { type: "button", dataset: { queue: q.id },
      onclick: () => openQueue(q.id) },
      el("span", { class: q.total ? "" : "empty", text: q.title }),
      el("span", { class: "count", text: `${q.reviewed}/${q.total}` }));
    if (S.queue && S.queue.id === q.id) button.classList.add("current");
    return el("li", {}, button);
  }));
}

function renderProgress() {
  if (!S.queue) return;
  $("queue-title").textContent = S.queue.title;
  $("progress").textContent = `${S.queue.reviewed} of ${S.queue.total} reviewed`;
  const mine = S.queues.find((q) => q.id === S.queue.id);
  if (mine) { mine.reviewed = S.queue.reviewed; mine.total = S.queue.total; }
  const count = document.querySelector(`#queue-list button.current .count`);
  if (count) count.textContent = `${S.queue.reviewed}/${S.queue.total}`;
}

async function refreshQueues() {
  const data = await api("GET", "/api/queues");
  S.queues = data.queues;
  renderQueues();
}

function saveTabState() {
  sessionStorage.setItem("smartset-review-tab", JSON.stringify({
    workspace: S.session && S.session.workspace_path, queue: S.queue && S.queue.id,
    cursor: S.cursor, undo: S.undo.slice(-200), selected: S.selected }));
}

function loadTabState() {
  try { return JSON.parse(sessionStorage.getItem("smartset-review-tab") || "null"); }
  catch (_) { return null; }
}

// -- a queue --------------------------------------------------------------------------------
async function openQueue(id, cursor = 0) {
  const data = await api("GET", `/api/queue?name=${encodeURIComponent(id)}&limit=${PAGE}`);
  if (metrics.marks.queue === undefined) metrics.marks.queue = performance.now();
  S.queue = data.queue;
  S.entries = data.entries;
  S.items = new Map(Object.entries(data.items));
  S.cursor = Math.max(0, Math.min(cursor, S.entries.length - 1));
  S.page = -1;
  document.body.classList.toggle("plan-queue", S.queue.kind === "plan");
  const notice = $("notice");
  notice.hidden = !(S.entries.length === 0 && S.queue.hint);
  notice.textContent = S.entries.length === 0 ? (S.queue.hint || "This queue is empty.") : "";
  renderQueues();
  renderProgress();
  await showPage(Math.floor(S.cursor / PAGE));
  if (S.view === "focus") showFocus();
  saveTabState();
}

async function ensureItems(ids) {
  const missing = ids.filter((id) => id && !S.items.has(id));
  if (!missing.length) return;
  const data = await api("POST", "/api/items", { ids: missing });
  for (const [id, state] of Object.entries(data.items)) S.items.set(id, state);
}

async function showPage(page) {
  const start = page * PAGE;
  const slice = S.entries.slice(start, start + PAGE);
  await ensureItems(slice.map((e) => e.sample_id));
  // the originals that cards name ("dup of FILE")
  await ensureItems(slice.map((e) => e.sample_id && S.items.get(e.sample_id))
    .map((item) => item && item.marks.duplicate_of).filter(Boolean));
  S.page = page;
  const started = performance.now();
  const grid = $("grid");
  const fragment = document.createDocumentFragment();
  let pendingImages = 0;
  const settle = () => {
    pendingImages -= 1;
    if (pendingImages === 0 && metrics.firstPaintMs === null) {
      metrics.firstPaintMs = performance.now();
      metrics.firstPageMs = performance.now() - started;
    }
  };
  slice.forEach((entry, offset) => {
    const card = renderCard(start + offset, entry);
    const img = card.querySelector("img");
    if (img) {
      pendingImages += 1;
      img.addEventListener("load", settle, { once: true });
      img.addEventListener("error", settle, { once: true });
    }
    fragment.append(card);
  });
  grid.replaceChildren(fragment);
  if (metrics.marks.cards === undefined) metrics.marks.cards = performance.now();
  if (pendingImages === 0 && metrics.firstPaintMs === null && slice.length) {
    metrics.firstPaintMs = performance.now();
  }
  const pages = Math.max(1, Math.ceil(S.entries.length / PAGE));
  $("pager").textContent = S.entries.length
    ? `page ${page + 1} of ${pages} · items ${start + 1}–${start + slice.length} of ${S.entries.length}`
    : "";
  moveCursor(S.cursor, false);
}

// A card's caption: the reason without what the card already shows (the duplicate set's
// badge, a plan item's id), so the two lines it has left say why; the whole reason stays in
// its title and in the focus view.
function cardReason(entry) {
  let text = entry.reason || "";
  if (entry.group && S.queue && S.queue.kind === "duplicates") {
    const at = text.indexOf(`${entry.group}: `);
    if (at >= 0 && at <= 40) text = text.slice(at + entry.group.length + 2);
  }
  if (entry.item != null && text.startsWith(`${entry.item}: `)) {
    text = text.slice(String(entry.item).length + 2);
  }
  return withFiles(text, true);
}

// A reason as a person reads it: the sample ids it names (a plan's "mark duplicate of
// 533e4f36a4931900") replaced by their files (by the file's name alone when ``short``: a
// card's two lines), where the app knows them.
function withFiles(text, short = false) {
  return String(text || "").replace(/\b[0-9a-f]{16}\b/g, (id) => {
    const item = S.items.get(id);
    if (!item || !item.relpath) return id;
    return short ? item.relpath.split("/").pop() : item.relpath;
  });
}

function cardBody(index, entry) {
  const item = entry.sample_id ? S.items.get(entry.sample_id) : null;
  const parts = [];
  if (entry.sample_id) {
    parts.push(el("img", { class: "thumb", alt: item ? (item.label || "unlabeled") : "",
      src: (item && item.thumb) || imageUrl(entry.sample_id, "thumb", item && item.sha),
      decoding: "async" }));
  } else {
    parts.push(el("div", { class: "noimg", text: entry.reason }));
  }
  const boxes = item ? boxSummary(item.boxes) : "";
  let labelText = "";
  if (item && item.label != null) labelText = item.label;
  else if (item && boxes) labelText = `${item.boxes.count} ${item.boxes.count === 1 ? "box" : "boxes"}`;
  else if (item) labelText = S.boxCategories.length ? "no boxes" : "(unlabeled)";
  if (entry.tags) {  // the suspicious-tags queue: the image's tags as they are now (and a label)
    labelText = `tags: ${entry.tags.join(", ") || "none"}` + (item && item.label != null ? ` · label ${item.label}` : "");
  }
  parts.push(el("div", { class: entry.tags ? "label tags" : "label", text: labelText, title: labelText }));
  if (boxes) {
    const cats = boxes.slice(boxes.indexOf(": ") + 2);
    parts.push(el("div", { class: "boxes-line", text: cats, title: boxes }));
  }
  if (entry.suggested != null && (!item || entry.suggested !== item.label)) {
    parts.push(el("div", { class: "suggest", title: `suggested: ${entry.suggested}` },
      el("span", { class: "arrow", text: "→" }), el("span", { class: "name", text: entry.suggested })));
  }
  parts.push(el("div", { class: "reason", text: cardReason(entry), title: entry.reason }));
  const badges = el("div", { class: "badges" });
  if (item) {
    if (item.marks.exclude) badges.append(el("span", { class: "badge exclude", text: "excluded" }));
    if (item.origin_id) {
      badges.append(el("span", { class: "badge derived", text: "derived",
        title: `an augmented copy of ${item.origin_id}: kept with it in every split, never scored` }));
    }
    if (item.marks.multi_label) {
      badges.append(el("span", { class: "badge multi", text: `multi: ${item.marks.multi_label.join(", ")}` }));
    }
    if (item.marks.duplicate_of) {
      const of = item.marks.duplicate_of;
      badges.append(el("span", { class: "badge dup", text: `dup of ${fileOf(of)}`, title: `duplicate of ${fileOf(of)} (${of})` }));
    }
  }
  if (entry.group && S.queue && S.queue.kind === "duplicates") {
    badges.append(el("span", { class: "badge", text: entry.group }));
  }
  if (entry.decision) badges.append(el("span", { class: "badge plan", text: entry.decision }));
  if (entry.sample_id && entry.sample_id === S.selected) {
    badges.append(el("span", { class: "badge sel", text: "selected original" }));
  }
  parts.push(badges);
  return { parts, item };
}

function renderCard(index, entry) {
  const card = el("div", { class: "card", role: "option", dataset: { index: String(index) },
    onclick: () => moveCursor(index), ondblclick: () => { moveCursor(index); toggleFocus(); } });
  if (entry.sample_id) card.dataset.sample = entry.sample_id;
  const { parts, item } = cardBody(index, entry);
  card.append(...parts);
  card.classList.toggle("reviewed", Boolean(item && item.reviewed) || Boolean(entry.decision));
  card.classList.toggle("selected", Boolean(entry.sample_id && entry.sample_id === S.selected));
  return card;
}

function cardAt(index) {
  return document.querySelector(`#grid .card[data-index="${index}"]`);
}

function updateCard(index) {
  const card = cardAt(index);
  if (!card) return;
  const fresh = renderCard(index, S.entries[index]);
  const oldImg = card.querySelector("img");
  const newImg = fresh.querySelector("img");
  if (oldImg && newImg && oldImg.src === newImg.src) newImg.replaceWith(oldImg);
  if (card.classList.contains("cursor")) fresh.classList.add("cursor");
  card.replaceWith(fresh);
}

function updateSample(sampleId) {
  S.entries.forEach((entry, index) => { if (entry.sample_id === sampleId) updateCard(index); });
}

function currentEntry() { return S.entries[S.cursor] || null; }
// a sample as a person knows it: its file (relative path), else its id
function fileOf(sampleId) {
  const item = sampleId ? S.items.get(sampleId) : null;
  return item && item.relpath ? item.relpath : sampleId;
}
// "3 boxes: circle 2, square 1" for a detection or segmentation image, else ""
function boxSummary(boxes) {
  if (!boxes || !boxes.count) return "";
  const cats = Object.entries(boxes.categories).map(([c, n]) => (n > 1 ? `${c} ${n}` : c));
  return `${boxes.count} ${boxes.count === 1 ? "box" : "boxes"}: ${cats.join(", ")}`;
}
function currentItem() {
  const entry = currentEntry();
  return entry && entry.sample_id ? S.items.get(entry.sample_id) || null : null;
}

function moveCursor(index, record = true) {
  if (!S.entries.length) { renderClasses(); return; }
  const t0 = performance.now();
  index = Math.max(0, Math.min(index, S.entries.length - 1));
  const page = Math.floor(index / PAGE);
  S.cursor = index;
  if (page !== S.page) {
    showPage(page).then(() => {
      if (record) metrics.navigations.push(performance.now() - t0);
    }).catch(fail);
    return;
  }
  const old = document.querySelector("#grid .card.cursor");
  if (old) old.classList.remove("cursor");
  const card = cardAt(index);
  if (card) {
    card.classList.add("cursor");
    card.scrollIntoView({ block: "nearest" });
  }
  renderClasses();
  if (S.view === "focus") showFocus();
  if (record) metrics.navigations.push(performance.now() - t0);
  saveTabState();
}

function columns() {
  const cards = document.querySelectorAll("#grid .card");
  if (cards.length < 2) return 1;
  const top = cards[0].offsetTop;
  let n = 0;
  for (const card of cards) { if (card.offsetTop !== top) break; n += 1; }
  return Math.max(1, n);
}

// -- decisions ------------------------------------------------------------------------------
function author() { return ($("author").value || "").trim() || undefined; }

// Decisions are sent one after another, each with the version it is based on, read when it
// is sent: two quick keys on one sample never conflict with each other.
let queuesTimer = null;
function enqueue(task) {
  metrics.pending += 1;
  S.chain = S.chain.then(task).catch(fail).finally(() => {
    metrics.pending -= 1;
    // the other queues' counts, once the typing pauses
    clearTimeout(queuesTimer);
    queuesTimer = setTimeout(() => { if (!metrics.pending) refreshQueues().catch(fail); }, 1500);
  });
  return S.chain;
}

function markReviewed(before, after) {
  if (!S.queue || S.queue.kind === "plan") return;
  if (S.queue.kind === "unreviewed" || S.entries.some((e) => e.sample_id === after.sample_id)) {
    if (!before.reviewed && after.reviewed) S.queue.reviewed += 1;
    if (before.reviewed && !after.reviewed) S.queue.reviewed -= 1;
  }
}

function applyState(state) {
  const before = S.items.get(state.sample_id) || { reviewed: false };
  if (!state.thumb && before.thumb) state.thumb = before.thumb;  // inline thumbnails stay
  S.items.set(state.sample_id, state);
  markReviewed(before, state);
  updateSample(state.sample_id);
}

async function refreshItems(ids) {
  const data = await api("POST", "/api/items", { ids });
  for (const state of Object.values(data.items)) applyState(state);
  renderProgress();
}

function decide(action, extra = {}, started = performance.now()) {
  const entry = currentEntry();
  if (!entry || !entry.sample_id) { toast("No image here to decide on."); return; }
  const sampleId = entry.sample_id;
  const advance = extra.advance !== false;
  delete extra.advance;
  if (advance) moveCursor(S.cursor + 1, false);
  return enqueue(async () => {
    const item = S.items.get(sampleId);
    const body = { action, sample_id: sampleId, queue: S.queue.id, ...extra };
    const who = author();
    if (who) body.author = who;
    if (action === "label" || action === "accept") body.expected_event = item.label_event_id;
    const kind = { exclude: "exclude", include: "exclude", multi_label: "multi_label",
      duplicate_of: "duplicate_of", unmark: extra.kind }[action];
    if (kind) body.expected_mark = item.mark_versions[kind];
    try {
      const result = await api("POST", "/api/decisions", body);
      applyState(result.sample);
      renderProgress();
      S.undo.push({ label_events: result.label_events, mark_events: result.mark_events,
        text: result.message });
      saveTabState();
      if (action === "label" && !S.classes.some((c) => c.name === extra.label)) await reloadClasses();
      else bumpCounts(item.label, result.sample.label);
      toast(result.message);
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        toast(`Conflict: ${error.message}`, true);
        await refreshItems([sampleId]);
      } else { throw error; }
    } finally {
      metrics.decisions.push(performance.now() - started);
      renderClasses();
    }
  });
}

function bumpCounts(oldLabel, newLabel) {
  if (oldLabel === newLabel) return;
  for (const c of S.classes) {
    if (c.name === oldLabel) c.count -= 1;
    if (c.name === newLabel) c.count += 1;
  }
}

async function reloadClasses() {
  const data = await api("GET", "/api/session");
  setClasses(data.classes);
  await refreshQueues();
}

function classKey(name, started) {
  if (S.mode) {
    if (S.mode.chosen.has(name)) S.mode.chosen.delete(name); else S.mode.chosen.add(name);
    renderMode();
    renderClasses();
    return;
  }
  decide("label", { label: name }, started);
}

function toggleExclude(started) {
  const item = currentItem();
  if (!item) return;
  decide(item.marks.exclude ? "include" : "exclude", {}, started);
}

function startMulti() {
  const item = currentItem();
  if (!item) return;
  S.mode = { kind: "multi", chosen: new Set(item.label ? [item.label] : []) };
  renderMode();
  renderClasses();
}

function renderMode() {
  const box = $("mode");
  if (!S.mode) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  const chosen = [...S.mode.chosen].sort();
  box.textContent = `Multi-label: press the keys of the classes this image shows ` +
    `(chosen: ${chosen.join(", ") || "none"}). Enter saves, Esc cancels.`;
}

function finishMulti(save, started) {
  const mode = S.mode;
  S.mode = null;
  renderMode();
  renderClasses();
  if (!save) return;
  const chosen = [...mode.chosen];
  if (chosen.length < 2) { toast("Multi-label needs two or more classes.", true); return; }
  decide("multi_label", { classes: chosen }, started);
}

function selectOriginal() {
  const entry = currentEntry();
  if (!entry || !entry.sample_id) return;
  const previous = S.selected;
  S.selected = entry.sample_id;
  if (previous) updateSample(previous);
  updateSample(S.selected);
  $("selected-info").textContent = `Selected original: ${fileOf(S.selected)}`;
  saveTabState();
  toast("Selected as the original: press d on its copies.");
}

function duplicateTarget(entry) {
  if (S.selected && S.selected !== entry.sample_id) return S.selected;
  if (entry.group && S.queue.kind === "duplicates") {
    const first = S.entries.find((e) => e.group === entry.group && e.sample_id !== entry.sample_id);
    if (first) return first.sample_id;
  }
  return null;
}

function markDuplicate(started) {
  const entry = currentEntry();
  const item = currentItem();
  if (!entry || !item) return;
  const of = duplicateTarget(entry);
  if (!of) { toast("Select the original first: move to it and press s.", true); return; }
  if (item.marks.duplicate_of === of) {
    decide("unmark", { kind: "duplicate_of" }, started);
  } else {
    decide("duplicate_of", { of }, started);
  }
}

function undoLast(started = performance.now()) {
  const step = S.undo.pop();
  if (!step) { toast("Nothing to undo in this tab."); return; }
  saveTabState();
  return enqueue(async () => {
    const body = { label_events: step.label_events, mark_events: step.mark_events,
      annotation_events: step.annotation_events || [], tag_events: step.tag_events || [],
      queue: S.queue.id };
    if (step.plan) body.plan = step.plan;
    const who = author();
    if (who) body.author = who;
    try {
      const result = await api("POST", "/api/undo", body);
      for (const state of Object.values(result.samples)) applyState(state);
      updateTags(result.tags);
      if (step.plan) {
        S.entries.forEach((e, i) => {
          if (e.item === step.plan.item) { e.decision = null; S.queue.reviewed -= 1; updateCard(i); }
        });
      }
      setClasses(result.classes);
      renderProgress();
      if (result.annotation_events.length && S.view === "focus") await showFocus();
      toast(`Undone: ${step.text}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) toast(`Cannot undo: ${error.message}`, true);
      else throw error;
    } finally {
      metrics.decisions.push(performance.now() - started);
    }
  });
}

// The tags a decision left (sample id -> tags): every card of those samples shows them.
function updateTags(tags) {
  if (!tags) return;
  S.entries.forEach((e, i) => {
    if (e.tags && e.sample_id in tags) { e.tags = tags[e.sample_id]; updateCard(i); }
  });
}

function planDecision(decision, started = performance.now()) {
  const entry = currentEntry();
  if (!entry || !entry.item || S.queue.kind !== "plan") {
    toast("y and n decide items of a cleaning plan queue.");
    return;
  }
  const index = S.cursor;
  moveCursor(S.cursor + 1, false);
  return enqueue(async () => {
    const body = { plan: S.queue.plan || S.queue.id.slice("plan:".length), item: entry.item,
      decision, queue: S.queue.id };
    const who = author();
    if (who) body.author = who;
    try {
      const result = await api("POST", "/api/plans/decide", body);
      for (const state of Object.values(result.samples)) applyState(state);
      if (!entry.decision) S.queue.reviewed += 1;
      entry.decision = result.decision;
      updateTags(result.tags);
      updateCard(index);
      setClasses(result.classes);
      S.undo.push({ label_events: result.label_events, mark_events: result.mark_events,
        tag_events: result.tag_events || [], plan: { name: body.plan, item: entry.item },
        text: `${result.decision} ${entry.item}` + (entry.sample_id ? ` (${fileOf(entry.sample_id)})` : "") });
      saveTabState();
      renderProgress();
      toast(`${entry.item}` + (entry.sample_id ? ` (${fileOf(entry.sample_id)})` : "") + ` ${result.decision}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) toast(error.message, true);
      else throw error;
    } finally {
      metrics.decisions.push(performance.now() - started);
    }
  });
}

// -- merge, rename, export ------------------------------------------------------------------
function openMerge() {
  const box = $("merge-sources");
  box.replaceChildren(...S.classes.map((c) => el("label", {},
    el("input", { type: "checkbox", value: c.name }), ` ${c.name} (${c.count})`)));
  $("merge-into").value = "";
  $("merge-dialog").returnValue = "";
  $("merge-dialog").showModal();
}

async function onMergeClose() {
  const dialog = $("merge-dialog");
  const how = dialog.returnValue;
  if (how !== "merge" && how !== "rename") return;
  const sources = [...$("merge-sources").querySelectorAll("input:checked")].map((i) => i.value);
  const into = $("merge-into").value.trim();
  if (!sources.length || !into) { toast("Tick the classes and name the result.", true); return; }
  if (how === "rename" && sources.length !== 1) { toast("Rename takes one class.", true); return; }
  const body = how === "rename"
    ? { old: sources[0], new: into, queue: S.queue ? S.queue.id : "classes" }
    : { sources, into, queue: S.queue ? S.queue.id : "classes" };
  const who = author();
  if (who) body.author = who;
  await enqueue(async () => {
    const result = await api("POST", `/api/classes/${how}`, body);
    S.undo.push({ label_events: result.label_events, mark_events: [], text: result.message });
    setClasses(result.classes);
    saveTabState();
    toast(result.message);
    await refreshQueues();
    const visible = S.entries.slice(S.page * PAGE, (S.page + 1) * PAGE)
      .map((e) => e.sample_id).filter(Boolean);
    S.items.clear();
    await ensureItems(visible);
    visible.forEach((id) => updateSample(id));
  });
}

async function onExportClose() {
  if ($("export-dialog").returnValue !== "export") return;
  const name = $("export-name").value.trim();
  try {
    const info = await api("POST", "/api/export", name ? { name } : {});
    toast(`Version '${info.name}': ${info.n_samples} samples.`);
  } catch (error) { fail(error); }
}

// -- focus view -----------------------------------------------------------------------------
function toggleFocus() {
  S.view = S.view === "focus" ? "grid" : "focus";
  $("focus").hidden = S.view !== "focus";
  $("grid-view").hidden = S.view === "focus";
  if (S.view === "focus") showFocus();
  else moveCursor(S.cursor, false);
}

function section(title, ...children) {
  return el("section", {}, el("h3", { text: title }), ...children);
}

function table(rows) {
  return el("table", {}, el("tbody", {}, ...rows.map((cells) =>
    el("tr", {}, ...cells.map((c) => el("td", {}, c == null ? "" : (c instanceof Node ? c : String(c))))))));
}

// findings: one line of short facts (kind, score, suggestion; never broken inside a word),
// then the explanation across the whole width
function findingsTable(rows) {
  return el("table", { class: "findings" }, el("tbody", {}, ...rows.flatMap(([facts, reason]) => [
    el("tr", { class: "facts" }, el("td", {}, ...facts.filter((f) => f).flatMap((f, i) => [
      i ? " · " : "", el("span", { class: f.cls || "", text: f.text })]))),
    el("tr", { class: "why" }, el("td", { text: reason || "" }))])));
}

function neighbourFigures(list) {
  if (!list.length) return el("p", { class: "muted", text: "none" });
  return el("div", { class: "neigh" }, ...list.map((n) => el("figure", {
    title: `${n.sample_id}: ${n.label} (similarity ${n.similarity}); click: select as original`,
    onclick: async () => {
      S.selected = n.sample_id;
      try { await ensureItems([n.sample_id]); } catch (error) { /* named by id then */ }
      $("selected-info").textContent = `Selected original: ${fileOf(n.sample_id)}`;
      toast(`Selected ${fileOf(n.sample_id)} as the original: press d to mark this image its duplicate.`);
    } },
  el("img", { src: imageUrl(n.sample_id, "thumb"), alt: n.label == null ? "" : n.label }),
  el("figcaption", {}, el("span", { class: "name", text: n.label == null ? "(unlabeled)" : n.label }),
    el("span", { class: "sim", text: n.similarity.toFixed(2) })))));
}

async function showFocus() {
  const entry = currentEntry();
  const info = $("focus-info");
  const img = $("focus-img");
  const svg = $("focus-overlay");
  if (!entry || entry.sample_id !== S.boxSample) {  // the same image keeps its boxes until redrawn
    svg.replaceChildren();
    S.boxes = []; S.box = -1; S.boxSample = null;
  }
  if (!entry) { info.replaceChildren(); img.removeAttribute("src"); return; }
  if (!entry.sample_id) {
    img.removeAttribute("src");
    $("focus-caption").textContent = entry.reason;
    info.replaceChildren(section("Plan item", el("p", { text: entry.reason })));
    return;
  }
  const seq = ++S.focusSeq;
  const item = S.items.get(entry.sample_id);
  img.src = imageUrl(entry.sample_id, "image", item && item.sha);
  img.alt = item && item.label ? item.label : "";
  const data = await api("GET", `/api/samples/${encodeURIComponent(entry.sample_id)}`);
  if (seq !== S.focusSeq) return;  // moved on meanwhile
  img.classList.toggle("smooth", (data.width || 0) >= 256);
  const shown = (data.overlays || []).length;
  let what = data.label == null ? "(unlabeled)" : data.label;
  if (shown) {
    const counts = {};
    for (const o of data.overlays) counts[o.category] = (counts[o.category] || 0) + 1;
    const summary = boxSummary({ count: shown, categories: counts });
    what = data.label == null ? summary : `${data.label} · ${summary}`;
  }
  $("focus-caption").textContent =
    `${what} · ${data.relpath} · ${data.split} · ${data.width}×${data.height} · ${withFiles(entry.reason)}`;
  const parts = [];
  if (entry.tags) {
    parts.push(section("Tags", findingsTable([[[
      { text: entry.tags.join(", ") || "none", cls: "kind" },
      { text: `proposed ${entry.suggested}`, cls: "suggested" },
      entry.score == null ? null : { text: `score ${Number(entry.score).toFixed(2)}`, cls: "num" },
      entry.decision ? { text: entry.decision } : null], withFiles(entry.reason)]])));
  }
  const model = data.model;
  if (model.available) {
    const rows = model.top.map((p) => {
      const bar = el("span", { class: "bar" });
      bar.style.width = `${Math.round(p.prob * 100)}px`;  // CSSOM: allowed by the CSP
      return [p.label, bar, p.prob.toFixed(3)];
    });
    parts.push(section(`Model (run ${model.run_id}, ${model.kind}, fold ${model.fold})`,
      rows.length ? table(rows) : el("p", { text: `predicted ${model.predicted}` })));
  } else {
    parts.push(section("Model", el("p", { class: "muted", text: model.hint })));
  }
  const saliency = data.saliency;  // precomputed by 'smartset evaluate --saliency'
  if (saliency) {
    parts.push(section(`Saliency (evaluation run ${saliency.run_id}, ${saliency.method} of ` +
      `the predicted class: (${saliency.true}) ${saliency.predicted} ${saliency.p})`,
      el("img", { src: saliency.url, class: "saliency", alt: "saliency map", width: "160" })));
  }
  const neighbours = data.neighbours;
  if (neighbours.available) {
    parts.push(section("Nearest of its own class", neighbourFigures(neighbours.own)));
    parts.push(section("Nearest of other classes", neighbourFigures(neighbours.other)));
    const source = neighbours.source;  // which embeddings found them, and how to do better
    if (source) {
      parts.push(el("p", { class: "muted", text: `by ${source.description}` +
        (source.hint ? `. ${source.hint}` : "") }));
    }
  } else {
    parts.push(section("Nearest neighbours", el("p", { class: "muted", text: neighbours.hint })));
  }
  if (data.lineage) {
    const l = data.lineage;
    parts.push(section("Augmented from",
      el("div", { class: "neigh" }, el("figure", {},
        el("img", { src: imageUrl(l.origin_id, "thumb"), alt: "" }),
        el("figcaption", { text: l.origin_label == null ? "(unlabeled)" : l.origin_label }))),
      el("p", { text: `${l.origin_relpath} (${l.origin_id}) by ${l.stage}` }),
      el("pre", { class: "params", text: JSON.stringify(l.params, null, 1) })));
  }
  if (data.label_issues.length) {
    parts.push(section("Label issues", findingsTable(data.label_issues.map((i) => [[
      { text: i.kind, cls: "kind" }, { text: i.score.toFixed(2), cls: "num" },
      i.suggested ? { text: `suggested ${i.suggested}`, cls: "suggested" } : null], i.reason]))));
  }
  if (data.findings.length) {
    parts.push(section("Audit findings", findingsTable(data.findings.map((f) => [[
      { text: f.kind, cls: "kind" },
      f.score == null ? null : { text: Number(f.score).toFixed(3), cls: "num" }], f.reason]))));
  }
  if (data.overlays && data.overlays.length) parts.push(el("section", { id: "box-panel" }));
  const marks = Object.entries(data.marks).map(([k, v]) => `${k}${v === true ? "" : ": " + JSON.stringify(v)}`);
  parts.push(section("Marks", el("p", { text: marks.length ? marks.join("; ") : "none" })));
  parts.push(section("Label history", el("ol", { class: "history" }, ...data.history.map((h) =>
    el("li", {}, el("span", { class: "what", text: h.label == null ? "(no label)" : h.label }),
      ` · ${h.origin} · ${h.author} · ${h.time.slice(0, 16).replace("T", " ")} · event ${h.id}` +
      (h.reason ? ` · ${h.reason}` : ""))))));
  if (data.box_history && data.box_history.length) {
    parts.push(section("Box history", el("ol", { class: "history" }, ...data.box_history.map((h) =>
      el("li", {}, el("span", { class: "what", text: h.deleted ? `(deleted) ${h.category}` : h.category }),
        ` · box ${h.annotation_id.slice(0, 6)} · ${h.origin} · ${h.author} · ` +
        `${h.time.slice(0, 16).replace("T", " ")} · event ${h.id}` + (h.reason ? ` · ${h.reason}` : ""))))));
  }
  info.replaceChildren(...parts);
  paintBoxes(data);
  for (const paint of window.smartsetReview.overlays) {
    try { paint(data, svg, img); } catch (error) { console.error(error); }
  }
}

// -- detection boxes and masks ----------------------------------------------------------------
// Drawn in the image's own pixel coordinates (the SVG's viewBox), so they sit on the image
// at any display size; a person selects a box (b, or a click) and relabels or deletes it.
function svgEl(tag, attrs = {}) {
  // the SVG namespace, read from the overlay element (no URL literal in the page's code)
  const node = document.createElementNS($("focus-overlay").namespaceURI, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function maskUrl(annotationId) {
  return `/api/annotations/${encodeURIComponent(annotationId)}/mask?token=${encodeURIComponent(S.token)}`;
}

function paintBoxes(data) {
  const keep = S.boxSample === data.sample_id && S.box >= 0 ? S.boxes[S.box] : null;
  S.boxes = data.overlays || [];
  S.boxSample = data.sample_id;
  S.boxSize = [data.width, data.height];
  S.box = keep ? S.boxes.findIndex((b) => b.annotation_id === keep.annotation_id) : -1;
  drawBoxes();
}

function drawBoxes() {
  const svg = $("focus-overlay");
  svg.replaceChildren();
  const [width, height] = S.boxSize || [0, 0];
  if (!S.boxes.length || !width || !height) { renderBoxPanel(); return; }
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  const unit = Math.max(width, height) / 320;  // about 2 screen pixels at 640 wide
  S.boxes.forEach((b, i) => {
    const selected = i === S.box;
    const group = svgEl("g", { class: selected ? "box selected" : "box", "data-index": i,
      "data-annotation": b.annotation_id, "data-category": b.category });
    if (b.mask) {
      group.append(svgEl("image", { href: maskUrl(b.annotation_id), x: 0, y: 0, width, height,
        preserveAspectRatio: "none" }));
    }
    for (const polygon of b.polygons || []) {
      const points = [];
      for (let k = 0; k + 1 < polygon.length; k += 2) points.push(`${polygon[k]},${polygon[k + 1]}`);
      group.append(svgEl("polygon", { points: points.join(" "), fill: b.colour,
        "fill-opacity": 0.35, stroke: b.colour, "stroke-width": unit * 0.7 }));
    }
    const [x, y, w, h] = b.bbox;
    const rect = svgEl("rect", { x, y, width: w, height: h, fill: "none", stroke: b.colour,
      "stroke-width": unit * (selected ? 2.2 : 1), "pointer-events": "all" });
    if (selected) rect.setAttribute("stroke-dasharray", `${unit * 4} ${unit * 2}`);
    rect.addEventListener("click", () => selectBox(i));
    group.append(rect);
    const label = svgEl("text", { x: x + unit, y: y > unit * 9 ? y - unit * 1.5 : y + unit * 8,
      "font-size": unit * 7, fill: b.colour, stroke: "#000", "stroke-width": unit * 0.35,
      "paint-order": "stroke", "pointer-events": "none" });
    label.textContent = `${i + 1} ${b.category}`;
    group.append(label);
    const title = svgEl("title");
    title.textContent = `${b.category} (${b.kind}, ${Math.round(w)}×${Math.round(h)}): click to select`;
    group.append(title);
    svg.append(group);
  });
  renderBoxPanel();
}

function renderBoxPanel() {
  const panel = $("box-panel");
  if (!panel) return;
  const rows = S.boxes.map((b, i) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = b.colour;  // CSSOM: allowed by the CSP
    const row = el("tr", { class: i === S.box ? "current" : "", onclick: () => selectBox(i) },
      el("td", { text: String(i + 1) }), el("td", {}, swatch, b.category),
      el("td", { text: `${Math.round(b.bbox[2])}×${Math.round(b.bbox[3])}` }),
      el("td", { text: b.kind }));
    return row;
  });
  const children = [el("h3", { text: `Boxes (${S.boxes.length}) · b selects` }),
    el("table", { class: "boxes" }, el("tbody", {}, ...rows))];
  const box = S.boxes[S.box];
  if (box) {
    children.push(el("p", { class: "box-help", text: `Box ${S.box + 1} (${box.category}): a ` +
      "key below relabels it, / types a category, Delete removes it, Esc deselects." }));
    children.push(el("div", { class: "box-categories" }, ...S.boxCategories.map((name, k) =>
      el("button", { type: "button", class: name === box.category ? "current" : "",
        onclick: () => decideBox("relabel", name) },
      el("kbd", { text: k < 10 ? String((k + 1) % 10) : "·" }), ` ${name}`)),
      el("button", { type: "button", class: "danger", onclick: () => decideBox("delete") },
        el("kbd", { text: "Del" }), " delete")));
  }
  panel.replaceChildren(...children);
}

function selectBox(index) {
  if (!S.boxes.length) { toast("This image has no boxes."); return; }
  const n = S.boxes.length;
  S.box = ((index % n) + n) % n;
  drawBoxes();
}

function boxCategoryKey(key) {
  if (!/^[0-9]$/.test(key)) return null;
  const index = key === "0" ? 9 : Number(key) - 1;
  return S.boxCategories[index] || null;
}

function decideBox(action, category, started = performance.now()) {
  const box = S.boxes[S.box];
  if (!box) { toast("Select a box first: b, or click it."); return; }
  const sampleId = S.boxSample;
  return enqueue(async () => {
    const body = { action, annotation_id: box.annotation_id, queue: S.queue.id,
      expected_event: box.event_id };
    if (category) body.category = category;
    const who = author();
    if (who) body.author = who;
    try {
      const result = await api("POST", "/api/boxes", body);
      applyState(result.sample);
      renderProgress();
      S.undo.push({ label_events: [], mark_events: [], annotation_events: result.annotation_events,
        text: result.message });
      saveTabState();
      if (category && !S.boxCategories.includes(category)) S.boxCategories.push(category);
      if (S.boxSample === sampleId) {
        S.boxes = result.overlays;
        S.box = action === "delete" ? Math.min(S.box, S.boxes.length - 1)
          : S.boxes.findIndex((b) => b.annotation_id === box.annotation_id);
        drawBoxes();
        if (S.view === "focus") showFocus().catch(fail);  // the box history, in the background
      }
      toast(result.message);
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        toast(`Conflict: ${error.message}`, true);
        if (S.view === "focus") await showFocus();
      } else { throw error; }
    } finally {
      metrics.decisions.push(performance.now() - started);
    }
  });
}

// -- help -----------------------------------------------------------------------------------
function showHelp() {
  const rows = S.session.keys.map((k) => el("tr", {}, el("td", {}, el("kbd", { text: k.keys })),
    el("td", { text: k.does })));
  $("keys-table").tBodies[0].replaceChildren(...rows);
  $("class-keys-table").tBodies[0].replaceChildren(...S.classes.map((c) => el("tr", {},
    el("td", {}, el("kbd", { text: c.key || "(mouse or /)" })), el("td", { text: c.name }))));
  $("help").showModal();
}

// -- keys -----------------------------------------------------------------------------------
function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target && ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (document.querySelector("dialog[open]")) return;
  const key = event.key;
  const started = performance.now();
  const lower = key.length === 1 ? key.toLowerCase() : key;
  if (S.mode) {
    if (S.keyToClass.has(lower)) classKey(S.keyToClass.get(lower));
    else if (key === "Enter") finishMulti(true, started);
    else if (key === "Escape") finishMulti(false);
    else return;
    event.preventDefault();
    return;
  }
  if (S.view === "focus" && S.box >= 0) {
    const category = boxCategoryKey(key);
    let handled = true;
    if (category) decideBox("relabel", category, started);
    else if (key === "Delete" || key === "Backspace") decideBox("delete", null, started);
    else if (key === "Escape") { S.box = -1; drawBoxes(); }
    else if (key === "/") { $("label-input").placeholder = "box category ( / )"; $("label-input").focus(); }
    else handled = false;
    if (handled) { event.preventDefault(); return; }
  }
  const cols = S.view === "grid" ? columns() : 1;
  switch (key) {
    case "b": case "B":
      if (S.view !== "focus") { toast("b selects boxes in the focus view (Enter)."); break; }
      selectBox(S.box < 0 && key === "B" ? -1 : S.box + (key === "B" ? -1 : 1));
      break;
    case "ArrowRight": case "j": moveCursor(S.cursor + 1); break;
    case "ArrowLeft": case "k": moveCursor(S.cursor - 1); break;
    case "ArrowDown": moveCursor(S.cursor + cols); break;
    case "ArrowUp": moveCursor(S.cursor - cols); break;
    case " ": moveCursor(S.cursor + (event.shiftKey ? -1 : 1)); break;
    case "Enter": case "f": toggleFocus(); break;
    case "Escape":
      if (S.view === "focus") toggleFocus();
      break;
    case "a": decide("accept", {}, started); break;
    case "x": toggleExclude(started); break;
    case "m": startMulti(); break;
    case "s": selectOriginal(); break;
    case "d": markDuplicate(started); break;
    case "u": undoLast(started); break;
    case "y": planDecision("accept", started); break;
    case "n": planDecision("reject", started); break;
    case "?": showHelp(); break;
    case "/": $("label-input").focus(); break;
    default:
      if (S.keyToClass.has(lower)) { classKey(S.keyToClass.get(lower), started); break; }
      return;
  }
  event.preventDefault();
}

// -- start ----------------------------------------------------------------------------------
function readToken() {
  const match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  const queue = /(?:^|[#&])queue=([^&]+)/.exec(location.hash);  // a link to one queue
  if (queue) S.linkedQueue = decodeURIComponent(queue[1]);
  if (match) {
    sessionStorage.setItem("smartset-review-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);  // off the screen and the history
  }
  return sessionStorage.getItem("smartset-review-token");
}

function wire() {
  document.addEventListener("keydown", onKey);
  $("btn-help").addEventListener("click", showHelp);
  $("btn-merge").addEventListener("click", openMerge);
  $("btn-export").addEventListener("click", () => {
    $("export-dialog").returnValue = "";
    $("export-dialog").showModal();
  });
  $("merge-dialog").addEventListener("close", () => { onMergeClose().catch(fail); });
  $("export-dialog").addEventListener("close", () => { onExportClose(); });
  $("author").addEventListener("change", () => {
    localStorage.setItem("smartset-review-author", $("author").value.trim());
  });
  $("label-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("label-input");
    const label = input.value.trim();
    if (!label) return;
    input.value = "";
    input.blur();
    if (S.view === "focus" && S.box >= 0) {
      input.placeholder = "type a label ( / )";
      decideBox("relabel", label);
    } else {
      decide("label", { label });
    }
  });
  $("action-buttons").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const act = button.dataset.act;
    button.blur();
    ({ accept: () => decide("accept"), exclude: () => toggleExclude(), multi: startMulti,
       select: selectOriginal, duplicate: () => markDuplicate(), undo: () => undoLast(),
       focus: toggleFocus, "plan-accept": () => planDecision("accept"),
       "plan-reject": () => planDecision("reject") })[act]();
  });
}

async function start() {
  S.token = readToken();
  wire();
  if (!S.token) {
    const notice = $("notice");
    notice.hidden = false;
    notice.textContent = "No session token: open the URL that 'smartset review' printed " +
      "(it ends with #token=...).";
    return;
  }
  try {
    metrics.marks.start = performance.now();
    const session = await api("GET", "/api/session");
    metrics.marks.session = performance.now();
    S.session = session;
    $("ws-name").textContent = session.workspace;
    $("author").placeholder = session.author;
    $("author").value = localStorage.getItem("smartset-review-author") || "";
    setClasses(session.classes);
    S.boxCategories = session.box_categories || [];
    let saved = loadTabState();
    if (saved && saved.workspace !== session.workspace_path) saved = null;
    if (saved) {
      S.undo = saved.undo || [];
      S.selected = saved.selected || null;
      if (S.selected) $("selected-info").textContent = `Selected original: ${S.selected}`;
    }
    // The queue list and a queue already chosen (a link, or this tab's) load side by side.
    const listed = refreshQueues();
    let opened = false;
    const wanted = S.linkedQueue || (saved && saved.queue);
    if (wanted) {
      try {
        await openQueue(wanted, !S.linkedQueue && saved ? saved.cursor || 0 : 0);
        opened = true;
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      }
    }
    await listed;
    if (!opened) {
      const known = (id) => S.queues.find((q) => q.id === id);
      const first = ["suspicious", "duplicates", "unreviewed"].map(known)
        .find((q) => q && q.total > 0);
      await openQueue((first || known("unreviewed") || S.queues[0]).id);
    }
    renderQueues();
    window.smartsetReview.ready = true;
  } catch (error) { fail(error); }
}

document.addEventListener("DOMContentLoaded", start);
