"""Plain-text tables of a job record for the CLI: shares with intervals and the significant
differences for a scoring job; epochs, metrics and the confusion matrix for a training job."""

from __future__ import annotations

from collections.abc import Iterable

from cli.manage import pace_text
from facesense.outputs.stats import ALPHA
from facesense.state.status import JobStatus

MAX_LISTED = 10  # groups named on the "not compared" line; the rest are counted


def job_text(record: dict) -> str:
    """The human-readable report of a job record, whatever its type and state."""
    head = f"job {record['id']} {record['type']} {record['status']}"
    if record.get("error"):
        head += f": {record['error']}"
    pace = pace_text(record)  # while it runs: its rate and the time left
    if record["type"] == "train":
        return "\n".join([head + pace, *train_lines(record)])
    p = record.get("progress") or {}
    head += (f"  model {record.get('model_version') or '-'}  {p.get('done', 0)}/{p.get('total', 0)}"
             f" images, {p.get('failed', 0)} failed" + ("  (partial)" if record.get("partial") else "")
             + pace)
    summary = record.get("summary")
    return "\n".join([head, *(summary_lines(summary) if summary else [])])


def table(rows: list[list[str]], right: Iterable[int] = ()) -> list[str]:
    """Columns padded to their widest cell; the columns in right are right-aligned."""
    right = set(right)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


def share_cell(cell: dict) -> str:
    """'48.0% [40.1-56.0]': the share and its Wilson 95 % interval, in percent."""
    ci = cell.get("ci95")
    interval = f" [{ci[0] * 100:.1f}-{ci[1] * 100:.1f}]" if ci else ""
    return f"{cell['share'] * 100:.1f}%{interval}"


def summary_lines(summary: dict) -> list[str]:
    """Per group: scored images and each label's share with its interval; then the significant
    comparisons (Fisher exact, Holm-adjusted) and the groups left out of them."""
    classes = summary["classes"]
    faces = "faces" in summary["overall"]  # then shares are over faces, "scored" counts faces
    extra = ["images", "no face"] if faces else []
    rows = [["group", "faces" if faces else "scored", "failed", *extra,
             *[f"{c} % [95% CI]" for c in classes]]]
    tallies = [(g or "(top level)", t) for g, t in summary["groups"].items()]
    if summary.get("other_groups"):
        tallies.append((f"({summary['other_groups']['groups']} other groups)",
                        summary["other_groups"]))
    tallies.append(("all", summary["overall"]))
    for name, t in tallies:
        rows.append([name, str(t["scored"]), str(t["failed"]),
                     *([str(t["images"]), str(t["no_face"])] if faces else []),
                     *[share_cell(t["labels"][c]) for c in classes]])
    out = ["", *table(rows, right=range(1, 3 + len(extra) + len(classes)))]
    comparisons = summary.get("comparisons")
    if comparisons is None:  # a summary written before the statistics existed
        return out
    significant = [c for c in comparisons if c["significant"]]
    video = "timeline_bin_s" in summary  # then groups are compared over viewers
    test = "Welch t-test over viewers" if video else "Fisher exact"
    out.append("")
    if significant:
        out.append(f"significant differences ({len(significant)} of {len(comparisons)} "
                   f"comparisons; {test}, Holm-adjusted p < 0.05):")
        out += ["  " + line for line in table(
            [["label", "group", "vs", "share", "vs share", "difference", "p adjusted"],
             *[[c["label"], c["a"] or "(top level)", c["b"] or "(top level)",
                f"{c['share_a'] * 100:.1f}%", f"{c['share_b'] * 100:.1f}%",
                f"{c['difference'] * 100:+.1f} pts", f"{c['p_adjusted']:.2g}"]
               for c in significant]], right=range(3, 7))]
    elif comparisons:
        out.append(f"no significant differences between groups ({len(comparisons)} comparisons; "
                   f"{test}, Holm-adjusted p < 0.05)")
    else:
        out.append("no comparisons: fewer than two groups with "
                   + ("two viewers or more" if video else "scored images"))
    out += needed_lines(summary, comparisons, "viewers" if video else "faces" if faces else "images")
    left_out = summary.get("comparisons_left_out") or []
    if left_out:
        names = ", ".join(g or "(top level)" for g in left_out[:MAX_LISTED])
        more = f" and {len(left_out) - MAX_LISTED} more" if len(left_out) > MAX_LISTED else ""
        out.append(f"not compared: {names}{more} (beyond the largest groups, or nothing scored)")
    return out


def needed_lines(summary: dict, comparisons: list[dict], unit: str) -> list[str]:
    """The comparisons that are not significant, fewest images needed first: how many per group
    would detect each observed difference with 80 % power (a summary's sample_size)."""
    open_ = [c for c in comparisons if c.get("sample_size")]  # absent in older summaries
    if not open_:
        return []
    open_.sort(key=lambda c: (c["sample_size"]["per_group"] is None,
                              c["sample_size"]["per_group"] or 0))
    groups = summary["groups"]

    def now(c: dict) -> str:  # this job's group sizes, for scale
        return " / ".join(str(groups[g].get("viewers", groups[g]["scored"])) if g in groups else "-"
                          for g in (c["a"], c["b"]))

    def needed(size: dict) -> str:
        return f"{size['per_group']:,}" if size["per_group"] is not None else size["reason"]

    rows = [["label", "group", "vs", "share", "vs share", "difference", f"{unit} now",
             "per group needed"],
            *[[c["label"], c["a"] or "(top level)", c["b"] or "(top level)",
               f"{c['share_a'] * 100:.1f}%", f"{c['share_b'] * 100:.1f}%",
               f"{c['difference'] * 100:+.1f} pts", now(c), needed(c["sample_size"])]
              for c in open_[:MAX_LISTED]]]
    more, alpha = len(open_) - MAX_LISTED, open_[0]["sample_size"]["alpha"]
    pairs = round(ALPHA / alpha) if alpha else 0  # Holm's first step: ALPHA over the pairs
    return ["", f"{unit} per group to detect the differences not yet significant (80 % power "
            f"at alpha {alpha:.3g}" + (f", {ALPHA} over {pairs} pairs" if pairs > 1 else "") + "):",
            *["  " + line for line in table(rows, right=range(3, 7))],
            *([f"  and {more} more comparisons"] if more > 0 else [])]


def train_lines(record: dict) -> list[str]:
    """One line per epoch, then the version, its metrics and its confusion matrix."""
    out = []
    note = (record.get("training_plan") or {}).get("note")
    if note:  # a small set's epochs were raised: say so before the epochs it explains
        out += ["", note]
    history = record.get("history") or []
    if history:
        rows = [["epoch", "train loss", "train acc", "val loss", "val acc", "seconds"]]
        for h in history:
            rows.append([str(h["epoch"]), _num(h.get("train_loss"), ".4f"),
                         _num(h.get("train_accuracy"), ".3f"), _num(h.get("val_loss"), ".4f"),
                         _num(h.get("val_accuracy"), ".3f"), _num(h.get("seconds"), ".1f")])
        out += ["", *table(rows, right=range(6))]
    if record.get("model_version"):
        promotion = record.get("promotion") or {}
        out += ["", f"model version {record['model_version']}" + _promotion(promotion)]
    metrics = record.get("metrics") or {}
    if record["status"] == JobStatus.SUCCEEDED and metrics:
        out.append(f"validation: accuracy {_num(metrics.get('accuracy'), '.3f')}, loss "
                   f"{_num(metrics.get('loss'), '.4f')}, best epoch {metrics.get('best_epoch', '-')}"
                   f" of {metrics.get('epochs_run', '-')}")
        out += _chance(record.get("chance"))
        out += _per_class(metrics.get("per_class") or {})
        classes = record.get("classes") or list(metrics.get("per_class") or {})
        out += _confusion(metrics.get("confusion_matrix"), classes)
    return out


def _chance(c: dict | None) -> list[str]:
    """Whether the version beats always guessing the commonest class, in plain words."""
    if not c:
        return []
    verdict = "beats" if c["beats_chance"] else "does NOT beat"
    return [f"chance: {c['correct']} of {c['images']} right {verdict} always guessing the "
            f"commonest class ({c['baseline']:.0%}), p = {c['p_value']:.3g}"]


def _promotion(p: dict) -> str:
    if not p:
        return ""
    if p.get("promoted"):
        return f"  promoted to {p.get('alias')}"
    return f"  not promoted ({p.get('reason') or 'policy ' + str(p.get('policy'))})"


def _per_class(per_class: dict) -> list[str]:
    if not per_class:
        return []
    rows = [["class", "precision", "recall", "f1", "support"],
            *[[c, _num(m.get("precision"), ".3f"), _num(m.get("recall"), ".3f"),
               _num(m.get("f1"), ".3f"), str(m.get("support", "-"))] for c, m in per_class.items()]]
    return ["", *table(rows, right=range(1, 5))]


def _confusion(matrix: list[list[int]] | None, classes: list[str]) -> list[str]:
    if not matrix or len(classes) != len(matrix):
        return []
    rows = [["truth \\ predicted", *classes],
            *[[c, *map(str, row)] for c, row in zip(classes, matrix, strict=True)]]
    return ["", "confusion matrix (rows: true class, columns: predicted):",
            *table(rows, right=range(1, len(classes) + 1))]


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)
