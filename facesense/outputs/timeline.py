"""The emotion curve of reaction videos, with the viewer (one video) as the statistical unit.

Each viewer's faces are counted per label in bins of bin_s seconds of t (seconds from the ad's
start: rows before 0 are the viewer's resting face, before the manifest's t0). A bin's share of
a label is the mean over the viewers with a face in that bin of each viewer's own share there;
its ci95 is the t-interval of that mean over viewers (Student's t quantile computed in pure
Python in timeline_stats; no bootstrap), clipped to the shares' possible range. With baseline,
each viewer's resting shares are subtracted from that viewer's curve and overall shares.
A video group's label shares (and intervals) in the summary become means over its viewers too.
Comparisons between groups are Welch's t-tests on viewers' overall shares, Holm-adjusted per
label, never frames pooled as if independent. Memory: counts per viewer per bin, never rows."""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from collections.abc import Iterator
from itertools import combinations, repeat

from facesense.errors import BadRequest
from facesense.outputs.stats import ALPHA, holm
from facesense.outputs.timeline_stats import Moments, mean_interval, t_interval, viewers_needed, welch

BIN_S, BIN_MIN_S, BIN_MAX_S = 1.0, 0.1, 60.0  # timeline_bin_s: its default and allowed range
SLACK = 1e-9  # t = 0.3 s in 0.1 s bins is bin 3, though 0.3 / 0.1 is 2.9999999999999996
BASELINE_NOTE = ("baseline: each viewer's label shares before the ad's start (t < 0, the resting "
                 "face before the manifest's t0) are subtracted from that viewer's shares, so a "
                 "share is the change from that viewer's resting face and may be negative; "
                 "viewers with no frame before t0 are left out of the curve and the comparisons")
CSV_HEADER = ["group", "t0", "t1", "viewers", "label", "share", "ci95_low", "ci95_high"]


def job_fields(body: dict) -> dict:
    """A scoring job's checked timeline_bin_s and baseline as record fields (a multipart form
    sends text); none given: none recorded, the defaults apply."""
    out = {}
    if body.get("timeline_bin_s") is not None:
        raw = body["timeline_bin_s"]
        try:
            value = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not BIN_MIN_S <= value <= BIN_MAX_S:  # NaN fails too
            raise BadRequest(f"timeline_bin_s must be a number of seconds from {BIN_MIN_S} to "
                             f"{BIN_MAX_S} (got {raw!r})")
        out["timeline_bin_s"] = value
    if body.get("baseline") is not None:
        value = body["baseline"]
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            value = value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise BadRequest(f"baseline must be true or false (got {value!r})")
        out["baseline"] = value
    return out


def options(record: dict) -> dict:
    """write_results' timeline arguments from a job record (the defaults where it has none)."""
    return {"timeline_bin_s": float(record.get("timeline_bin_s") or BIN_S),
            "baseline": bool(record.get("baseline"))}


class _Viewer:
    """One video's face counts per label: per bin of the ad, over the whole ad, and at rest."""

    __slots__ = ("bins", "during", "rest")

    def __init__(self, labels: int):
        # bin after bin: counts per label, then the total (4 bytes a count: 16 a bin for 3 labels)
        self.bins = array("I")
        self.during = [0] * (labels + 1)
        self.rest = [0] * (labels + 1)

    def add(self, t: float, label: int, bin_s: float) -> None:
        counts = self.rest if t < 0 else self.during
        counts[label] += 1
        counts[-1] += 1
        if t >= 0:
            width = len(self.during)
            start = math.floor(t / bin_s + SLACK) * width
            if len(self.bins) < start + width:  # shards come in any order: grow to this bin
                self.bins.extend(repeat(0, start + width - len(self.bins)))
            self.bins[start + label] += 1
            self.bins[start + width - 1] += 1

    def items(self) -> Iterator[tuple[int, array]]:
        """(bin, its counts) for each bin with a face."""
        width = len(self.during)
        for start in range(0, len(self.bins), width):
            if self.bins[start + width - 1]:
                yield start // width, self.bins[start:start + width]


def shares(counts: list[int], rest: list[float] | None) -> list[float]:
    """Per label the share of these counts (the last item is their total), less rest's."""
    total = counts[-1]
    return [n / total - (rest[i] if rest else 0.0) for i, n in enumerate(counts[:-1])]


class Timeline:
    """Accumulates video rows (those with t) and turns them into the summary's timeline parts."""

    def __init__(self, classes: list[str], bin_s: float = BIN_S, baseline: bool = False):
        self.classes, self.bin_s, self.baseline = classes, bin_s, baseline
        self.index = {c: i for i, c in enumerate(classes)}
        self.groups: dict[str, dict[str, _Viewer]] = defaultdict(dict)
        self.videos = 0  # video rows seen, scored or not

    def __bool__(self) -> bool:
        return self.videos > 0

    def add(self, row: dict) -> None:
        """Count one result row: a scored face (or frame) of a video; anything else is skipped."""
        if row.get("t") is None:
            return
        self.videos += 1
        label = self.index.get(row.get("label"))
        if row.get("error") or label is None:  # an error row, or a frame without a face
            return
        viewers = self.groups[row["group"]]
        viewer = viewers.get(row["image"])
        if viewer is None:
            viewer = viewers[row["image"]] = _Viewer(len(self.classes))
        viewer.add(float(row["t"]), label, self.bin_s)

    def rest(self, viewer: _Viewer) -> list[float] | None:
        """The resting shares to subtract (None: none to subtract); a viewer left out: False."""
        if not self.baseline:
            return None
        return shares(viewer.rest, None) if viewer.rest[-1] else False

    def parts(self, viewers: dict[str, _Viewer], per_viewer: bool = True,
              bins: dict[int, Moments] | None = None) -> dict:
        """A group's (or the whole job's) timeline, peak, viewers and their mean overall shares;
        bins: the curve's moments, if already added up (else these viewers' own)."""
        kept = self.kept(viewers)
        listed = [{"video": key, "faces": v.during[-1], "resting_faces": v.rest[-1],
                   "share": None if self.rest(v) is False else self.cells(
                       shares(v.during, self.rest(v)))}
                  for key, v in sorted(viewers.items()) if v.during[-1]]
        curve = self.curve(self.moments(kept) if bins is None else bins)
        out = {"viewers": len(kept), "viewer_shares": self.mean_cells([o for *_, o in kept]),
               "timeline": curve, "peak": peak(curve, self.classes)}
        if self.baseline:
            out["viewers_without_baseline"] = len(listed) - len(kept)
        if per_viewer:
            out["per_viewer"] = listed
        return out

    def moments(self, kept: list, into: dict[int, Moments] | None = None) -> dict[int, Moments]:
        """Per bin the running moments of the kept viewers' shares, in one pass (memory per bin,
        not per viewer-bin); into: add them to these too (the whole job's)."""
        bins: dict[int, Moments] = {}
        for v, rest, _ in kept:
            for index, counts in v.items():
                values = shares(counts, rest)
                for target in (bins, into) if into is not None else (bins,):
                    m = target.get(index)
                    if m is None:
                        m = target[index] = Moments(len(self.classes))
                    m.add(values, counts[-1])
        return bins

    def kept(self, viewers: dict[str, _Viewer]) -> list[tuple]:
        """The viewers that count (a face during the ad; a resting face, with baseline): each
        with its resting shares and its overall shares."""
        out = []
        for v in viewers.values():
            rest = self.rest(v)
            if v.during[-1] and rest is not False:  # faces only before the ad: nothing to show
                out.append((v, rest, shares(v.during, rest)))
        return out

    def curve(self, bins: dict[int, Moments]) -> list[dict]:
        """The bins from 0 to the last with a face: per bin the mean over its viewers and the
        t-interval, clipped to the shares' possible range."""
        low, out = -1.0 if self.baseline else 0.0, []
        for index in range(max(bins, default=-1) + 1):
            m = bins.get(index) or Moments(len(self.classes))
            share, ci95 = {}, {}
            for c, i in self.index.items():
                share[c] = round(m.mean[i], 6) if m.n else None
                interval = mean_interval(m.mean[i], m.m2[i] / (m.n - 1), m.n) if m.n > 1 else None
                ci95[c] = None if interval is None else [round(max(low, interval[0]), 6),
                                                         round(min(1.0, interval[1]), 6)]
            out.append({"t0": round(index * self.bin_s, 6), "t1": round((index + 1) * self.bin_s, 6),
                        "viewers": m.n, "faces": m.faces, "share": share, "ci95": ci95})
        return out

    def cells(self, values: list[float]) -> dict:
        return {c: round(values[i], 6) for c, i in self.index.items()}

    def mean_cells(self, values: list[list[float]], low: float | None = None) -> dict:
        """Per label the mean over viewers of their shares and its t-interval (None: no viewer;
        the interval None under two viewers), clipped to [low, 1]."""
        low = (-1.0 if self.baseline else 0.0) if low is None else low
        out = {}
        for c, i in self.index.items():
            column = [v[i] for v in values]
            interval = t_interval(column)
            out[c] = {"share": round(math.fsum(column) / len(column), 6) if column else None,
                      "ci95": None if interval is None else
                      [round(max(low, interval[0]), 6), round(min(1.0, interval[1]), 6)]}
        return out

    def overall_shares(self, group: str) -> list[list[float]]:
        """The overall shares of a group's viewers that count (baseline subtracted if asked)."""
        return [overall for *_, overall in self.kept(self.groups.get(group, {}))]

    def header(self) -> dict:
        """The summary's top-level timeline fields."""
        return {"timeline_bin_s": self.bin_s, "baseline": self.baseline,
                **({"baseline_note": BASELINE_NOTE} if self.baseline else {})}

    def extend(self, summary: dict, names: list[str]) -> dict:
        """summary with the timeline parts per group and overall, and its comparisons over
        viewers between the named groups that have at least two viewers to compare."""
        everyone = {f"{g}\0{k}": v for g, viewers in self.groups.items() for k, v in viewers.items()}
        bins: dict[int, Moments] = {}  # the whole job's curve, added up with the groups'
        for group, tally in summary["groups"].items():
            viewers = self.groups.get(group, {})
            tally.update(self.parts(viewers, bins=self.moments(self.kept(viewers), into=bins)))
            self.over_viewers(tally, viewers)
        summary["overall"].update(self.parts(everyone, per_viewer=False, bins=bins))
        self.over_viewers(summary["overall"], everyone)
        compared = [g for g in names if len(self.overall_shares(g)) >= 2]
        chosen = set(compared)
        return {**self.header(), **summary, "comparisons": self.compare(compared),
                "comparisons_left_out": [g for g in summary["groups"] if g not in chosen]}

    def over_viewers(self, tally: dict, viewers: dict[str, _Viewer]) -> None:
        """A tally with viewers: each label's share becomes the mean over its viewers of each
        one's share of faces during the ad, its ci95 the t-interval over viewers (a Wilson
        interval would count frames as independent); the pooled share stays as share_of_faces."""
        raw = [shares(v.during, None) for v in viewers.values() if v.during[-1]]
        if raw:
            for c, cell in self.mean_cells(raw, low=0.0).items():
                tally["labels"][c].update(share_of_faces=tally["labels"][c]["share"], **cell)

    def compare(self, names: list[str]) -> list[dict]:
        """Welch's t-test on viewers' overall shares for each label and pair of groups, Holm-
        adjusted across the label's pairs; not significant: the viewers per group needed."""
        values = {g: self.overall_shares(g) for g in names}
        out = []
        for c, i in self.index.items():
            rows = []
            for a, b in combinations(names, 2):
                xa, xb = [v[i] for v in values[a]], [v[i] for v in values[b]]
                ma, mb = math.fsum(xa) / len(xa), math.fsum(xb) / len(xb)
                rows.append({"label": c, "a": a, "b": b, "share_a": round(ma, 6),
                             "share_b": round(mb, 6), "difference": round(ma - mb, 6),
                             "p_value": welch(xa, xb), "test": "welch_over_viewers",
                             "viewers_a": len(xa), "viewers_b": len(xb), "_x": (xa, xb)})
            for row, adj in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
                xa, xb = row.pop("_x")
                row.update(p_adjusted=adj, significant=adj < ALPHA)
                row["sample_size"] = None if row["significant"] else viewers_needed(
                    xa, xb, ALPHA / len(rows))
            out += rows
        return out


def peak(curve: list[dict], classes: list[str]) -> dict:
    """Per label the first bin where its share is highest (None: no bin with viewers)."""
    out = {}
    for c in classes:
        best = max((b for b in curve if b["viewers"]), key=lambda b: b["share"][c], default=None)
        out[c] = None if best is None else {"t0": best["t0"], "t1": best["t1"],
                                            "share": best["share"][c]}
    return out


def compact(summary: dict) -> dict:
    """The summary for the job record: the curves and per-viewer lists stay in summary.json."""
    if "timeline_bin_s" not in summary:
        return summary
    drop = ("timeline", "per_viewer")
    return {**summary, "overall": {k: v for k, v in summary["overall"].items() if k not in drop},
            "groups": {g: {k: v for k, v in t.items() if k not in drop}
                       for g, t in summary["groups"].items()}}


def timeline_rows(summary: dict) -> Iterator[list] | None:
    """timeline.csv's rows (CSV_HEADER's columns) per group, bin and label, blank where there is
    no value (None: the job has no video rows)."""
    if "timeline_bin_s" not in summary:
        return None
    return ([group, b["t0"], b["t1"], b["viewers"], c, "" if b["share"][c] is None else b["share"][c],
             *(b["ci95"][c] or ("", ""))]
            for group, tally in summary["groups"].items() for b in tally.get("timeline", [])
            for c in summary["classes"])
