// A video job's emotion curve: per ad variant, the share of the chosen label in each time bin of
// the ad (the mean over viewers of each viewer's share), its 95% t-interval over viewers as a
// band, the variants overlaid and each one's peak marked; a label chooser; a table beside it.
import {download, getJSON} from "./api.js";
import {chartBox} from "./chartkit.js";
import {PALETTE, fit, fmt, niceTicks, svg} from "./charts.js";
import {h, notice} from "./dom.js";
import {chartWidth, groupName, interval, pct} from "./format.js";

const MOST_LINES = PALETTE.length; // more variants than colours: the largest are drawn
const MOST_HIT_BINS = 2000; // hover columns only for curves short enough to keep the page light
const LEGEND_ITEM = 180;

// The card, for a summary with a timeline (the record keeps only its header and peaks: the
// curves come from summary.json); null for a photo job.
export function timelineCard({job, summary, classes}) {
  if (summary.timeline_bin_s === undefined) return null;
  const card = h("section", {class: "card", id: "timeline"},
    h("h2", {}, "Label share over the ad (video viewers)"),
    h("p", {class: "muted"}, "Loading the curves…"));
  getJSON(`/v1/jobs/${job.id}/summary`)
    .then((full) => drawCard(card, job, full, classes))
    .catch((e) => notice(e.message));
  return card;
}

// The variants with a curve, the most viewers first, as the chart's series.
function variants(full) {
  return Object.entries(full.groups)
    .filter(([, t]) => t.timeline && t.timeline.length)
    .sort(([a, x], [b, y]) => y.viewers - x.viewers || (a < b ? -1 : 1))
    .map(([g, t], i) => ({group: g, name: groupName(g), viewers: t.viewers, bins: t.timeline,
                          peak: t.peak, overall: t.viewer_shares,
                          color: PALETTE[i % PALETTE.length]}));
}

function drawCard(card, job, full, classes) {
  const all = variants(full), shown = all.slice(0, MOST_LINES);
  const chooser = h("select", {id: "timeline-label", "aria-label": "label drawn"},
    classes.map((c) => h("option", {value: c}, c)));
  const chart = h("div", {id: "timeline-chart"});
  const tables = h("div", {});
  const draw = () => {
    const label = chooser.value;
    chart.replaceChildren(chartBox(timelineChart(shown, label, {
      width: chartWidth(), baseline: full.baseline}), `${job.id}-timeline-${label}`));
    tables.replaceChildren(peakTable(shown, label), binTable(shown, label));
  };
  chooser.onchange = draw;
  const csv = h("button", {id: "download-timeline", onclick: () => download(
    `/v1/jobs/${job.id}/timeline.csv`, `${job.id}-timeline.csv`).catch((e) => notice(e.message))},
  "Download timeline.csv");
  card.replaceChildren(...[h("h2", {}, "Label share over the ad (video viewers)"),
    h("p", {class: "muted", id: "timeline-note"},
      `Each line is a variant: per ${fmt(full.timeline_bin_s)} s of the ad, the mean over its ` +
      "viewers of each viewer's share of faces with the label; the band is its 95% t-interval " +
      "over viewers (none where a bin has one viewer); the ringed dot marks the peak."),
    full.baseline_note ? h("p", {class: "muted", id: "baseline-note"},
      `Baseline subtracted: ${full.baseline_note.replace(/^baseline: /, "")}.`) : null,
    all.length > shown.length ? h("p", {class: "muted", id: "timeline-more"},
      `The ${shown.length} variants with the most viewers are drawn; ` +
      `${all.length - shown.length} more are in timeline.csv.`) : null,
    h("div", {class: "filters"}, h("label", {}, "Label ", chooser), csv),
    shown.length ? chart : h("p", {class: "muted"}, "No video frame with a face was scored."),
    tables].filter(Boolean));
  if (shown.length) draw();
}

// series: [{name, color, bins: [{t0, t1, viewers, share, ci95}], peak}]; label: the one drawn.
// opts: {width, baseline} (baseline: shares are changes from the resting face, maybe < 0).
export function timelineChart(series, label, opts = {}) {
  const W = opts.width || 560, perRow = Math.max(1, Math.floor((W - 60) / LEGEND_ITEM));
  const legendRows = Math.ceil(series.length / perRow);
  const m = {l: 52, r: 16, t: 26, b: 46 + legendRows * 18}, H = 280 + legendRows * 18;
  const values = series.flatMap((s) => s.bins.flatMap((b) => [b.share[label], ...(b.ci95[label] || [])]))
    .filter((v) => v !== null && v !== undefined);
  const lo = opts.baseline ? Math.min(0, ...values) : 0, hi = Math.max(0.1, ...values);
  const yt = niceTicks(lo, hi, 5), step = yt[1] - yt[0];
  while (yt.at(-1) < hi - 1e-9) yt.push(yt.at(-1) + step); // the axis covers every band
  const y0 = yt[0], y1 = yt.at(-1);
  const x1 = Math.max(...series.flatMap((s) => s.bins.map((b) => b.t1)), 1e-9);
  const X = (t) => m.l + (t / x1) * (W - m.l - m.r);
  const Y = (v) => H - m.b - ((v - y0) / (y1 - y0 || 1)) * (H - m.t - m.b);
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                           "data-chart": "timeline", "data-label": label,
                           "data-x-domain": `0,${x1}`, "data-x-range": `${m.l},${W - m.r}`,
                           "aria-label": `share of ${label} over the ad's seconds per variant, ` +
                                         "with 95% intervals over viewers and each peak marked"});
  root.append(svg("text", {x: m.l, y: 16, class: "chart-title"}, `${label}: share of faces over the ad`));
  for (const t of yt) {
    root.append(svg("line", {x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: "grid"}));
    root.append(svg("text", {x: m.l - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end"},
                    `${fmt(t * 100)}%`));
  }
  for (const t of niceTicks(0, x1, Math.min(10, Math.max(2, Math.round(x1))))) {
    if (t < 0 || t > x1 + 1e-9) continue;
    root.append(svg("text", {x: X(t), y: H - m.b + 16, class: "tick", "text-anchor": "middle"},
                    fmt(t)));
  }
  root.append(svg("text", {x: (W + m.l) / 2, y: H - m.b + 32, class: "axis-label",
                           "text-anchor": "middle"}, "seconds from the ad's start"));
  const mid = (b) => X((b.t0 + b.t1) / 2);
  for (const s of series) drawSeries(root, s, label, mid, Y);
  if (longest(series).length <= MOST_HIT_BINS) hitColumns(root, series, label, X, m, H);
  for (const s of series) drawPeak(root, s, label, X, Y, m, H);
  series.forEach((s, i) => {
    const lx = m.l + (i % perRow) * LEGEND_ITEM, ly = H - 8 - (legendRows - 1 - Math.floor(i / perRow)) * 18;
    const item = svg("g", {class: "legend-item", "data-group": s.group});
    item.append(svg("rect", {x: lx, y: ly - 9, width: 12, height: 4, fill: s.color}),
                svg("text", {x: lx + 16, y: ly - 4, class: "legend"},
                    fit(`${s.name} (${s.viewers} viewers)`, LEGEND_ITEM - 20)),
                svg("title", {}, `${s.name}: ${s.viewers} viewers`));
    root.append(item);
  });
  return root;
}

// A variant's band (its intervals, one sub-path per run of bins that have one) and its line (one
// sub-path per run of bins with viewers: a bin without any is a gap, not a zero).
function drawSeries(root, s, label, mid, Y) {
  const line = [], band = [];
  let run = [], pen = "M";
  const closeRun = () => {
    if (run.length) {
      band.push(`M${run.map(([x, , hi]) => `${x},${Y(hi).toFixed(1)}`).join(" L")}` +
                ` L${run.reverse().map(([x, lo]) => `${x},${Y(lo).toFixed(1)}`).join(" L")} Z`);
    }
    run = [];
  };
  for (const b of s.bins) {
    const share = b.share[label], ci = b.ci95[label], x = mid(b).toFixed(1);
    if (share === null || share === undefined) { pen = "M"; closeRun(); continue; }
    line.push(`${pen}${x},${Y(share).toFixed(1)}`);
    pen = "L";
    if (ci) run.push([x, ...ci]); else closeRun();
  }
  closeRun();
  const area = svg("path", {d: band.join(" "), fill: s.color, "fill-opacity": 0.16, class: "band",
                            "data-group": s.group});
  area.append(svg("title", {}, `${s.name}: 95% interval over viewers`));
  const path = svg("path", {d: line.join(" "), stroke: s.color, class: "line", "data-group": s.group});
  path.append(svg("title", {}, `${s.name}: share of ${label}`));
  root.append(area, path);
}

// The bin where the variant's share of the label is highest, as the summary names it.
function drawPeak(root, s, label, X, Y, m, H) {
  const p = s.peak && s.peak[label];
  if (!p) return;
  const x = X((p.t0 + p.t1) / 2);
  root.append(svg("line", {x1: x, x2: x, y1: m.t, y2: H - m.b, stroke: s.color, class: "peak-line",
                           "stroke-dasharray": "3 3", "data-group": s.group}));
  const dot = svg("circle", {cx: x, cy: Y(p.share), r: 5, fill: s.color, stroke: "#fff",
                             "stroke-width": 2, class: "peak", "data-group": s.group,
                             "data-t0": p.t0, "data-t1": p.t1, "data-share": p.share});
  dot.append(svg("title", {}, `${s.name}: peak of ${label} ${pct(p.share)} at ${fmt(p.t0)}–${fmt(p.t1)} s`));
  root.append(dot);
}

// The bins of the longest curve (variants may differ in length).
const longest = (series) => series.reduce((a, s) => (s.bins.length > a.length ? s.bins : a), []);

// Transparent columns over each bin whose tooltip lists every variant's share there.
function hitColumns(root, series, label, X, m, H) {
  longest(series).forEach((b, i) => {
    const rows = series.map((s) => s.bins[i]).map((c, k) => (c && c.share[label] !== null
      ? `${series[k].name} ${pct(c.share[label])}${interval(c.ci95[label])} (${c.viewers} viewers)`
      : `${series[k].name} —`));
    const col = svg("rect", {x: X(b.t0), y: m.t, width: Math.max(0.5, X(b.t1) - X(b.t0)),
                             height: H - m.b - m.t, fill: "transparent", class: "hit"});
    col.append(svg("title", {}, `${fmt(b.t0)}–${fmt(b.t1)} s: ${rows.join("; ")}`));
    root.append(col);
  });
}

// The text alternative: each variant's viewers, its peak of the label and its share overall.
function peakTable(series, label) {
  return h("table", {class: "summary", id: "timeline-peaks"},
    h("thead", {}, h("tr", {}, h("th", {}, "Variant"), h("th", {}, "Viewers"),
      h("th", {}, `Peak of ${label}`), h("th", {}, "Share at the peak"),
      h("th", {}, "Share over the ad (95% CI over viewers)"))),
    h("tbody", {}, series.map((s) => {
      const p = s.peak && s.peak[label], o = s.overall && s.overall[label];
      return h("tr", {"data-group": s.group},
        h("td", {}, s.name), h("td", {}, s.viewers),
        h("td", {}, p ? `${fmt(p.t0)}–${fmt(p.t1)} s` : "—"),
        h("td", {}, p ? pct(p.share) : "—"),
        h("td", {}, o && o.share !== null ? `${pct(o.share)}${interval(o.ci95)}` : "—"));
    })));
}

// Every bin's share per variant, folded away and built when first opened (an hour at 1 s
// bins is 3,600 rows a label).
function binTable(series, label) {
  const box = h("details", {id: "timeline-bins"},
    h("summary", {}, `The curves of ${label} as a table`));
  box.addEventListener("toggle", () => {
    if (box.open && !box.querySelector("table")) box.append(binRows(series, label));
  });
  return box;
}

function binRows(series, label) {
  return h("div", {class: "table-wrap"}, h("table", {class: "summary"},
    h("thead", {}, h("tr", {}, h("th", {}, "Seconds"), series.map((s) => h("th", {}, s.name)))),
    h("tbody", {}, longest(series).map((b, i) => h("tr", {},
      h("td", {}, `${fmt(b.t0)}–${fmt(b.t1)}`),
      series.map((s) => {
        const c = s.bins[i];
        return h("td", {}, c && c.share[label] !== null
          ? `${pct(c.share[label])}${interval(c.ci95[label])} · ${c.viewers}` : "—");
      }))))));
}
