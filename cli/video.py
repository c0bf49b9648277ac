"""The CLI's reaction-video parts: the timeline options of `facesense submit` and, after a video
job, per variant its viewers' overall shares and a compact text curve of each label."""

from __future__ import annotations

import argparse
import math

from cli.tables import table
from facesense.client import Client

RAMP = "_.:-=+*#%@"  # a label's lowest share to its highest
WIDTH = 60  # characters a curve may take: more bins are averaged in runs


def add_video_options(p: argparse.ArgumentParser) -> None:
    """submit's timeline options (the API checks their values)."""
    p.add_argument("--timeline-bin-s", type=float, metavar="SECONDS",
                   help="a video job's timeline bins, in seconds of video (0.1 to 60; default 1)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                   help="subtract each viewer's label shares before the ad's start (the "
                        "manifest's t0) from that viewer's curve (default: no)")


def video_fields(args) -> dict:
    """The timeline options given, as the client's keyword arguments."""
    fields = {"timeline_bin_s": args.timeline_bin_s, "baseline": args.baseline}
    return {k: v for k, v in fields.items() if v is not None}


def print_curves(api: Client, record: dict) -> None:
    """After a finished video job's report: its curves, from the whole summary (the record's
    summary leaves the curves out)."""
    summary = record.get("summary") or {}
    if "timeline_bin_s" in summary:  # the record's groups: the largest, if there are many
        print("\n".join(curve_lines(api.summary(record["id"]), list(summary["groups"]))))


def curve_lines(summary: dict, only: list[str] | None = None) -> list[str]:
    """Per group (those named in only, if given): viewers, each label's mean over viewers of
    their overall share with its t-interval, then a line per label with one character per bin
    (or run of bins) and the peak."""
    classes, bin_s = summary["classes"], summary["timeline_bin_s"]
    groups = {g: t for g, t in summary["groups"].items() if t.get("timeline")
              and (only is None or g in only)}
    left = sum(1 for t in summary["groups"].values() if t.get("timeline")) - len(groups)
    if not groups:
        return ["", "no timeline: no viewer had a face during the ad"]
    runs = max(1, math.ceil(max(len(t["timeline"]) for t in groups.values()) / WIDTH))
    curves = {g: {c: squeeze([b["share"][c] for b in t["timeline"]], runs) for c in classes}
              for g, t in groups.items()}
    scale = {}
    for c in classes:
        values = [x for g in curves for x in curves[g][c] if x is not None]
        scale[c] = (min(values), max(values)) if values else (0.0, 0.0)
    step = f"{runs * bin_s:g} s"
    out = ["", f"timeline over viewers (one character = {step} of the ad"
           + (", baseline subtracted" if summary.get("baseline") else "")
           + f"; per label {RAMP[0]!r} is its lowest share, {RAMP[-1]!r} its highest):"]
    out += ["  " + line for line in table([[c, f"{RAMP[0]} {lo * 100:.1f}%", f"{RAMP[-1]} {hi * 100:.1f}%"]
                                           for c, (lo, hi) in scale.items()], right=(1, 2))]
    for g, tally in groups.items():
        shares = "  ".join(f"{c} {cell(tally['viewer_shares'][c])}" for c in classes
                           if tally["viewer_shares"][c]["share"] is not None)
        out.append(f"{g or '(top level)'}  {tally['viewers']} viewers  {shares}")
        for c in classes:
            peak = tally["peak"][c]
            at = "" if peak is None else (f"peak {peak['share'] * 100:.1f}% at "
                                          f"{peak['t0']:g}-{peak['t1']:g} s")
            out.append(f"  {c:<{max(map(len, classes))}}  |{draw(curves[g][c], *scale[c])}|  {at}")
    if left:
        out.append(f"and {left} more group{'s' if left > 1 else ''}: their curves are in timeline.csv "
                   "(facesense results JOB --timeline-csv FILE)")
    return out


def cell(mean: dict) -> str:
    """'48.0% [40.1, 56.0]': a mean over viewers and its t-interval, in percent (a comma, as a
    baselined bound may be negative)."""
    ci = mean.get("ci95")
    return f"{mean['share'] * 100:.1f}%" + (f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else "")


def squeeze(values: list[float | None], runs: int) -> list[float | None]:
    """values averaged in runs of this many (a run with no value stays None)."""
    out = []
    for i in range(0, len(values), runs):
        part = [v for v in values[i:i + runs] if v is not None]
        out.append(sum(part) / len(part) if part else None)
    return out


def draw(values: list[float | None], lo: float, hi: float) -> str:
    """One character per value on the ramp from lo to hi; a space where there is none."""
    span = hi - lo
    return "".join(" " if v is None else
                   RAMP[len(RAMP) // 2] if span <= 0 else
                   RAMP[min(len(RAMP) - 1, int((v - lo) / span * len(RAMP)))] for v in values)
