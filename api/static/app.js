// The FaceSense dashboard: a hash-routed single page over the JSON API. No build step.
"use strict";

const KEY_STORAGE = "facesense.apiKey";
const FINISHED = ["succeeded", "failed", "cancelled"];
const ERRORS = "!errors"; // the gallery's label filter for failed images (see api/dashboard.py)
const NO_FACE = "!no_face"; // ... and for a faces job's images without a face
const PAGE_SIZES = [24, 48, 96, 192], PAGE_SIZE = 48; // gallery cards per page: choices, default
let timers = [];          // polling timers of the current view, cleared on navigation
let objectUrls = [];      // thumbnail blobs fetched with a key, revoked on navigation

// ---- DOM and HTTP helpers -------------------------------------------------------------------

// h("div", {class: "x"}, child, "text"): elements built with textContent, never innerHTML,
// since image names and errors come from users.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) {
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const resp = await fetch(path, {...opts, headers});
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try { message = (await resp.json()).error.message; } catch { /* not our JSON */ }
    if (resp.status === 401) notice("This server needs an API key: paste yours at the top right.");
    throw new ApiError(resp.status, message);
  }
  return resp;
}

const getJSON = async (path) => (await api(path)).json();
const postJSON = async (path, body) => (await api(path, {
  method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
})).json();

function notice(text, kind = "error") {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = kind;
  el.hidden = !text;
}

function every(ms, fn) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { notice(e.message); }
    if (!stopped) timers.push(setTimeout(tick, ms));
  };
  timers.push({stop: () => { stopped = true; }});
  tick();
}

const pct = (x) => `${(x * 100).toFixed(x >= 0.995 || x === 0 ? 0 : 1)}%`;
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
const groupName = (g) => (g === "" ? "(top level)" : g);

function statusBadge(status) {
  return h("span", {class: `badge status-${status}`, "data-status": status}, status);
}

function progressBar(done, total, failed = 0) {
  const share = (n) => (total ? Math.min(100, (n / total) * 100) : 0).toFixed(1);
  return h("div", {class: "progress", "data-done": done, "data-total": total, role: "progressbar",
                   "aria-valuenow": done, "aria-valuemax": total},
    h("div", {class: "fill", style: `width:${share(done - failed)}%`}),
    failed ? h("div", {class: "fill failed",
                       style: `left:${share(done - failed)}%;width:${share(failed)}%`}) : null,
    h("span", {class: "progress-text"}, `${done} / ${total || "?"}${failed ? ` (${failed} failed)` : ""}`));
}

async function thumbnailImage(url, alt) {
  const img = h("img", {alt, loading: "lazy", width: 128, height: 128});
  if (!localStorage.getItem(KEY_STORAGE)) {
    img.src = url; // no key: let the browser fetch and cache it
    return img;
  }
  try { // <img> can't send a header: fetch with the key, show the blob
    const blob = await (await api(url)).blob();
    const objectUrl = URL.createObjectURL(blob);
    objectUrls.push(objectUrl);
    img.src = objectUrl;
  } catch { img.classList.add("missing"); }
  return img;
}

async function download(path, filename) {
  const blob = await (await api(path)).blob();
  const a = h("a", {href: URL.createObjectURL(blob), download: filename});
  document.body.append(a);
  a.click();
  a.remove();
}

// ---- router ---------------------------------------------------------------------------------

const routes = [
  [/^#?\/?$/, jobsView],
  [/^#\/jobs\/([0-9a-f]+)(?:\?(.*))?$/, jobView],  // ?label=&group=&offset=&limit=: the gallery
  [/^#\/models$/, modelsView],
  [/^#\/models\/([A-Za-z0-9._-]+)$/, modelView],
];

async function route() {
  for (const t of timers) (t.stop ? t.stop() : clearTimeout(t));
  timers = [];
  objectUrls.forEach(URL.revokeObjectURL);
  objectUrls = [];
  notice("");
  const hash = location.hash || "#/";
  const main = document.getElementById("view");
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", hash.startsWith("#/models") === (a.dataset.nav === "models"));
  }
  for (const [re, view] of routes) {
    const m = hash.match(re);
    if (m) {
      main.replaceChildren();
      try { await view(main, ...m.slice(1)); } catch (e) { notice(e.message); }
      return;
    }
  }
  main.replaceChildren(h("p", {}, "No such page. ", h("a", {href: "#/"}, "Back to the jobs.")));
}

// ---- jobs list and submit form --------------------------------------------------------------

async function jobsView(main) {
  const message = h("p", {class: "form-message", id: "submit-message"});
  const source = h("input", {id: "source", name: "source", size: 48, required: true,
                             placeholder: "s3://bucket/prefix or a folder on the server"});
  const model = h("input", {id: "model", name: "model", placeholder: "production", size: 14});
  const priority = h("select", {id: "priority", name: "priority"},
                     ["normal", "high", "low"].map((p) => h("option", {value: p}, p)));
  // Faces: find each face and score it (a row per face); default: as the model was trained.
  const faces = h("select", {id: "faces", name: "faces"},
                  [["", "as the model was trained"], ["true", "each face"], ["false", "whole images"]]
                    .map(([v, t]) => h("option", {value: v}, t)));
  const files = h("input", {id: "files", type: "file", multiple: true,
                            accept: "image/*,.zip,application/zip"});
  const folder = h("input", {id: "folder", type: "file", webkitdirectory: true});

  const submitted = (record) => { location.hash = `#/jobs/${record.id}`; };
  const failed = (e) => { message.textContent = e.message; message.className = "form-message error"; };

  const sourceForm = h("form", {id: "submit-source", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = {type: "classify", source: source.value.trim()};
    if (model.value.trim()) body.model = model.value.trim();
    if (faces.value) body.faces = faces.value === "true";
    body.priority = priority.value;
    try { submitted(await postJSON("/v1/jobs", body)); } catch (e) { failed(e); }
  }}, h("label", {for: "source"}, "Source"), source,
     h("button", {type: "submit", id: "submit-source-button"}, "Score"));

  const uploadForm = h("form", {id: "submit-upload", onsubmit: async (ev) => {
    ev.preventDefault();
    const form = new FormData();
    form.append("type", "classify");
    if (model.value.trim()) form.append("model", model.value.trim());
    form.append("priority", priority.value);
    if (faces.value) form.append("faces", faces.value);
    for (const f of files.files) form.append("files", f, f.name);
    for (const f of folder.files) { // drop the chosen folder's own name: sub-folders are groups
      form.append("files", f, f.webkitRelativePath.split("/").slice(1).join("/") || f.name);
    }
    if (!files.files.length && !folder.files.length) return failed(new Error("choose files or a folder"));
    message.textContent = "Uploading…";
    message.className = "form-message";
    try { submitted(await (await api("/v1/jobs", {method: "POST", body: form})).json()); }
    catch (e) { failed(e); }
  }}, h("label", {for: "files"}, "Images or a .zip"), files,
     h("label", {for: "folder"}, "or a folder"), folder,
     h("button", {type: "submit"}, "Upload and score"));

  // A manifest: a CSV / JSON Lines file the server reads (path or s3://), or one uploaded
  // (its images then named by absolute path, s3:// or URL); group_by: the column to group by.
  const manifest = h("input", {id: "manifest", size: 40,
                               placeholder: "manifest.csv on the server, or s3://bucket/key"});
  const manifestFile = h("input", {id: "manifest-file", type: "file", accept: ".csv,.jsonl,.json"});
  const groupBy = h("input", {id: "group-by", size: 12, placeholder: "folder"});
  const manifestForm = h("form", {id: "submit-manifest", onsubmit: async (ev) => {
    ev.preventDefault();
    const common = {type: "classify", priority: priority.value};
    if (model.value.trim()) common.model = model.value.trim();
    if (groupBy.value.trim()) common.group_by = groupBy.value.trim();
    if (faces.value) common.faces = faces.value === "true";
    try {
      if (manifestFile.files.length) {
        const form = new FormData();
        for (const [k, v] of Object.entries(common)) form.append(k, String(v));
        form.append("manifest", manifestFile.files[0], manifestFile.files[0].name);
        submitted(await (await api("/v1/jobs", {method: "POST", body: form})).json());
      } else if (manifest.value.trim()) {
        submitted(await postJSON("/v1/jobs", {...common, manifest: manifest.value.trim()}));
      } else {
        failed(new Error("give a manifest path or choose a manifest file"));
      }
    } catch (e) { failed(e); }
  }}, h("label", {for: "manifest"}, "Manifest"), manifest,
     h("label", {for: "manifest-file"}, "or upload one"), manifestFile,
     h("label", {for: "group-by"}, "group by"), groupBy,
     h("button", {type: "submit", id: "submit-manifest-button"}, "Score manifest"));

  const tbody = h("tbody");
  const list = jobFilters(tbody);
  main.append(
    h("section", {class: "card"}, h("h2", {}, "Score a folder"),
      h("div", {class: "model-row"}, h("label", {for: "model"}, "Model"), model,
        h("span", {class: "muted"}, "version or alias; empty: the server's default"),
        h("label", {for: "priority"}, "Priority"), priority,
        h("label", {for: "faces"}, "Score"), faces),
      sourceForm, uploadForm, manifestForm, message),
    trainCard(submitted),
    h("section", {class: "card"}, h("h2", {}, "Jobs"), list.form,
      h("div", {class: "table-wrap"}, h("table", {class: "jobs", id: "jobs-table"},
        h("thead", {}, h("tr", {}, ["Job", "Type", "Status", "Progress", "Tags", "Source",
                                    "Model", "Created"].map((t) => h("th", {}, t)))), tbody)),
      list.pager));
  every(2000, list.load);
}

// The job list's filters (name prefix, tag, status, created since) and its pages: each page
// is asked for by the previous one's cursor, so going back in time never re-reads the newer.
function jobFilters(tbody) {
  const name = h("input", {id: "filter-name", size: 14, placeholder: "name starts with"});
  const tag = h("input", {id: "filter-tag", size: 10, placeholder: "tag"});
  const status = h("select", {id: "filter-status"}, h("option", {value: ""}, "any status"),
                   ["queued", "running", "succeeded", "failed", "cancelled"]
                     .map((v) => h("option", {value: v}, v)));
  const since = h("input", {id: "filter-since", type: "date", "aria-label": "created since"});
  const cursors = [""]; // the cursor of each page shown so far: [0] is the newest page
  const newer = h("button", {type: "button", class: "prev", disabled: true}, "‹ Newer");
  const older = h("button", {type: "button", class: "next", disabled: true}, "Older ›");
  const load = async () => {
    const q = new URLSearchParams({limit: 50});
    for (const [k, el] of [["name", name], ["tag", tag], ["status", status], ["since", since]]) {
      if (el.value.trim()) q.set(k, el.value.trim());
    }
    if (cursors.at(-1)) q.set("cursor", cursors.at(-1));
    const page = await getJSON(`/v1/jobs?${q}`);
    tbody.replaceChildren(...(page.jobs.length ? page.jobs.map(jobRow)
      : [h("tr", {}, h("td", {colspan: 8, class: "muted"},
                       q.size > 1 ? "No jobs match." : "No jobs yet."))]));
    older.disabled = !page.next_cursor;
    older.dataset.cursor = page.next_cursor || "";
    newer.disabled = cursors.length < 2;
  };
  const reset = () => { cursors.length = 1; load().catch((e) => notice(e.message)); };
  newer.onclick = () => { cursors.pop(); load().catch((e) => notice(e.message)); };
  older.onclick = () => { cursors.push(older.dataset.cursor); load().catch((e) => notice(e.message)); };
  const form = h("form", {class: "filters", id: "job-filters",
                          onsubmit: (ev) => { ev.preventDefault(); reset(); }},
    name, tag, status, since, h("button", {type: "submit"}, "Filter"));
  status.onchange = reset;
  since.onchange = reset;
  return {form, load, pager: h("div", {class: "pager", id: "jobs-pager"}, newer, older)};
}

// A running job's rate and time left, from its record's timing ("" while unknown).
function pace(job) {
  const t = job.timing;
  if (job.status !== "running" || !t || !t.rate) return "";
  const rate = t.rate >= 0.1 ? `${t.rate.toFixed(1)} ${t.unit}/s` : `${(t.rate * 60).toFixed(2)} ${t.unit}/min`;
  return t.eta_s === null || t.eta_s === undefined ? rate : `${rate} · ${duration(t.eta_s)} left`;
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
}

// Chart drawings as wide as the page's cards allow (their text keeps its size).
const chartWidth = () => Math.max(300, Math.min(1300, document.getElementById("view").clientWidth - 64));

// A training job: a labelled folder (one sub-folder per class), a few params, a promote policy.
function trainCard(submitted) {
  const message = h("p", {class: "form-message", id: "train-message"});
  const dataset = h("input", {id: "dataset", size: 48, required: true,
                              placeholder: "s3://bucket/labelled or a folder: a sub-folder per class"});
  const epochs = h("input", {id: "epochs", type: "number", min: 1, max: 1000, placeholder: "default"});
  const imageSize = h("input", {id: "image-size", type: "number", min: 63, max: 512,
                                placeholder: "default"});
  const base = h("input", {id: "base", size: 14, placeholder: "none"});
  const promote = h("select", {id: "promote"},
    ["never", "if_better", "always", "force"].map((p) => h("option", {value: p}, p)));
  const form = h("form", {id: "submit-train", onsubmit: async (ev) => {
    ev.preventDefault();
    const params = {};
    if (epochs.value) params.epochs = Number(epochs.value);
    if (imageSize.value) params.image_size = Number(imageSize.value);
    if (base.value.trim()) params.base = base.value.trim();
    const body = {type: "train", dataset: dataset.value.trim(), params, promote: promote.value};
    try { submitted(await postJSON("/v1/jobs", body)); }
    catch (e) { message.textContent = e.message; message.className = "form-message error"; }
  }}, h("label", {for: "dataset"}, "Dataset"), dataset,
     h("label", {for: "epochs"}, "Epochs"), epochs,
     h("label", {for: "image-size"}, "Image size"), imageSize,
     h("label", {for: "base"}, "Fine-tune from"), base,
     h("label", {for: "promote"}, "Promote"), promote,
     h("button", {type: "submit", id: "submit-train-button"}, "Train"));
  return h("section", {class: "card"}, h("h2", {}, "Train a model"), form,
    h("p", {class: "muted"}, "if_better promotes only if its validation accuracy beats the ",
      "production version's on the same images; always and if_better promote only a version ",
      "that beats always guessing the commonest class; force promotes it anyway. Promoting ",
      "needs an admin key when keys are configured."), message);
}

function jobRow(job) {
  const p = job.progress || {};
  return h("tr", {"data-job": job.id},
    h("td", {}, job.name ? h("a", {href: `#/jobs/${job.id}`, class: "job-name"}, job.name) : null,
      h("a", {href: `#/jobs/${job.id}`, class: `mono${job.name ? " small muted" : ""}`}, job.id)),
    h("td", {}, job.type === "train" ? "training" : "scoring"),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, progressBar(p.done || 0, p.total || 0, job.type === "train" ? 0 : p.failed || 0),
      pace(job) ? h("span", {class: "pace small muted"}, pace(job)) : null),
    h("td", {}, (job.tags || []).map((t) => h("span", {class: "badge tag"}, t))),
    h("td", {class: "mono small source"}, job.source || job.dataset || ""),
    h("td", {class: "mono"}, job.model_version || job.model || ""),
    h("td", {}, when(job.created_at)));
}

// ---- one job --------------------------------------------------------------------------------

async function jobView(main, id, query = "") {
  const header = h("section", {class: "card", id: "job-header"});
  const body = h("div", {id: "job-body"});
  main.append(header, body);
  let shown = null, finishedPolls = 0; // what is on screen; polls since the job finished
  every(1000, async () => {
    const job = await getJSON(`/v1/jobs/${id}`);
    renderJobHeader(header, job);
    if (job.type === "train") {
      const seen = `${job.status}:${(job.history || []).length}`;
      if (seen !== shown) { // redraw only on a new epoch, so open details stay open
        shown = seen;
        renderTraining(body, job.history || [], job.metrics, job);
      }
    } else if (job.results && shown !== "results") {
      shown = "results";
      await renderScoring(body, job, new URLSearchParams(query));
    }
    // A cancelled scoring job gets its partial results a moment later: wait a little for them.
    const settled = job.type === "train" || job.results || job.status !== "cancelled";
    if (FINISHED.includes(job.status) && (settled || ++finishedPolls > 15)) {
      for (const t of timers) (t.stop ? t.stop() : clearTimeout(t));
    }
  });
}

function renderJobHeader(el, job) {
  const p = job.progress || {};
  const training = job.type === "train";
  const rows = [
    ...(job.name ? [["Name", h("span", {id: "job-name"}, job.name)]] : []),
    ...(job.tags?.length ? [["Tags", job.tags.map((t) => h("span", {class: "badge tag"}, t))]] : []),
    ["Status", statusBadge(job.status)],
    ["Progress", progressBar(p.done || 0, p.total || 0, training ? 0 : p.failed || 0)],
    ...(pace(job) ? [["Pace", h("span", {id: "job-pace"}, pace(job))]] : []),
    [training ? "Dataset" : "Source", h("span", {class: "mono"}, job.dataset || job.source || "")],
    ["Model", job.model_version ? h("a", {href: `#/models/${job.model_version}`, class: "mono"},
                                    job.model_version) : "—"],
    ["Device", [job.device, job.precision, job.decoder].filter(Boolean).join(" · ") || "—"],
    ["Created", when(job.created_at)], ["Finished", when(job.finished_at)],
  ];
  if (job.error) rows.push(["Error", h("span", {class: "error"}, job.error)]);
  if (job.priority) rows.push(["Priority", job.priority]);
  const q = job.queue; // while shards wait: what starts before this job's next one, or why held
  if (q && (q.shards_waiting || q.held)) {
    rows.push(["Queue", h("span", {id: "job-queue"}, q.held ||
      `${q.shards_waiting} shards waiting; ${q.shards_ahead} shards of ${q.jobs_ahead} jobs ahead`)]);
  }
  if (job.retry_of) rows.push(["Retry of", h("a", {href: `#/jobs/${job.retry_of}`}, job.retry_of)]);
  if (job.training_plan && job.training_plan.note) rows.push(["Plan", job.training_plan.note]);
  if (job.chance) {
    const c = job.chance;
    rows.push(["Chance", `${c.correct} of ${c.images} validation images right ` +
      `${c.beats_chance ? "beats" : "does not beat"} always guessing the commonest class ` +
      `(${Math.round(c.baseline * 100)} %), p = ${c.p_value}`]);
  }
  if (job.promotion) {
    const pr = job.promotion;
    rows.push(["Promotion", `${pr.policy}: ${pr.promoted ? `promoted to ${pr.alias}` : "not promoted"}`
                            + (pr.reason ? ` (${pr.reason})` : "")]);
  }
  const actions = h("div", {class: "actions"});
  if (!FINISHED.includes(job.status)) {
    actions.append(h("button", {onclick: async () => {
      try { await postJSON(`/v1/jobs/${job.id}/cancel`, {}); } catch (e) { notice(e.message); }
    }}, "Cancel"));
  }
  if (job.results) {
    actions.append(h("button", {onclick: () => download(`/v1/jobs/${job.id}/results?format=csv`,
                                                        `${job.id}.csv`).catch((e) => notice(e.message))},
                     "Download CSV"));
    actions.append(h("button", {id: "download-summary", onclick: () => download(
      `/v1/jobs/${job.id}/summary.csv`, `${job.id}-summary.csv`).catch((e) => notice(e.message))},
                     "Download summary.csv"));
  }
  if (FINISHED.includes(job.status)) {
    actions.append(h("button", {id: "delete-job", onclick: async () => {
      if (!confirm(`Delete job ${job.id}: its results, thumbnails, uploads and record?`)) return;
      try { await api(`/v1/jobs/${job.id}`, {method: "DELETE"}); location.hash = "#/"; }
      catch (e) { notice(e.message); }
    }}, "Delete"));
  }
  el.replaceChildren(
    h("h2", {}, training ? "Training job " : "Scoring job ", h("span", {class: "mono"}, job.id)),
    h("dl", {class: "meta"}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])), actions);
}

// ---- scoring: share chart, intervals and comparisons, gallery, errors ----------------------

const interval = (ci) => (ci ? `, 95% CI ${pct(ci[0])}–${pct(ci[1])}` : "");
const pValue = (p) => (p < 0.0001 ? "<0.0001" : p.toPrecision(2));

// A comparison not yet significant: the images per group that would detect its difference
// with 80 % power, or why none would; blank for a significant one (or an older summary).
const needed = (c) => (!c.sample_size ? ""
  : c.sample_size.per_group === null ? c.sample_size.reason
  : c.sample_size.per_group.toLocaleString("en"));

// Each group's share with its Wilson 95 % interval, then every compared pair: Fisher's exact
// test, Holm-adjusted per label; the significant rows are marked, the others say how many
// images per group would settle them.
function comparisonsCard(summary, groups, classes) {
  const rows = groups.map(([g, t]) => ({name: groupName(g), cells: t.labels}));
  const comparisons = summary.comparisons || [];
  const left = summary.comparisons_left_out || [];
  const significant = comparisons.filter((c) => c.significant).length;
  const unit = summary.overall.faces !== undefined ? "faces" : "images";
  const open = comparisons.find((c) => c.sample_size);
  const needHeader = `${unit === "faces" ? "Faces" : "Images"} per group to detect`;
  const table = h("table", {class: "comparisons", id: "comparisons"},
    h("thead", {}, h("tr", {}, ["Label", "Group", "vs group", "Share", "vs share", "Difference",
                                "p", "p (Holm)", "Significant", needHeader]
      .map((t) => h("th", {}, t)))),
    h("tbody", {}, comparisons.map((c) => h("tr", {
      class: c.significant ? "significant" : null, "data-label": c.label, "data-a": c.a,
      "data-b": c.b, "data-significant": String(c.significant),
      "data-needed": c.sample_size ? String(c.sample_size.per_group) : ""},
      h("td", {}, c.label), h("td", {}, groupName(c.a)), h("td", {}, groupName(c.b)),
      h("td", {}, pct(c.share_a)), h("td", {}, pct(c.share_b)),
      h("td", {}, `${c.difference >= 0 ? "+" : "−"}${(Math.abs(c.difference) * 100).toFixed(1)} pts`),
      h("td", {}, pValue(c.p_value)), h("td", {}, pValue(c.p_adjusted)),
      h("td", {}, c.significant ? "✱ yes" : "no"), h("td", {class: "needed"}, needed(c))))));
  return h("section", {class: "card", id: "statistics"},
    h("h2", {}, "Shares with 95% intervals, and differences between groups"),
    rows.length ? chartkit.chartBox(charts.intervalChart(rows, classes, {width: chartWidth()}),
                                    "shares-intervals") : null,
    comparisons.length
      ? [h("p", {class: "muted", id: "comparisons-note"},
           `${significant} of ${comparisons.length} comparisons significant (Fisher's exact ` +
           "test, Holm-adjusted p < 0.05 across the pairs of each label)."),
         table,
         open ? h("p", {class: "muted", id: "needed-note"},
                  `For a difference not yet significant: how many ${unit} per group would find ` +
                  "it significant 80% of the time if it is real (Fisher's test at alpha " +
                  `${Number(open.sample_size.alpha.toPrecision(3))}, Holm's first step; ` +
                  "Fleiss' continuity-corrected sample size for two proportions).") : null]
      : h("p", {class: "muted", id: "comparisons-note"}, summary.comparisons
        ? "No comparisons: fewer than two groups with scored images."
        : "This job's summary predates the statistics."),
    left.length ? h("p", {class: "muted", id: "left-out"},
                    `Not compared: ${left.map(groupName).join(", ")} ` +
                    "(beyond the largest groups, or nothing scored).") : null);
}

async function renderScoring(el, job, query) {
  const summary = job.summary || {overall: {images: 0, failed: 0, labels: {}}, groups: {}};
  const classes = summary.classes || job.classes || [];
  const groups = Object.entries(summary.groups || {});
  const withFaces = summary.overall.faces !== undefined; // shares are then over faces
  const shareRows = groups.map(([g, t]) => ({
    name: groupName(g), images: t.images,
    shares: Object.fromEntries(classes.map((c) => [c, t.labels[c]?.share || 0]))}));
  const table = h("table", {class: "summary"},
    h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", {}, "Images"),
      withFaces ? [h("th", {}, "Faces"), h("th", {}, "No face")] : null,
      classes.map((c) => h("th", {}, c)), h("th", {}, "Failed"))),
    // A job with many groups carries its largest ones; the rest come added up as other_groups.
    h("tbody", {}, [...groups.map(([g, t]) => [groupName(g), t, ""]),
                    ...(summary.other_groups
                      ? [[`${summary.other_groups.groups} other groups`, summary.other_groups, ""]]
                      : []),
                    ["All", summary.overall, "total"]].map(([name, t, cls]) => h("tr",
      {class: cls},
      h("td", {}, name),
      h("td", {}, t.images),
      withFaces ? [h("td", {}, t.faces), h("td", {}, t.no_face)] : null,
      classes.map((c) => h("td", {}, `${t.labels[c]?.count ?? 0} (${pct(t.labels[c]?.share || 0)}`
                                     + `${interval(t.labels[c]?.ci95)})`)),
      h("td", {}, t.failed)))));

  const limit = Number(query.get("limit"));
  const state = {label: query.get("label") || "", group: query.get("group"),
                 offset: Math.max(0, Number(query.get("offset")) || 0),
                 limit: PAGE_SIZES.includes(limit) ? limit : PAGE_SIZE};
  const labelSel = h("select", {id: "filter-label"}, h("option", {value: ""}, "All labels"),
    classes.map((c) => h("option", {value: c}, c)),
    summary.overall.no_face ? h("option", {value: NO_FACE}, "No face") : null,
    summary.overall.failed ? h("option", {value: ERRORS}, "Errors") : null);
  const groupSel = h("select", {id: "filter-group"}, h("option", {value: "*"}, "All groups"),
    groups.map(([g]) => h("option", {value: g}, groupName(g))));
  const sizeSel = h("select", {id: "page-size"}, PAGE_SIZES.map((n) =>
    h("option", {value: n, selected: n === state.limit}, `${n} per page`)));
  labelSel.value = state.label;
  groupSel.value = state.group ?? "*";
  const grid = h("div", {class: "gallery", id: "gallery"});
  const pager = h("div", {class: "pager", id: "pager"});
  const load = () => {
    keepInUrl(job.id, state);
    return loadGallery(job, state, grid, pager).catch((e) => notice(e.message));
  };
  labelSel.onchange = () => { state.label = labelSel.value; state.offset = 0; load(); };
  groupSel.onchange = () => { state.group = groupSel.value === "*" ? null : groupSel.value; state.offset = 0; load(); };
  sizeSel.onchange = () => { state.limit = Number(sizeSel.value); state.offset = 0; load(); };
  pager.addEventListener("click", (ev) => {
    const to = ev.target.dataset.offset;
    if (to !== undefined) { state.offset = Number(to); load(); }
  });

  const errors = h("section", {class: "card", id: "errors"});
  el.replaceChildren(
    h("section", {class: "card"}, h("h2", {}, "Label shares per group (ad variant)"),
      job.partial ? h("p", {class: "muted"}, "Partial: the job was cancelled; these are the images scored before.") : null,
      withFaces ? h("p", {class: "muted", id: "faces-note"}, "Each face found was scored: shares are over faces; images without a face are counted apart.") : null,
      shareRows.length ? chartkit.chartBox(charts.shareBars(shareRows, classes, {width: chartWidth()}),
                                           `${job.id}-shares`)
        : h("p", {class: "muted"}, "No images."),
      table),
    comparisonsCard(summary, groups, classes),
    h("section", {class: "card"}, h("h2", {}, "Gallery"),
      h("div", {class: "filters"}, labelSel, groupSel, sizeSel), pager, grid),
    errors);
  await load();
  if (summary.overall.failed) await loadErrors(job, errors, summary.overall.failed);
  else errors.remove();
}

// The gallery's filters and page live in the URL, so a view can be reloaded, shared or
// bookmarked; replaceState changes it without a hashchange (no re-render, no history entry).
function keepInUrl(id, state) {
  const q = new URLSearchParams();
  if (state.label) q.set("label", state.label);
  if (state.group !== null) q.set("group", state.group);
  if (state.offset) q.set("offset", state.offset);
  if (state.limit !== PAGE_SIZE) q.set("limit", state.limit);
  const hash = `#/jobs/${id}${q.size ? `?${q}` : ""}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

async function loadGallery(job, state, grid, pager) {
  const q = new URLSearchParams({offset: state.offset, limit: state.limit, label: state.label});
  if (state.group !== null) q.set("group", state.group);
  const page = await getJSON(`/ui/api/jobs/${job.id}/gallery?${q}`);
  const cards = await Promise.all(page.rows.map(async (row) => h("figure", {
    class: `card-image${row.error ? " failed" : ""}`, "data-index": row.index,
    "data-label": row.label || "", "data-group": row.group},
    // No thumb: a failed image (✕), or a URL-list job's image outside its kept sample (…).
    row.thumb ? await thumbnailImage(row.thumb, row.image)
      : h("div", {class: "no-thumb", title: row.error ? "not scored" : "no preview kept"},
          row.error ? "✕" : "…"),
    h("figcaption", {},
      h("span", {class: "name", title: row.image}, row.image),
      row.error ? h("span", {class: "reason"}, row.error)
        : row.face === null ? h("span", {class: "no-face"}, "no face")
        : h("span", {class: `label label-${classIndex(job, row.label)}`},
            `${row.face === undefined ? "" : `face ${row.face + 1} · `}${row.label} ${pct(row.confidence)}`)))));
  grid.replaceChildren(...(cards.length ? cards : [h("p", {class: "muted"}, "No images match.")]));
  const end = page.offset + page.rows.length;
  pager.replaceChildren(
    h("button", {disabled: page.offset === 0, "data-offset": Math.max(0, page.offset - page.limit),
                 class: "prev"}, "‹ Previous"),
    h("span", {class: "range", id: "gallery-range", "data-label": state.label,
               "data-group": state.group ?? "*", "data-total": page.total, "data-shown": page.rows.length},
      page.total ? `${page.offset + 1}–${end} of ${page.total}` : "0 of 0"),
    h("button", {disabled: page.next_offset === null, "data-offset": page.next_offset ?? "",
                 class: "next"}, "Next ›"));
}

function classIndex(job, label) {
  return Math.max(0, (job.summary?.classes || job.classes || []).indexOf(label)) % 8;
}

async function loadErrors(job, el, failed) {
  const page = await getJSON(`/ui/api/jobs/${job.id}/gallery?label=${encodeURIComponent(ERRORS)}&limit=100`);
  el.replaceChildren(...[h("h2", {}, `Errors (${failed})`),
    h("table", {class: "errors"}, h("thead", {}, h("tr", {}, h("th", {}, "Image"), h("th", {}, "Reason"))),
      h("tbody", {}, page.rows.map((r) => h("tr", {}, h("td", {class: "mono"}, r.image),
                                                 h("td", {}, r.error))))),
    failed > page.rows.length ? h("p", {class: "muted"},
      `The first ${page.rows.length}; filter the gallery by "Errors" or download the CSV for all.`) : null]
    .filter(Boolean));
}

// ---- training: curves, confusion matrix, per-class metrics ----------------------------------

function renderTraining(el, history, metrics, job) {
  const series = (key, name) => ({name, points: history.filter((r) => r[key] !== undefined && r[key] !== null)
                                                   .map((r) => [r.epoch, r[key]])});
  const parts = [];
  if (history.length) {
    parts.push(h("section", {class: "card charts", id: "curves"}, h("h2", {}, "Training curves"),
      h("div", {class: "chart-row"},
        chartkit.chartBox(charts.lineChart(
          [series("train_loss", "train loss"), series("val_loss", "validation loss")],
          {id: "loss", title: "Loss per epoch", width: chartWidth()}), "loss"),
        chartkit.chartBox(charts.lineChart([series("train_accuracy", "train accuracy"),
                                            series("val_accuracy", "validation accuracy")],
          {id: "accuracy", title: "Accuracy per epoch", yMin: 0, yMax: 1, width: chartWidth()}),
          "accuracy")),
      epochTable(history)));
  } else {
    parts.push(h("section", {class: "card"}, h("p", {class: "muted"}, "No epochs recorded (yet).")));
  }
  const classes = job?.classes || metrics?.classes || [];
  if (metrics?.confusion_matrix) parts.push(metricsCard(metrics, classes));
  if (job?.dataset_info) parts.push(datasetCard(job.dataset_info));
  if (job?.params) {
    parts.push(h("section", {class: "card"}, h("h2", {}, "Parameters"),
      h("dl", {class: "meta"}, Object.entries(job.params).map(([k, v]) =>
        [h("dt", {}, k), h("dd", {class: "mono"}, JSON.stringify(v))]))));
  }
  el.replaceChildren(...parts);
}

function epochTable(history) {
  const cols = [["epoch", "Epoch"], ["train_loss", "Train loss"], ["train_accuracy", "Train acc."],
                ["val_loss", "Val. loss"], ["val_accuracy", "Val. acc."], ["lr", "LR"],
                ["seconds", "Seconds"]];
  const show = (v) => (typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v ?? "");
  return h("details", {}, h("summary", {}, "Per-epoch figures"),
    h("table", {class: "epochs"}, h("thead", {}, h("tr", {}, cols.map(([, t]) => h("th", {}, t)))),
      h("tbody", {}, history.map((r) => h("tr", {}, cols.map(([k]) => h("td", {}, show(r[k]))))))));
}

function metricsCard(metrics, classes) {
  const cm = metrics.confusion_matrix;
  const max = Math.max(1, ...cm.flat());
  const names = classes.length === cm.length ? classes : cm.map((_, i) => `class ${i}`);
  return h("section", {class: "card", id: "metrics"},
    h("h2", {}, "Validation metrics"),
    h("p", {}, `Accuracy ${pct(metrics.accuracy)} · loss ${Number(metrics.loss).toFixed(4)}`
      + (metrics.best_epoch ? ` · best epoch ${metrics.best_epoch} of ${metrics.epochs_run}` : "")),
    h("div", {class: "metric-row"},
      h("table", {class: "confusion", id: "confusion"},
        h("caption", {}, "Confusion matrix (rows: truth, columns: prediction)"),
        h("thead", {}, h("tr", {}, h("th", {}), names.map((c) => h("th", {}, c)))),
        h("tbody", {}, cm.map((row, i) => h("tr", {}, h("th", {}, names[i]), row.map((n, j) =>
          h("td", {class: i === j ? "diag" : "", "data-count": n,
                   style: `--heat:${(n / max).toFixed(3)}`}, n)))))),
      h("table", {class: "per-class", id: "per-class"},
        h("thead", {}, h("tr", {}, ["Class", "Precision", "Recall", "F1", "Support"].map((t) => h("th", {}, t)))),
        h("tbody", {}, Object.entries(metrics.per_class || {}).map(([c, m]) => h("tr", {},
          h("td", {}, c), h("td", {}, pct(m.precision)), h("td", {}, pct(m.recall)),
          h("td", {}, pct(m.f1)), h("td", {}, m.support)))))));
}

function datasetCard(info) {
  const counts = Object.entries(info.counts || {});
  return h("section", {class: "card"}, h("h2", {}, "Dataset"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Class"), h("th", {}, "Train"), h("th", {}, "Validation"))),
      h("tbody", {}, counts.map(([c, n]) => h("tr", {}, h("td", {}, c), h("td", {}, n.train), h("td", {}, n.val))))),
    info.skipped ? h("p", {class: "muted"}, `${info.skipped} unreadable image(s) skipped: `
      + (info.skipped_examples || []).map((s) => s.image || JSON.stringify(s)).join(", ")) : null);
}

// ---- models ---------------------------------------------------------------------------------

async function modelsView(main) {
  const {versions, aliases} = await getJSON("/v1/models");
  const aliasOf = {};
  for (const [name, a] of Object.entries(aliases)) (aliasOf[a.version] ||= []).push(name);
  const aliasCards = Object.entries(aliases).map(([name, a]) => h("div", {class: "alias", "data-alias": name},
    h("h3", {}, name, " → ", h("a", {href: `#/models/${a.version}`, class: "mono"}, a.version)),
    h("table", {class: "history"}, h("thead", {}, h("tr", {}, ["When", "From", "To", "By"].map((t) => h("th", {}, t)))),
      h("tbody", {}, [...a.history].reverse().map((m) => h("tr", {}, h("td", {}, when(m.at)),
        h("td", {class: "mono"}, m.from || "—"), h("td", {class: "mono"}, m.to),
        h("td", {}, (m.by || "") + (m.forced ? " (forced: does not beat chance)" : ""))))))));
  main.append(
    h("section", {class: "card"}, h("h2", {}, "Aliases"),
      aliasCards.length ? aliasCards : h("p", {class: "muted"}, "No alias yet: promote a version below.")),
    h("section", {class: "card"}, h("h2", {}, "Versions"),
      h("table", {class: "models", id: "models-table"},
        h("thead", {}, h("tr", {}, ["Version", "Created", "Classes", "Accuracy", "Beats chance",
                                   "Val. loss", "Epochs", "Trained by", "Aliases", "Promote"]
          .map((t) => h("th", {}, t)))),
        h("tbody", {}, versions.map((v) => versionRow(v, aliasOf[v.version] || []))))));
}

function versionRow(v, aliases) {
  const m = v.metrics || {};
  const alias = h("input", {value: "production", size: 10, "aria-label": "alias"});
  const chance = v.chance;  // absent: imported or registered without validation images
  const weak = chance && !chance.beats_chance;
  const force = h("input", {type: "checkbox", class: "force", "aria-label": "force"});
  const promote = h("button", {class: "promote", onclick: async () => {
    try {
      await postJSON(`/v1/models/${v.version}/promote`, {alias: alias.value.trim() || "production",
                                                          ...(force.checked ? {force: true} : {})});
      route();
    } catch (e) { notice(e.message); }
  }}, "Promote");
  return h("tr", {"data-version": v.version},
    h("td", {}, h("a", {href: `#/models/${v.version}`, class: "mono"}, v.version)),
    h("td", {}, when(v.created_at)), h("td", {}, (v.classes || []).join(", ")),
    h("td", {}, m.accuracy !== undefined ? pct(m.accuracy) : "—"),
    h("td", {class: weak ? "error" : ""}, !chance ? "—" : chance.beats_chance
      ? `yes (p = ${chance.p_value})` : `no: ${chance.correct} of ${chance.images} right, ` +
        `majority class ${pct(chance.baseline)}, p = ${chance.p_value}`),
    h("td", {}, m.loss !== undefined ? Number(m.loss).toFixed(4) : "—"),
    h("td", {}, m.epochs_run ? `${m.best_epoch} / ${m.epochs_run}` : "—"),
    h("td", {}, v.job_id ? h("a", {href: `#/jobs/${v.job_id}`, class: "mono"}, v.job_id) : (v.source || "imported")),
    h("td", {}, aliases.map((a) => h("span", {class: "badge alias-badge"}, a))),
    h("td", {class: "promote-cell"}, alias, promote,
      weak ? h("label", {class: "muted"}, force, " force") : ""));
}

async function modelView(main, version) {
  const v = await getJSON(`/v1/models/${version}`);
  const body = h("div");
  main.append(h("section", {class: "card"}, h("h2", {}, "Model ", h("span", {class: "mono"}, v.version)),
    h("dl", {class: "meta"},
      [["Classes", (v.classes || []).join(", ")], ["Aliases", (v.aliases || []).join(", ") || "—"],
       ["Created", when(v.created_at)], ["Parent", v.parent || "—"],
       ["Trained by", v.job_id ? h("a", {href: `#/jobs/${v.job_id}`, class: "mono"}, v.job_id) : "—"],
       ["Input", `${v.preprocess?.input_size} px`], ["Weights SHA-256", h("span", {class: "mono small"}, v.weights_sha256)],
      ].map(([k, val]) => [h("dt", {}, k), h("dd", {}, val)]))), body);
  let history = [];
  try { history = (await getJSON(`/ui/api/models/${version}/history`)).history; }
  catch (e) { if (e.status !== 404) throw e; }
  renderTraining(body, history, v.metrics, {classes: v.classes, params: v.params,
    dataset_info: v.dataset && {counts: v.dataset.counts, skipped: v.dataset.skipped}});
}

// ---- start ----------------------------------------------------------------------------------

document.getElementById("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = document.getElementById("api-key").value.trim();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  document.getElementById("api-key").value = "";
  notice(key ? "Key saved in this browser." : "", "info");
  route();
});
document.getElementById("forget-key").addEventListener("click", () => {
  localStorage.removeItem(KEY_STORAGE);
  notice("Key forgotten.", "info");
});
window.addEventListener("hashchange", route);
route();
