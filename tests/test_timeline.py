"""The video timeline's statistics, checked against an independent computation from the rows
(pandas and scipy, written here separately): per-viewer shares per bin, their mean over viewers
with a t-interval, peaks, baseline subtraction, t0 alignment, and comparisons over viewers."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from facesense.errors import BadRequest
from facesense.outputs.results import Summary, bounded, timeline_csv, write_results
from facesense.outputs.timeline import Timeline, job_fields, options
from facesense.outputs.timeline_stats import betainc, t_interval, t_quantile, t_two_sided, welch
from facesense.storage import LocalStore
from facesense.storage.layout import SUMMARY, job_key

CLASSES = ["happy", "sad", "neutral"]


def frame_row(group: str, video: str, t: float, label: str | None, face: int | None = 0,
              frame: int = 0) -> dict:
    """A video result row as the worker writes it (label None with face None: no face found)."""
    probs = None if label is None else {c: 0.8 if c == label else 0.1 for c in CLASSES}
    return {"image": f"{group}/{video}.mp4", "group": group, "face": face,
            "box": None if label is None else [1, 2, 30, 40],
            "face_score": None if label is None else 0.99, "label": label,
            "confidence": None if label is None else 0.8, "probs": probs, "error": None,
            "t": round(t, 3), "frame": frame}


def random_rows(seed: int = 7) -> list[dict]:
    """Two variants of several viewers: 5 fps frames from before t0 to a random end, labels
    drawn with a per-viewer bias, some frames without a face, a second face now and then, an
    error row, gaps; rows shuffled (shards arrive in any order)."""
    rng = random.Random(seed)
    rows = []
    for group, viewers in (("ad_a", 6), ("ad_b", 5)):
        for v in range(viewers):
            bias = [rng.random() + 0.2 for _ in CLASSES]
            start, end = -rng.choice([0, 1.2, 3.0]), rng.uniform(6, 12)
            for frame in range(int((end - start) * 5)):
                t = start + frame / 5
                if 4.0 <= t < 5.0 and v == 1:
                    continue  # this viewer looked away: no frames at all in one bin
                if rng.random() < 0.1:
                    rows.append(frame_row(group, f"v{v}", t, None, face=None, frame=frame))
                    continue
                for face in range(2 if rng.random() < 0.1 else 1):
                    label = rng.choices(CLASSES, weights=bias)[0]
                    rows.append(frame_row(group, f"v{v}", t, label, face=face, frame=frame))
            rows.append({**frame_row(group, f"v{v}", end, None, face=None), "label": None,
                         "error": "video broke at 12.000 s"})
    rows.append({"image": "ad_a/photo.jpg", "group": "ad_a", "face": 0, "box": [1, 2, 3, 4],
                 "face_score": 0.9, "label": "happy", "confidence": 0.9, "probs": None,
                 "error": None, "t": None, "frame": None})  # a photo beside the videos
    rng.shuffle(rows)
    return rows


def summarize(rows: list[dict], bin_s: float = 1.0, baseline: bool = False, **kw) -> dict:
    summary = Summary(CLASSES, faces=True, timeline=Timeline(CLASSES, bin_s, baseline))
    for row in rows:
        summary.add(row)
    return json.loads(json.dumps(summary.to_dict(**kw)))  # what summary.json would hold


# --- the independent computation ----------------------------------------------------------


def faces_frame(rows: list[dict], bin_s: float) -> pd.DataFrame:
    """The scored video faces with their viewer and bin (before the ad: bin -1)."""
    df = pd.DataFrame([r for r in rows if r["t"] is not None and r["label"] and not r["error"]])
    df["viewer"] = df["group"] + "|" + df["image"]
    # decimal arithmetic on milliseconds: t has 3 decimals, bin_s a few more at most
    ms = (df["t"] * 1000).round().astype(int)
    df["bin"] = np.where(ms < 0, -1, ms // round(bin_s * 1000))
    return df


def viewer_shares(df: pd.DataFrame) -> pd.DataFrame:
    """Per viewer (and bin, if df has several) each label's share of the viewer's faces."""
    counts = pd.crosstab([df["viewer"], df["bin"]], df["label"]).reindex(columns=CLASSES,
                                                                          fill_value=0)
    return counts.div(counts.sum(axis=1), axis=0)


def t_ci(x: np.ndarray, low: float = 0.0) -> list[float] | None:
    if len(x) < 2:
        return None
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return [max(low, x.mean() - half), min(1.0, x.mean() + half)]


def expected_curve(df: pd.DataFrame, rest: pd.DataFrame | None, viewers: list[str]) -> list[dict]:
    """Per bin: the viewers with a face there, and the mean and t-interval of their shares."""
    during = df[(df["bin"] >= 0) & df["viewer"].isin(viewers)]
    per = viewer_shares(during)
    if rest is not None:
        per = per - rest.reindex(per.index.get_level_values(0)).to_numpy()
    out = []
    for b in range(int(during["bin"].max()) + 1):
        block = per.xs(b, level="bin") if b in per.index.get_level_values("bin") else per.iloc[:0]
        out.append({"bin": b, "viewers": len(block),
                    "faces": int((during["bin"] == b).sum()),
                    "share": {c: block[c].mean() if len(block) else None for c in CLASSES},
                    "ci95": {c: t_ci(block[c].to_numpy(), -1.0 if rest is not None else 0.0)
                             for c in CLASSES}})
    return out


def resting(df: pd.DataFrame) -> pd.Series:
    """Each viewer's label shares before the ad (viewers with no such frame are absent)."""
    return viewer_shares(df[df["bin"] < 0].assign(bin=0)).droplevel("bin")


def assert_curve(got: list[dict], want: list[dict], bin_s: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["t0"] == pytest.approx(w["bin"] * bin_s) and g["t1"] == pytest.approx(
            (w["bin"] + 1) * bin_s)
        assert (g["viewers"], g["faces"]) == (w["viewers"], w["faces"])
        for c in CLASSES:
            assert g["share"][c] == (None if w["share"][c] is None else
                                     pytest.approx(w["share"][c], abs=1e-6))
            assert g["ci95"][c] == (None if w["ci95"][c] is None else
                                    pytest.approx(w["ci95"][c], abs=2e-6))


# --- the statistics -----------------------------------------------------------------------


@pytest.mark.parametrize("bin_s", [1.0, 0.4, 2.5])
def test_the_curve_per_group_and_overall_matches_an_independent_computation(bin_s):
    rows = random_rows()
    summary = summarize(rows, bin_s)
    df = faces_frame(rows, bin_s)
    assert summary["timeline_bin_s"] == bin_s and summary["baseline"] is False
    for group in ("ad_a", "ad_b"):
        viewers = sorted(df[df["group"] == group]["viewer"].unique())
        assert summary["groups"][group]["viewers"] == len(viewers)
        assert_curve(summary["groups"][group]["timeline"], expected_curve(df, None, viewers), bin_s)
    everyone = sorted(df["viewer"].unique())
    assert summary["overall"]["viewers"] == len(everyone) == 11
    assert_curve(summary["overall"]["timeline"], expected_curve(df, None, everyone), bin_s)
    # the viewer who looked away: one fewer viewer in that bin (at 1 s bins, bin 4)
    if bin_s == 1.0:
        assert summary["groups"]["ad_a"]["timeline"][4]["viewers"] == 5


def test_each_viewers_overall_share_its_mean_and_the_peaks():
    rows = random_rows(11)
    summary = summarize(rows)
    df = faces_frame(rows, 1.0)
    during = df[df["bin"] >= 0]
    overall = viewer_shares(during.assign(bin=0)).droplevel("bin")
    for group in ("ad_a", "ad_b"):
        tally = summary["groups"][group]
        listed = {f"{group}|{v['video']}": v for v in tally["per_viewer"]}
        mine = overall[overall.index.str.startswith(group + "|")]
        assert sorted(listed) == sorted(mine.index)
        for viewer, row in mine.iterrows():
            assert listed[viewer]["faces"] == int((during["viewer"] == viewer).sum())
            assert listed[viewer]["resting_faces"] == int(
                ((df["viewer"] == viewer) & (df["bin"] < 0)).sum())
            assert listed[viewer]["share"] == pytest.approx(row.to_dict(), abs=1e-6)
        for c in CLASSES:
            cell = tally["viewer_shares"][c]
            assert cell["share"] == pytest.approx(mine[c].mean(), abs=1e-6)
            assert cell["ci95"] == pytest.approx(t_ci(mine[c].to_numpy()), abs=2e-6)
            # the group's label shares are its viewers' too; the pooled one stays beside them
            label = tally["labels"][c]
            assert (label["share"], label["ci95"]) == (cell["share"], cell["ci95"])
            assert label["share_of_faces"] == pytest.approx(label["count"] / tally["scored"], abs=1e-6)
            best = max((b for b in tally["timeline"] if b["viewers"]),
                       key=lambda b: (b["share"][c], -b["t0"]))
            assert tally["peak"][c] == {"t0": best["t0"], "t1": best["t1"],
                                        "share": best["share"][c]}


def test_baseline_subtracts_each_viewers_resting_face_from_its_own_curve():
    rows = random_rows(3)
    # one more viewer with no frame before t0: it has no resting face to subtract
    rows += [frame_row("ad_b", "late", t / 5, "happy") for t in range(30)]
    summary = summarize(rows, 1.0, baseline=True)
    df = faces_frame(rows, 1.0)
    rest = resting(df)
    assert summary["baseline"] is True and "resting face" in summary["baseline_note"]
    for group in ("ad_a", "ad_b"):
        viewers = sorted(v for v in rest.index if v.startswith(group + "|"))
        tally = summary["groups"][group]
        assert tally["viewers"] == len(viewers)
        assert_curve(tally["timeline"], expected_curve(df, rest, viewers), 1.0)
        late = [v for v in tally["per_viewer"] if v["resting_faces"] == 0]
        assert tally["viewers_without_baseline"] == len(late)
        assert all(v["share"] is None for v in late)
    assert summary["groups"]["ad_b"]["viewers_without_baseline"] >= 1
    # shares are changes from rest now: some go below zero
    assert any(b["share"][c] < 0 for b in summary["overall"]["timeline"] for c in CLASSES)
    assert summary["overall"]["viewers"] == len(rest)
    # the label shares stay shares of faces (averaged over all viewers), not changes from rest
    raw = viewer_shares(df[df["bin"] >= 0].assign(bin=0)).droplevel("bin")
    for c in CLASSES:
        assert summary["overall"]["labels"][c]["share"] == pytest.approx(raw[c].mean(), abs=1e-6)


def test_frames_before_t0_are_the_resting_face_not_bins_of_the_ad():
    # a viewer shifted by t0 = 2 s: t from -2 to 3; every frame before 0 sad, after it happy
    rows = [frame_row("ad", "v0", t / 10 - 2, "sad" if t < 20 else "happy") for t in range(50)]
    rows += [frame_row("ad", "v1", t / 10, "happy" if t % 2 else "sad") for t in range(30)]
    plain, based = summarize(rows, 0.1), summarize(rows, 0.1, baseline=True)
    curve = plain["groups"]["ad"]["timeline"]
    assert curve[0]["t0"] == 0.0 and len(curve) == 30  # 0.0 to 3.0 s in tenths
    assert [b["viewers"] for b in curve] == [2] * 30  # t = 0.3 falls in bin 3, not 2
    assert plain["groups"]["ad"]["per_viewer"][0]["share"]["happy"] == 1.0
    assert plain["groups"]["ad"]["per_viewer"][0]["resting_faces"] == 20
    # baseline: v0 at rest was all sad, so its curve is +1 happy, -1 sad; v1 has no rest frames
    assert [b["share"]["happy"] for b in based["groups"]["ad"]["timeline"]] == [1.0] * 30
    assert based["groups"]["ad"]["timeline"][0]["share"]["sad"] == -1.0


def test_comparisons_use_viewers_where_pooling_frames_would_find_a_difference():
    # two viewers per variant, 600 frames each: ad_a's viewers smile 70 % and 40 % of the time,
    # ad_b's 55 % and 25 %; pooled frames (1,200 each, 55 % vs 40 %) look decisive; 2 viewers
    # per variant are not
    rows = []
    for group, smiles in (("ad_a", (0.70, 0.40)), ("ad_b", (0.55, 0.25))):
        for v, share in enumerate(smiles):
            happy = round(600 * share)
            rows += [frame_row(group, f"v{v}", i / 10, "happy" if i < happy else "sad")
                     for i in range(600)]
    summary = summarize(rows)
    pooled = {g: [sum(r["label"] == "happy" for r in rows if r["group"] == g), 1200]
              for g in ("ad_a", "ad_b")}
    table = [[pooled["ad_a"][0], 1200 - pooled["ad_a"][0]],
             [pooled["ad_b"][0], 1200 - pooled["ad_b"][0]]]
    assert stats.fisher_exact(table).pvalue < 1e-10  # frames as if independent: "significant"
    happy = next(c for c in summary["comparisons"] if c["label"] == "happy")
    want = stats.ttest_ind([0.70, 0.40], [0.55, 0.25], equal_var=False).pvalue
    assert happy["test"] == "welch_over_viewers" and (happy["viewers_a"], happy["viewers_b"]) == (2, 2)
    assert happy["p_value"] == pytest.approx(want, rel=1e-9) and want > 0.3
    assert happy["significant"] is False
    assert happy["difference"] == pytest.approx(0.15, abs=1e-6)
    # viewers per group for 80 % power at 0.05 (one pair): 2 ((z_a + z_b) s / d)^2 + z_a^2 / 4
    z_a, z_b = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    var = (np.var([0.70, 0.40], ddof=1) + np.var([0.55, 0.25], ddof=1)) / 2
    need = math.ceil(2 * (z_a + z_b) ** 2 * var / 0.15 ** 2 + z_a ** 2 / 4)
    assert happy["sample_size"] == {"per_group": need, "alpha": 0.05, "power": 0.8, "reason": None,
                                    "unit": "viewers"} and need == 33


def test_comparisons_match_welch_and_holm_over_three_variants():
    rows = random_rows(5)
    rows += [frame_row("ad_c", f"v{v}", t / 5, "happy" if (t + v) % 3 else "sad")
             for v in range(3) for t in range(40)]
    summary = summarize(rows)
    df = faces_frame(rows, 1.0)
    overall = viewer_shares(df[df["bin"] >= 0].assign(bin=0)).droplevel("bin")
    got = summary["comparisons"]
    assert [(c["label"], c["a"], c["b"]) for c in got] == [
        (c, a, b) for c in CLASSES for a, b in combinations(["ad_a", "ad_b", "ad_c"], 2)]
    for c in CLASSES:
        mine = [x for x in got if x["label"] == c]
        p = [stats.ttest_ind(overall[overall.index.str.startswith(x["a"] + "|")][c],
                             overall[overall.index.str.startswith(x["b"] + "|")][c],
                             equal_var=False).pvalue for x in mine]
        p = [1.0 if math.isnan(v) else v for v in p]  # no spread in either, same means
        # Holm by definition (scipy has none): sorted p times (m - rank), a running maximum
        order = sorted(range(len(p)), key=p.__getitem__)
        adjusted, running = [0.0] * len(p), 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (len(p) - rank) * p[i]))
            adjusted[i] = running
        for x, pv, adj in zip(mine, p, adjusted, strict=True):
            assert x["p_value"] == pytest.approx(pv, rel=1e-8, abs=1e-300)
            assert x["p_adjusted"] == pytest.approx(adj, rel=1e-8, abs=1e-300)
            assert x["significant"] is bool(adj < 0.05)


def test_a_variant_with_one_viewer_is_left_out_of_the_comparisons():
    rows = [frame_row(g, f"v{v}", t / 5, "happy" if t % 2 else "sad")
            for g, n in (("ad_a", 2), ("ad_b", 2), ("solo", 1)) for v in range(n) for t in range(10)]
    summary = summarize(rows)
    assert {(c["a"], c["b"]) for c in summary["comparisons"]} == {("ad_a", "ad_b")}
    assert summary["comparisons_left_out"] == ["solo"]


def test_a_photo_job_has_no_timeline_and_keeps_its_fisher_comparisons():
    rows = [{**frame_row(g, f"p{i}", 0, "happy" if i % 3 else "sad"), "t": None, "frame": None}
            for g in ("a", "b") for i in range(9)]
    summary = summarize(rows)
    assert "timeline_bin_s" not in summary and "timeline" not in summary["groups"]["a"]
    assert "test" not in summary["comparisons"][0] and timeline_csv(summary) is None


def test_memory_holds_counts_per_viewer_and_bin_not_rows():
    timeline = Timeline(CLASSES)
    for i in range(60_000):  # 2 viewers, 30 s at 1,000 rows a second
        timeline.add(frame_row("ad", f"v{i % 2}", (i // 2) / 1000, CLASSES[i % 3]))
    viewers = timeline.groups["ad"]
    assert sorted(viewers) == ["ad/v0.mp4", "ad/v1.mp4"]
    assert [[i for i, _ in v.items()] for v in viewers.values()] == [list(range(30))] * 2
    # 30 bins of 3 labels and a total, 4 bytes a count: 480 bytes a viewer for 30,000 rows
    assert [v.bins.itemsize * len(v.bins) for v in viewers.values()] == [480, 480]
    assert sum(v.during[-1] for v in viewers.values()) == 60_000


# --- summary.json, the record, timeline.csv, the job fields -------------------------------


def test_write_results_puts_the_timeline_in_summary_json_and_keeps_the_record_small(tmp_path):
    store = LocalStore(tmp_path)
    rows = random_rows(9)
    data = write_results(store, "vid", iter(rows), CLASSES, faces=True,
                         **options({"timeline_bin_s": 0.5, "baseline": True}))
    on_disk = json.loads(store.get(job_key("vid", SUMMARY)))
    assert on_disk == json.loads(json.dumps(data)) and on_disk["timeline_bin_s"] == 0.5
    assert on_disk["groups"]["ad_a"]["timeline"] and on_disk["baseline"] is True
    record = bounded(data, 20)
    for tally in (record["overall"], *record["groups"].values()):
        assert "timeline" not in tally and "per_viewer" not in tally
        assert "peak" in tally and "viewer_shares" in tally
    assert record["comparisons"] == data["comparisons"] and record["baseline_note"]


def test_timeline_csv_has_a_row_per_group_bin_and_label():
    summary = summarize(random_rows(4), 2.0)
    table = list(csv.DictReader(io.StringIO(timeline_csv(summary))))
    assert list(table[0]) == ["group", "t0", "t1", "viewers", "label", "share", "ci95_low",
                              "ci95_high"]
    want = [(g, b, c) for g, t in summary["groups"].items() for b in t["timeline"] for c in CLASSES]
    assert len(table) == len(want)
    for line, (g, b, c) in zip(table, want, strict=True):
        assert (line["group"], float(line["t0"]), float(line["t1"]), int(line["viewers"]),
                line["label"]) == (g, b["t0"], b["t1"], b["viewers"], c)
        assert float(line["share"]) == b["share"][c]
        ci = b["ci95"][c]  # one viewer in the bin: no interval, empty cells
        assert [line["ci95_low"], line["ci95_high"]] == (["", ""] if ci is None else list(map(str, ci)))
    assert any(b["ci95"][c] is None for _, b, c in want) and any(b["ci95"][c] for _, b, c in want)


def test_job_fields_are_checked_and_read_from_forms_too():
    assert job_fields({}) == {}
    assert job_fields({"timeline_bin_s": 0.5, "baseline": True}) == {"timeline_bin_s": 0.5,
                                                                       "baseline": True}
    assert job_fields({"timeline_bin_s": "2", "baseline": "false"}) == {"timeline_bin_s": 2.0,
                                                                         "baseline": False}
    for bad in (0.05, 61, "soon", True, float("nan"), [1]):
        with pytest.raises(BadRequest, match="timeline_bin_s"):
            job_fields({"timeline_bin_s": bad})
    for bad in ("yes", 1, "2"):
        with pytest.raises(BadRequest, match="baseline"):
            job_fields({"baseline": bad})
    assert options({}) == {"timeline_bin_s": 1.0, "baseline": False}


def test_the_text_curve_draws_a_character_per_bin_on_each_labels_scale():
    from cli.video import RAMP, curve_lines

    # ad_a smiles more and more over 4 s; ad_b not at all; 2 viewers each, 5 frames a second
    rows = [frame_row(g, f"v{v}", t / 5, "happy" if g == "ad_a" and t % 5 < t // 5 + 1 else "sad")
            for g in ("ad_a", "ad_b") for v in range(2) for t in range(20)]
    summary = summarize(rows)
    happy = [b["share"]["happy"] for b in summary["groups"]["ad_a"]["timeline"]]
    assert happy == [0.2, 0.4, 0.6, 0.8]
    lines = curve_lines(summary)
    curve = next(line for line in lines[lines.index(next(x for x in lines if x.startswith("ad_a"))):]
                 if line.split()[0] == "happy")
    low, high = 0.0, 0.8  # the label's scale spans both variants: ad_b's 0 to ad_a's 80 %
    assert curve.split("|")[1] == "".join(RAMP[min(9, int((x - low) / (high - low) * 10))]
                                          for x in happy) == ":+#@"
    assert "peak 80.0% at 3-4 s" in curve
    only = curve_lines(summary, ["ad_b"])
    assert not any(x.startswith("ad_a") for x in only)
    assert only[-1].startswith("and 1 more group: their curves are in timeline.csv")


# --- the t distribution, against scipy ----------------------------------------------------


@pytest.mark.parametrize("df", [1, 2, 3, 4.5, 9, 30, 250, 12_000])
def test_student_t_tail_and_quantile_match_scipy(df):
    for t in (0.0, 0.3, 1.0, 2.2, 6.0, 40.0):
        assert t_two_sided(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-300)
    assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    assert betainc(df / 2, 2.5, 0.37) == pytest.approx(stats.beta.cdf(0.37, df / 2, 2.5), rel=1e-9)


def test_t_interval_and_welch_match_scipy():
    rng = np.random.default_rng(1)
    for n, m in ((2, 2), (3, 7), (25, 40)):
        a, b = rng.random(n), rng.random(m) * 0.5
        lo, hi = stats.t.interval(0.95, n - 1, loc=a.mean(), scale=stats.sem(a))
        assert t_interval(list(a)) == pytest.approx((lo, hi), rel=1e-9)
        assert welch(list(a), list(b)) == pytest.approx(
            stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert t_interval([0.5]) is None
    assert welch([0.5, 0.5], [0.5, 0.5]) == 1.0 and welch([1.0, 1.0], [0.0, 0.0]) == 0.0
