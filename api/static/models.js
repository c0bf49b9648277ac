// The models pages: every alias with its history of moves, every version with its figures
// and a promote button; one version's manifest and its training figures.
import {getJSON, postJSON} from "./api.js";
import {h, meta, notice} from "./dom.js";
import {pct, when} from "./format.js";
import {renderTraining} from "./training.js";
import {redraw} from "./view.js";

export async function modelsView(main) {
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
      redraw();
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

export async function modelView(main, version) {
  const v = await getJSON(`/v1/models/${version}`);
  const body = h("div");
  main.append(h("section", {class: "card"}, h("h2", {}, "Model ", h("span", {class: "mono"}, v.version)),
    meta([["Classes", (v.classes || []).join(", ")], ["Aliases", (v.aliases || []).join(", ") || "—"],
          ["Created", when(v.created_at)], ["Parent", v.parent || "—"],
          ["Trained by", v.job_id ? h("a", {href: `#/jobs/${v.job_id}`, class: "mono"}, v.job_id) : "—"],
          ["Input", `${v.preprocess?.input_size} px`],
          ["Weights SHA-256", h("span", {class: "mono small"}, v.weights_sha256)]])), body);
  let history = [];
  try { history = (await getJSON(`/ui/api/models/${version}/history`)).history; }
  catch (e) { if (e.status !== 404) throw e; }
  renderTraining(body, history, v.metrics, {classes: v.classes, params: v.params,
    dataset_info: v.dataset && {counts: v.dataset.counts, skipped: v.dataset.skipped}});
}
