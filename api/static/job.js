// One job's page: its header (status, progress, pace, queue, actions), polled each second,
// and its body: a training job's curves and metrics, or a scoring job's results (scoring.js).
import {api, download, getJSON, postJSON} from "./api.js";
import {h, meta, notice, progressBar, statusBadge} from "./dom.js";
import {enums, isFinished} from "./enums.js";
import {pace, when} from "./format.js";
import {renderScoring} from "./scoring.js";
import {renderTraining} from "./training.js";
import {every, stopPolling} from "./view.js";

const CANCELLED_WAIT_POLLS = 15; // a cancelled job's partial results come a moment later

export async function jobView(main, id, query = "") {
  const header = h("section", {class: "card", id: "job-header"});
  const body = h("div", {id: "job-body"});
  main.append(header, body);
  let shown = null, finishedPolls = 0; // what is on screen; polls since the job finished
  every(1000, async () => {
    const job = await getJSON(`/v1/jobs/${id}`);
    renderJobHeader(header, job);
    const training = job.type === enums.TRAIN;
    if (training) {
      const seen = `${job.status}:${(job.history || []).length}`;
      if (seen !== shown) { // redraw only on a new epoch, so open details stay open
        shown = seen;
        renderTraining(body, job.history || [], job.metrics, job);
      }
    } else if (job.results && shown !== "results") {
      shown = "results";
      await renderScoring(body, job, new URLSearchParams(query));
    }
    const settled = training || job.results || job.status !== enums.STATUS.CANCELLED;
    if (isFinished(job.status) && (settled || ++finishedPolls > CANCELLED_WAIT_POLLS)) stopPolling();
  });
}

function renderJobHeader(el, job) {
  const training = job.type === enums.TRAIN;
  el.replaceChildren(
    h("h2", {}, training ? "Training job " : "Scoring job ", h("span", {class: "mono"}, job.id)),
    meta(headerRows(job, training)), actions(job));
}

function headerRows(job, training) {
  const p = job.progress || {};
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
  return rows;
}

// Cancel while it runs; its CSVs once it has results; delete once finished.
function actions(job) {
  const el = h("div", {class: "actions"});
  const finished = isFinished(job.status);
  if (!finished) {
    el.append(h("button", {onclick: async () => {
      try { await postJSON(`/v1/jobs/${job.id}/cancel`, {}); } catch (e) { notice(e.message); }
    }}, "Cancel"));
  }
  if (job.results) {
    el.append(h("button", {onclick: () => download(`/v1/jobs/${job.id}/results?format=csv`,
                                                   `${job.id}.csv`).catch((e) => notice(e.message))},
                "Download CSV"));
    el.append(h("button", {id: "download-summary", onclick: () => download(
      `/v1/jobs/${job.id}/summary.csv`, `${job.id}-summary.csv`).catch((e) => notice(e.message))},
                "Download summary.csv"));
  }
  if (finished) {
    el.append(h("button", {id: "delete-job", onclick: async () => {
      if (!confirm(`Delete job ${job.id}: its results, thumbnails, uploads and record?`)) return;
      try { await api(`/v1/jobs/${job.id}`, {method: "DELETE"}); location.hash = "#/"; }
      catch (e) { notice(e.message); }
    }}, "Delete"));
  }
  return el;
}
