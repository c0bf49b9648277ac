// A scoring job's gallery: its images (and videos' sampled frames, with their time t) as cards
// with thumbnails, filtered by label (a class, or the API's errors / no-face filters) and
// group, a page at a time; and its errors list.
import {api, apiKey, getJSON} from "./api.js";
import {h, notice} from "./dom.js";
import {enums} from "./enums.js";
import {groupName, pct} from "./format.js";
import {keepObjectUrl, newestLoads} from "./view.js";

const PAGE_SIZES = [24, 48, 96, 192]; // cards per page offered (the API's default is added)
const ERRORS_SHOWN = 100;

const pageSizes = () => [...new Set([...PAGE_SIZES, enums.pageSize])].sort((a, b) => a - b);

// The gallery's filters and page start from the URL's query (a reload or a shared link shows
// the same cards); {card, load}: load draws the current page.
export function galleryCard({job, summary, classes, groups}, query) {
  const limit = Number(query.get("limit"));
  const state = {label: query.get("label") || "", group: query.get("group"),
                 offset: Math.max(0, Number(query.get("offset")) || 0),
                 limit: pageSizes().includes(limit) ? limit : enums.pageSize};
  const labelSel = h("select", {id: "filter-label"}, h("option", {value: ""}, "All labels"),
    classes.map((c) => h("option", {value: c}, c)),
    summary.overall.no_face ? h("option", {value: enums.NO_FACE}, "No face") : null,
    summary.overall.failed ? h("option", {value: enums.ERRORS}, "Errors") : null);
  const groupSel = h("select", {id: "filter-group"}, h("option", {value: "*"}, "All groups"),
    groups.map(([g]) => h("option", {value: g}, groupName(g))));
  const sizeSel = h("select", {id: "page-size"}, pageSizes().map((n) =>
    h("option", {value: n, selected: n === state.limit}, `${n} per page`)));
  labelSel.value = state.label;
  groupSel.value = state.group ?? "*";
  const grid = h("div", {class: "gallery", id: "gallery"});
  const pager = h("div", {class: "pager", id: "pager"});
  const begin = newestLoads();
  const load = () => {
    keepInUrl(job.id, state);
    return loadPage(job, {...state}, grid, pager, begin()).catch((e) => notice(e.message));
  };
  const refilter = (change) => () => { change(); state.offset = 0; load(); };
  labelSel.onchange = refilter(() => { state.label = labelSel.value; });
  groupSel.onchange = refilter(() => { state.group = groupSel.value === "*" ? null : groupSel.value; });
  sizeSel.onchange = refilter(() => { state.limit = Number(sizeSel.value); });
  pager.addEventListener("click", (ev) => {
    const to = ev.target.dataset.offset;
    if (to !== undefined) { state.offset = Number(to); load(); }
  });
  const card = h("section", {class: "card"}, h("h2", {}, "Gallery"),
    h("div", {class: "filters"}, labelSel, groupSel, sizeSel), pager, grid);
  return {card, load};
}

// The filters and page live in the URL; replaceState changes it without a hashchange (no
// re-render, no history entry).
function keepInUrl(id, state) {
  const q = new URLSearchParams();
  if (state.label) q.set("label", state.label);
  if (state.group !== null) q.set("group", state.group);
  if (state.offset) q.set("offset", state.offset);
  if (state.limit !== enums.pageSize) q.set("limit", state.limit);
  const hash = `#/jobs/${id}${q.size ? `?${q}` : ""}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

// state: the filters as they were when this load began; newest(): no later load has begun.
async function loadPage(job, state, grid, pager, newest) {
  const q = new URLSearchParams({offset: state.offset, limit: state.limit, label: state.label});
  if (state.group !== null) q.set("group", state.group);
  const page = await getJSON(`/ui/api/jobs/${job.id}/gallery?${q}`);
  const cards = await Promise.all(page.rows.map((row) => imageCard(job, row)));
  if (!newest()) return; // a later filter's answer draws (or has drawn) instead
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

async function imageCard(job, row) {
  return h("figure", {class: `card-image${row.error ? " failed" : ""}`, "data-index": row.index,
                      "data-label": row.label || "", "data-group": row.group,
                      "data-t": row.t ?? null, "data-frame": row.frame ?? null},
    // No thumb: a failed image (✕), or a URL-list job's image outside its kept sample (…).
    row.thumb ? await thumbnailImage(row.thumb, row.image)
      : h("div", {class: "no-thumb", title: row.error ? "not scored" : "no preview kept"},
          row.error ? "✕" : "…"),
    h("figcaption", {},
      h("span", {class: "name", title: row.image}, row.image),
      row.t === undefined ? null : h("span", {class: "at", "data-t": row.t},
        `t = ${row.t.toFixed(1)} s${row.frame === undefined ? "" : ` · frame ${row.frame}`}`),
      row.error ? h("span", {class: "reason"}, row.error)
        : row.face === null ? h("span", {class: "no-face"}, "no face")
        : h("span", {class: `label label-${classIndex(job, row.label)}`},
            `${row.face === undefined ? "" : `face ${row.face + 1} · `}${row.label} ${pct(row.confidence)}`)));
}

async function thumbnailImage(url, alt) {
  const img = h("img", {alt, loading: "lazy", width: 128, height: 128});
  if (!apiKey.get()) {
    img.src = url; // no key: let the browser fetch and cache it
    return img;
  }
  try { // <img> can't send a header: fetch with the key, show the blob
    const objectUrl = URL.createObjectURL(await (await api(url)).blob());
    keepObjectUrl(objectUrl);
    img.src = objectUrl;
  } catch { img.classList.add("missing"); }
  return img;
}

function classIndex(job, label) {
  return Math.max(0, (job.summary?.classes || job.classes || []).indexOf(label)) % 8;
}

// The first failed images with their reasons; null for a job without failures.
export function errorsCard({job, summary}) {
  const failed = summary.overall.failed;
  if (!failed) return null;
  const card = h("section", {class: "card", id: "errors"});
  const load = async () => {
    const q = new URLSearchParams({label: enums.ERRORS, limit: ERRORS_SHOWN});
    const page = await getJSON(`/ui/api/jobs/${job.id}/gallery?${q}`);
    card.replaceChildren(h("h2", {}, `Errors (${failed})`),
      h("table", {class: "errors"}, h("thead", {}, h("tr", {}, h("th", {}, "Image"), h("th", {}, "Reason"))),
        h("tbody", {}, page.rows.map((r) => h("tr", {}, h("td", {class: "mono"}, r.image),
                                                   h("td", {}, r.error))))),
      failed > page.rows.length ? h("p", {class: "muted"},
        `The first ${page.rows.length}; filter the gallery by "Errors" or download the CSV for all.`) : null);
  };
  return {card, load};
}
