// A training run's figures (a training job's page, a trained version's page): loss and
// accuracy curves, the per-epoch table, the confusion matrix, per-class metrics, the dataset.
import {chartBox} from "./chartkit.js";
import {lineChart} from "./charts.js";
import {h} from "./dom.js";
import {chartWidth, pct} from "./format.js";

export function renderTraining(el, history, metrics, job) {
  const parts = [history.length ? curvesCard(history)
    : h("section", {class: "card"}, h("p", {class: "muted"}, "No epochs recorded (yet)."))];
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

function curvesCard(history) {
  const series = (key, name) => ({name, points: history.filter((r) => r[key] !== undefined && r[key] !== null)
                                                   .map((r) => [r.epoch, r[key]])});
  return h("section", {class: "card charts", id: "curves"}, h("h2", {}, "Training curves"),
    h("div", {class: "chart-row"},
      chartBox(lineChart([series("train_loss", "train loss"), series("val_loss", "validation loss")],
                         {id: "loss", title: "Loss per epoch", width: chartWidth()}), "loss"),
      chartBox(lineChart([series("train_accuracy", "train accuracy"),
                          series("val_accuracy", "validation accuracy")],
        {id: "accuracy", title: "Accuracy per epoch", yMin: 0, yMax: 1, width: chartWidth()}),
        "accuracy")),
    epochTable(history));
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
