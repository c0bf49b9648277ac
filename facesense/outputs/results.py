"""Result rows, their merge into results.jsonl / results.csv, and the per-group summary."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator

from facesense.inputs.manifest_source import with_meta
from facesense.outputs.jsonl import iter_jsonl
from facesense.outputs.pages import PageIndex, read_rows
from facesense.outputs.rows import with_time
from facesense.outputs.stats import ci95, compare
from facesense.outputs.timeline import BIN_S, CSV_HEADER, Timeline, compact, timeline_rows
from facesense.state.records import dumps
from facesense.storage import Store
from facesense.storage.layout import (
    RESULTS_CSV,
    RESULTS_INDEX,
    RESULTS_JSONL,
    SUMMARY,
    job_key,
    shard_key,
)


def bounded(summary: dict, max_groups: int) -> dict:
    """The summary with its max_groups largest groups; the others added up under other_groups
    (the record and webhooks stay small however many folders a job has). Comparisons keep the
    pairs of kept groups, with summary.json's p-values, so both agree on every pair they show."""
    summary = compact(summary)  # a video job's curves stay in summary.json
    groups = summary["groups"]
    if len(groups) <= max_groups:
        return summary
    ranked = sorted(groups, key=lambda g: (-groups[g]["images"], g))
    kept, rest = ranked[:max_groups], [groups[g] for g in ranked[max_groups:]]
    counts = [k for k in ("images", "scored", "failed", "faces", "images_with_faces", "no_face")
              if k in rest[0]]
    other = {"groups": len(rest), **{k: sum(t[k] for t in rest) for k in counts}}
    labels = {}
    for c in summary["classes"]:
        n = sum(t["labels"][c]["count"] for t in rest)
        conf = sum((t["labels"][c]["mean_confidence"] or 0) * t["labels"][c]["count"] for t in rest)
        labels[c] = {"count": n, "share": round(n / other["scored"], 6) if other["scored"] else 0.0,
                     "ci95": ci95(n, other["scored"]),
                     "mean_confidence": round(conf / n, 6) if n else None}
    out = {**summary, "groups": {g: groups[g] for g in sorted(kept)},
           "other_groups": {**other, "labels": labels}}
    if "comparisons" in summary:
        keep = set(kept)
        out["comparisons"] = [c for c in summary["comparisons"] if c["a"] in keep and c["b"] in keep]
        # the groups folded into other_groups are left out too; other_groups counts them
        out["comparisons_left_out"] = [g for g in summary["comparisons_left_out"] if g in keep]
    return out


FACE_COLUMNS = ["face", "x0", "y0", "x1", "y1", "face_score"]  # a faces job's, after group
VIDEO_COLUMNS = ["t", "frame"]  # a job with videos: after group (blank for its photos)


def csv_header(classes: list[str], meta: list[str] = (), faces: bool = False,
               videos: bool = False) -> list[str]:
    """results.csv columns: one probability column per class, then a manifest's columns (its
    names are the analyst's: guarded as any text cell); a job with videos has t and frame."""
    return [text_cell(c) for c in ("image", "group", *(VIDEO_COLUMNS if videos else []),
                                   *(FACE_COLUMNS if faces else []), "label",
                                   "confidence", *[f"p_{c}" for c in classes], "error", *meta)]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell starting so


def text_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: one that would start a formula gets a leading
    apostrophe (OWASP's CSV injection rule); results.jsonl keeps every value verbatim."""
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_row(row: dict, classes: list[str], faces: bool = False, videos: bool = False) -> list:
    """One result row as CSV cells (faces: a faces job's, with the face columns; videos: with
    t and frame, blank for a photo)."""
    probs = row.get("probs") or {}
    conf = row.get("confidence")
    face = []
    if faces:  # the face's number, its box and detection score (blank: no face)
        box, score = row.get("box") or [""] * 4, row.get("face_score")
        face = ["" if row.get("face") is None else row["face"], *box,
                "" if score is None else score]
    video = [_blank(row.get("t")), _blank(row.get("frame"))] if videos else []
    return [text_cell(row["image"]), text_cell(row["group"]), *video, *face,
            text_cell(row.get("label") or ""),
            "" if conf is None else f"{conf:.6f}",
            *["" if c not in probs else f"{probs[c]:.6f}" for c in classes],
            text_cell(row.get("error") or ""), *map(meta_cell, (row.get("meta") or {}).values())]


def _blank(value) -> str:
    """A number's cell; blank for None."""
    return "" if value is None else str(value)


def meta_cell(value) -> str:
    """A manifest cell as CSV text (JSON Lines values may be numbers, booleans or null)."""
    if value is None:
        return ""
    return text_cell(json.dumps(value) if isinstance(value, bool) else str(value))


COMPARE_MAX_GROUPS = 10  # Settings.compare_max_groups' default, for callers without settings


class Summary:
    """Counts, shares (with Wilson intervals) and mean confidence per label, overall and per
    group, in O(groups) memory; Fisher tests between the largest groups."""

    def __init__(self, classes: list[str], faces: bool = False, timeline: Timeline | None = None):
        self.classes = classes
        self.overall = _Tally(classes, faces)
        self.groups: dict[str, _Tally] = defaultdict(lambda: _Tally(classes, faces))
        self.timeline = Timeline(classes) if timeline is None else timeline  # video rows: curves

    def add(self, row: dict) -> None:
        """Count one result row."""
        self.overall.add(row)
        self.groups[row["group"]].add(row)
        self.timeline.add(row)

    def to_dict(self, compare_max_groups: int = COMPARE_MAX_GROUPS) -> dict:
        """The summary as JSON-ready data, with comparisons between at most compare_max_groups
        groups (the largest by images, as bounded() ranks them; a group with nothing scored has
        no share to compare); the others are named under comparisons_left_out."""
        groups = {g: t.to_dict() for g, t in sorted(self.groups.items())}
        ranked = sorted((g for g in groups if groups[g]["scored"]),
                        key=lambda g: (-groups[g]["images"], g))
        compared = sorted(ranked[:max(0, compare_max_groups)])
        chosen = set(compared)
        if self.timeline:  # a video job: the viewer is the unit, its comparisons too
            return self.timeline.extend({"classes": self.classes, "overall": self.overall.to_dict(),
                                         "groups": groups}, compared)
        return {"classes": self.classes, "overall": self.overall.to_dict(), "groups": groups,
                "comparisons": compare(groups, self.classes, compared),
                "comparisons_left_out": [g for g in groups if g not in chosen]}


class _Tally:
    """One group's counts. With faces on, shares are over faces: an image adds a face per
    row, or (no face) one no_face image; an error row is one failed image."""

    def __init__(self, classes: list[str], faces: bool = False):
        self.faces = faces
        self.images = self.failed = self.scored = self.with_faces = self.no_face = 0
        self.count = dict.fromkeys(classes, 0)
        self.conf_sum = dict.fromkeys(classes, 0.0)

    def add(self, row: dict) -> None:
        if not row.get("face"):  # an image's first (or only) row
            self.images += 1
        if row.get("error"):
            self.failed += 1
            return
        if self.faces and "face" in row and row["face"] is None:
            self.no_face += 1
            return
        self.with_faces += row.get("face") == 0
        self.scored += 1
        self.count[row["label"]] += 1
        self.conf_sum[row["label"]] += row["confidence"]

    def to_dict(self) -> dict:
        scored = self.scored
        faces = ({"faces": scored, "images_with_faces": self.with_faces, "no_face": self.no_face}
                 if self.faces else {})
        return {"images": self.images, "scored": scored, "failed": self.failed, **faces,
                "labels": {c: {"count": n, "share": round(n / scored, 6) if scored else 0.0,
                               "ci95": ci95(n, scored),
                               "mean_confidence": round(self.conf_sum[c] / n, 6) if n else None}
                           for c, n in self.count.items()}}


def rows_in(tally: dict) -> int:
    """How many result rows a summary's tally (overall or a group's) stands for."""
    if "faces" in tally:  # a row per face, and one per photo without a face or failed
        return tally["faces"] + tally["no_face"] + tally["failed"]
    return tally["images"]


def shard_rows(store: Store, job_id: str, shards: Iterable[int]) -> Iterator[dict]:
    """These shards' rows in order; a missing shard file is a bug, so it raises."""
    for index in shards:
        with store.open(shard_key(job_id, index)) as stream:
            yield from iter_jsonl(stream)


def write_results(store: Store, job_id: str, rows: Iterable[dict], classes: list[str], *,
                  compare_max_groups: int = COMPARE_MAX_GROUPS, faces: bool = False,
                  timeline_bin_s: float = BIN_S, baseline: bool = False,
                  videos: bool = False) -> dict:
    """Stream rows into results.jsonl and results.csv (via temp files), then summary.json
    (with comparisons between at most compare_max_groups groups); faces: rows are per face;
    video rows add the timeline in bins of timeline_bin_s (baseline: resting face subtracted);
    videos: the job has videos, so results.csv has their t and frame."""
    summary = Summary(classes, faces, Timeline(classes, timeline_bin_s, baseline))
    rows, meta = with_meta(store, job_id, rows)  # a manifest job's groups and columns joined in
    # backslashreplace: a file name that isn't valid UTF-8 must not fail the whole job
    text = {"newline": "", "encoding": "utf-8", "errors": "backslashreplace"}
    with tempfile.TemporaryFile() as jf, tempfile.TemporaryFile("w+", **text) as cf:
        writer = csv.writer(cf)
        writer.writerow(csv_header(classes, meta, faces, videos))
        pages = PageIndex()
        for index, row in enumerate(rows):
            row = with_time(row) if videos else row  # every row of a video job: t and frame
            pages.add(index, jf.tell(), row)
            jf.write(dumps(row, separators=(",", ":")).encode() + b"\n")  # a NaN model's: null
            writer.writerow(csv_row(row, classes, faces, videos))
            summary.add(row)
        jf.seek(0)
        store.put_stream(job_key(job_id, RESULTS_JSONL), jf)
        cf.flush()
        cf.seek(0)
        store.put_stream(job_key(job_id, RESULTS_CSV), cf.buffer)
        store.put(job_key(job_id, RESULTS_INDEX), pages.to_bytes())
    data = summary.to_dict(compare_max_groups)
    # summary.json last: its presence means the results beside it are complete.
    store.put(job_key(job_id, SUMMARY), dumps(data, indent=2).encode())
    return data


def read_page(store: Store, job_id: str, offset: int, limit: int) -> list[dict]:
    """Rows [offset, offset + limit) of a finished job's results, in time independent of offset."""
    return [row for _, row in read_rows(store, job_id, offset, limit)]


def failed_images(store: Store, job_id: str) -> list[str]:
    """The keys of a finished job's error rows, streamed from its results."""
    with store.open(job_key(job_id, RESULTS_JSONL)) as stream:
        return [row["image"] for row in iter_jsonl(stream) if row.get("error")]


SUMMARY_CSV_HEADER = ["group", "label", "count", "share", "ci95_low", "ci95_high"]


def summary_csv(summary: dict) -> str:
    """summary.csv: one row per group and label with its count, share and Wilson interval (an
    empty interval where nothing in the group was scored)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(map(text_cell, SUMMARY_CSV_HEADER))  # fixed names, guarded all the same
    for group, tally in summary["groups"].items():
        for label in summary["classes"]:
            cell = tally["labels"][label]
            low, high = cell.get("ci95") or ("", "")
            writer.writerow([text_cell(group), text_cell(label), cell["count"], cell["share"],
                             low, high])
    return out.getvalue()


def timeline_csv(summary: dict) -> str | None:
    """timeline.csv: a video job's curve, a row per group, bin and label (None: no video rows)."""
    rows = timeline_rows(summary)
    if rows is None:
        return None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for group, t0, t1, viewers, label, *cells in rows:
        writer.writerow([text_cell(group), t0, t1, viewers, text_cell(label), *cells])
    return out.getvalue()
