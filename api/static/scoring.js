// A scoring job's results: cards drawn from its summary (shares per group, intervals and
// comparisons), then the gallery of its images and the list of its errors.
import {chartBox} from "./chartkit.js";
import {shareBars} from "./charts.js";
import {comparisonsCard} from "./comparisons.js";
import {h} from "./dom.js";
import {chartWidth, groupName, interval, pct} from "./format.js";
import {errorsCard, galleryCard} from "./gallery.js";
import {timelineCard} from "./timeline.js";

// The cards drawn from the summary, in page order: each takes the page's context (below) and
// returns a section, or null when the summary has nothing for it (a photo job has no timeline).
const SUMMARY_CARDS = [sharesCard, timelineCard, comparisonsCard];

export async function renderScoring(el, job, query) {
  const summary = job.summary || {overall: {images: 0, failed: 0, labels: {}}, groups: {}};
  const ctx = {
    job, summary,
    classes: summary.classes || job.classes || [],
    groups: Object.entries(summary.groups || {}),  // [[name, tally], ...]
    withFaces: summary.overall.faces !== undefined, // shares are then over faces
  };
  const gallery = galleryCard(ctx, query);
  const errors = errorsCard(ctx);
  el.replaceChildren(...SUMMARY_CARDS.map((card) => card(ctx)).filter(Boolean), gallery.card,
                     ...(errors ? [errors.card] : []));
  await gallery.load();
  if (errors) await errors.load();
}

function sharesCard({job, summary, classes, groups, withFaces}) {
  const shareRows = groups.map(([g, t]) => ({
    name: groupName(g), images: t.images,
    shares: Object.fromEntries(classes.map((c) => [c, t.labels[c]?.share || 0]))}));
  return h("section", {class: "card"}, h("h2", {}, "Label shares per group (ad variant)"),
    job.partial ? h("p", {class: "muted"}, "Partial: the job was cancelled; these are the images scored before.") : null,
    withFaces ? h("p", {class: "muted", id: "faces-note"}, "Each face found was scored: shares are over faces; images without a face are counted apart.") : null,
    summary.timeline_bin_s !== undefined ? h("p", {class: "muted", id: "viewers-note"},
      "Videos: each sampled frame counts as an image; a group's share is the mean over its " +
      "viewers (videos) of each one's share, with its 95% interval over viewers, not frames.") : null,
    shareRows.length ? chartBox(shareBars(shareRows, classes, {width: chartWidth()}), `${job.id}-shares`)
      : h("p", {class: "muted"}, "No images."),
    summaryTable(summary, classes, groups, withFaces));
}

// Counts and shares (with their 95% intervals) per group, then all groups together.
function summaryTable(summary, classes, groups, withFaces) {
  // A job with many groups carries its largest ones; the rest come added up as other_groups.
  const rows = [...groups.map(([g, t]) => [groupName(g), t, ""]),
                ...(summary.other_groups
                  ? [[`${summary.other_groups.groups} other groups`, summary.other_groups, ""]] : []),
                ["All", summary.overall, "total"]];
  return h("table", {class: "summary"},
    h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", {}, "Images"),
      withFaces ? [h("th", {}, "Faces"), h("th", {}, "No face")] : null,
      classes.map((c) => h("th", {}, c)), h("th", {}, "Failed"))),
    h("tbody", {}, rows.map(([name, t, cls]) => h("tr", {class: cls},
      h("td", {}, name),
      h("td", {}, t.images),
      withFaces ? [h("td", {}, t.faces), h("td", {}, t.no_face)] : null,
      classes.map((c) => h("td", {}, `${t.labels[c]?.count ?? 0} (${pct(t.labels[c]?.share || 0)}`
                                     + `${interval(t.labels[c]?.ci95)})`)),
      h("td", {}, t.failed)))));
}
