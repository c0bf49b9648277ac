// Each group's share with its 95 % interval, then every compared pair: Fisher's exact test on
// images (faces), or for a video job Welch's t-test on viewers' shares; Holm-adjusted per label;
// the significant rows are marked, the others say how many images (viewers) per group would
// settle them.
import {chartBox} from "./chartkit.js";
import {intervalChart} from "./charts.js";
import {h} from "./dom.js";
import {chartWidth, groupName, pct, pValue} from "./format.js";

// A comparison not yet significant: the images per group that would detect its difference
// with 80 % power, or why none would; blank for a significant one (or an older summary).
const needed = (c) => (!c.sample_size ? ""
  : c.sample_size.per_group === null ? c.sample_size.reason
  : c.sample_size.per_group.toLocaleString("en"));

export function comparisonsCard({summary, groups, classes}) {
  const rows = groups.map(([g, t]) => ({name: groupName(g), cells: t.labels}));
  const comparisons = summary.comparisons || [];
  const left = summary.comparisons_left_out || [];
  const video = summary.timeline_bin_s !== undefined; // the viewer is the unit, not the frame
  const unit = video ? "viewers" : summary.overall.faces !== undefined ? "faces" : "images";
  return h("section", {class: "card", id: "statistics"},
    h("h2", {}, "Shares with 95% intervals, and differences between groups"),
    rows.length ? chartBox(intervalChart(rows, classes, {width: chartWidth()}), "shares-intervals")
      : null,
    comparisons.length ? comparisonsTable(comparisons, unit, video ? VIEWER_TESTS : COUNT_TESTS)
      : h("p", {class: "muted", id: "comparisons-note"}, summary.comparisons
        ? "No comparisons: fewer than two groups with scored images."
        : "This job's summary predates the statistics."),
    left.length ? h("p", {class: "muted", id: "left-out"},
                    `Not compared: ${left.map(groupName).join(", ")} ` +
                    "(beyond the largest groups, or nothing scored).") : null);
}

// What the summary's tests are, in words: photos' counts, or a video job's viewers.
const COUNT_TESTS = {
  test: "Fisher's exact test",
  size: (alpha) => `Fisher's test at alpha ${alpha}, Holm's first step; Fleiss' ` +
                   "continuity-corrected sample size for two proportions"};
const VIEWER_TESTS = {
  test: "Welch's t-test on each viewer's share over the ad",
  size: (alpha) => `Welch's test at alpha ${alpha}, Holm's first step; from the viewers' ` +
                   "observed spread, the normal approximation with Guenther's t correction"};

function comparisonsTable(comparisons, unit, tests) {
  const significant = comparisons.filter((c) => c.significant).length;
  const open = comparisons.find((c) => c.sample_size);
  const needHeader = `${unit[0].toUpperCase()}${unit.slice(1)} per group to detect`;
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
  return [
    h("p", {class: "muted", id: "comparisons-note"},
      `${significant} of ${comparisons.length} comparisons significant (${tests.test}, ` +
      "Holm-adjusted p < 0.05 across the pairs of each label)."),
    table,
    open ? h("p", {class: "muted", id: "needed-note"},
             `For a difference not yet significant: how many ${unit} per group would find ` +
             "it significant 80% of the time if it is real " +
             `(${tests.size(Number(open.sample_size.alpha.toPrecision(3)))}).`) : null];
}
