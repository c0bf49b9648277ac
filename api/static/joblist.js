// The job list: its filters (name prefix, tag, status, created since) and its pages, each
// asked for by the previous one's cursor, so going back in time never re-reads the newer.
import {getJSON} from "./api.js";
import {h, notice, progressBar, statusBadge} from "./dom.js";
import {enums} from "./enums.js";
import {pace, when} from "./format.js";
import {newestLoads} from "./view.js";

export function jobList() {
  const tbody = h("tbody");
  const name = h("input", {id: "filter-name", size: 14, placeholder: "name starts with"});
  const tag = h("input", {id: "filter-tag", size: 10, placeholder: "tag"});
  const status = h("select", {id: "filter-status"}, h("option", {value: ""}, "any status"),
                   enums.statuses.map((v) => h("option", {value: v}, v)));
  const since = h("input", {id: "filter-since", type: "date", "aria-label": "created since"});
  const cursors = [""]; // the cursor of each page shown so far: [0] is the newest page
  const newer = h("button", {type: "button", class: "prev", disabled: true}, "‹ Newer");
  const older = h("button", {type: "button", class: "next", disabled: true}, "Older ›");
  const begin = newestLoads();
  const load = async () => {
    const isNewest = begin();
    const q = new URLSearchParams({limit: 50});
    for (const [k, el] of [["name", name], ["tag", tag], ["status", status], ["since", since]]) {
      if (el.value.trim()) q.set(k, el.value.trim());
    }
    if (cursors.at(-1)) q.set("cursor", cursors.at(-1));
    const page = await getJSON(`/v1/jobs?${q}`);
    if (!isNewest()) return; // a later filter's answer draws instead
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
  const card = h("section", {class: "card"}, h("h2", {}, "Jobs"), form,
    h("div", {class: "table-wrap"}, h("table", {class: "jobs", id: "jobs-table"},
      h("thead", {}, h("tr", {}, ["Job", "Type", "Status", "Progress", "Tags", "Source",
                                  "Model", "Created"].map((t) => h("th", {}, t)))), tbody)),
    h("div", {class: "pager", id: "jobs-pager"}, newer, older));
  return {card, load};
}

function jobRow(job) {
  const p = job.progress || {};
  const training = job.type === enums.TRAIN;
  return h("tr", {"data-job": job.id},
    h("td", {}, job.name ? h("a", {href: `#/jobs/${job.id}`, class: "job-name"}, job.name) : null,
      h("a", {href: `#/jobs/${job.id}`, class: `mono${job.name ? " small muted" : ""}`}, job.id)),
    h("td", {}, training ? "training" : "scoring"),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, progressBar(p.done || 0, p.total || 0, training ? 0 : p.failed || 0),
      pace(job) ? h("span", {class: "pace small muted"}, pace(job)) : null),
    h("td", {}, (job.tags || []).map((t) => h("span", {class: "badge tag"}, t))),
    h("td", {class: "mono small source"}, job.source || job.dataset || ""),
    h("td", {class: "mono"}, job.model_version || job.model || ""),
    h("td", {}, when(job.created_at)));
}
