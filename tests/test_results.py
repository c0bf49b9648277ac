"""Result rows: the per-group summary, CSV cells, the merged files, pages and streamed lines."""

from __future__ import annotations

import csv
import io
import json

import pytest

from facesense.errors import ObjectNotFound
from facesense.outputs.jsonl import iter_jsonl, iter_lines
from facesense.outputs.pages import ERRORS, STRIDE, read_rows
from facesense.outputs.results import (
    Summary,
    bounded,
    csv_header,
    csv_row,
    read_page,
    shard_rows,
    write_results,
)
from facesense.outputs.stats import ci95
from facesense.storage import LocalStore
from facesense.storage.layout import job_key, plan_key, shard_key

CLASSES = ["happy", "sad"]


def scored(image: str, label: str, confidence: float) -> dict:
    other = 1.0 - confidence
    probs = {label: confidence, next(c for c in CLASSES if c != label): other}
    return {"image": image, "group": image.partition("/")[0] if "/" in image else "",
            "label": label, "confidence": confidence, "probs": probs, "error": None}


def failed(image: str, reason: str = "cannot decode image") -> dict:
    return {"image": image, "group": image.partition("/")[0] if "/" in image else "",
            "label": None, "confidence": None, "probs": None, "error": reason}


ROWS = [
    scored("v1/a.jpg", "happy", 0.9),
    scored("v1/b.jpg", "happy", 0.7),
    scored("v1/c.jpg", "sad", 0.6),
    failed("v1/d.jpg"),
    scored("v2/a.jpg", "sad", 0.8),
    failed("v3/x.jpg", "too large"),
    scored("top.jpg", "happy", 0.5),
]


# --- summary ------------------------------------------------------------------------------


def test_summary_counts_shares_and_mean_confidence_per_group():
    summary = Summary(CLASSES)
    for row in ROWS:
        summary.add(row)
    data = summary.to_dict()
    assert data["classes"] == CLASSES
    assert list(data["groups"]) == ["", "v1", "v2", "v3"]  # sorted
    v1 = data["groups"]["v1"]
    assert (v1["images"], v1["scored"], v1["failed"]) == (4, 3, 1)
    assert v1["labels"]["happy"] == {"count": 2, "share": round(2 / 3, 6),
                                     "ci95": ci95(2, 3), "mean_confidence": 0.8}
    assert v1["labels"]["sad"] == {"count": 1, "share": round(1 / 3, 6), "ci95": ci95(1, 3),
                                   "mean_confidence": 0.6}
    assert data["groups"]["v2"]["labels"]["happy"] == {"count": 0, "share": 0.0,
                                                       "ci95": ci95(0, 1),
                                                       "mean_confidence": None}
    assert data["groups"][""]["labels"]["happy"]["count"] == 1


def test_summary_overall_counts_every_row_and_its_failures():
    summary = Summary(CLASSES)
    for row in ROWS:
        summary.add(row)
    overall = summary.to_dict()["overall"]
    assert (overall["images"], overall["scored"], overall["failed"]) == (7, 5, 2)
    assert overall["labels"]["happy"]["count"] == 3
    assert overall["labels"]["happy"]["share"] == 0.6
    assert overall["labels"]["happy"]["mean_confidence"] == pytest.approx(0.7)
    assert overall["labels"]["sad"]["mean_confidence"] == pytest.approx(0.7)


def test_group_with_only_failures_has_zero_shares():
    summary = Summary(CLASSES)
    summary.add(failed("v3/x.jpg"))
    v3 = summary.to_dict()["groups"]["v3"]
    assert (v3["images"], v3["scored"], v3["failed"]) == (1, 0, 1)
    assert all(v == {"count": 0, "share": 0.0, "ci95": None, "mean_confidence": None}
               for v in v3["labels"].values())


def test_empty_summary_is_well_formed():
    data = Summary(CLASSES).to_dict()
    assert data["groups"] == {}
    assert data["overall"]["images"] == 0


# --- CSV ----------------------------------------------------------------------------------


def test_csv_header_has_one_probability_column_per_class():
    assert csv_header(["happy", "sad", "angry"]) == [
        "image", "group", "label", "confidence", "p_happy", "p_sad", "p_angry", "error"]


def test_csv_row_of_a_scored_image():
    assert csv_row(scored("v1/a.jpg", "happy", 0.9), CLASSES) == [
        "v1/a.jpg", "v1", "happy", "0.900000", "0.900000", "0.100000", ""]


def test_csv_row_of_a_failed_image_has_empty_scores_and_the_reason():
    assert csv_row(failed("v1/d.jpg"), CLASSES) == [
        "v1/d.jpg", "v1", "", "", "", "", "cannot decode image"]


def test_csv_row_leaves_a_missing_class_probability_empty():
    row = {**scored("a.jpg", "happy", 0.9), "probs": {"happy": 0.9}}
    assert csv_row(row, CLASSES)[4:6] == ["0.900000", ""]


# --- merged files and pages ---------------------------------------------------------------


def test_write_results_writes_jsonl_csv_and_summary(tmp_path):
    store = LocalStore(tmp_path)
    data = write_results(store, "job1", iter(ROWS), CLASSES)
    lines = store.get(job_key("job1", "results.jsonl")).decode().splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    table = list(csv.reader(io.StringIO(store.get(job_key("job1", "results.csv")).decode())))
    assert table[0] == csv_header(CLASSES)
    assert table[1:] == [[str(c) for c in csv_row(r, CLASSES)] for r in ROWS]
    assert json.loads(store.get(job_key("job1", "summary.json"))) == data
    assert data["overall"]["images"] == len(ROWS)


def test_csv_quotes_commas_and_keeps_unicode(tmp_path):
    store = LocalStore(tmp_path)
    rows = [scored("Café, Pärís/ä \"1\".jpg", "happy", 0.9)]
    write_results(store, "job2", rows, CLASSES)
    table = list(csv.reader(io.StringIO(store.get(job_key("job2", "results.csv"))
                                        .decode("utf-8"))))
    assert table[1][:2] == ["Café, Pärís/ä \"1\".jpg", "Café, Pärís"]


def test_read_page_returns_rows_from_offset_up_to_limit(tmp_path):
    store = LocalStore(tmp_path)
    rows = [scored(f"v1/{i:02d}.jpg", "happy", 0.9) for i in range(10)]
    write_results(store, "job3", rows, CLASSES)
    assert read_page(store, "job3", 0, 3) == rows[:3]
    assert read_page(store, "job3", 3, 3) == rows[3:6]
    assert read_page(store, "job3", 8, 5) == rows[8:]
    assert read_page(store, "job3", 10, 5) == []
    assert read_page(store, "job3", 0, 100) == rows


def test_read_page_of_a_job_without_results_is_empty(tmp_path):
    assert read_page(LocalStore(tmp_path), "nojob", 0, 10) == []


def test_shard_rows_reads_every_shard_in_order(tmp_path):
    store = LocalStore(tmp_path)
    shards = [ROWS[:3], ROWS[3:4], ROWS[4:]]
    for index, rows in reversed(list(enumerate(shards))):
        store.put(shard_key("job4", index),
                  b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    assert list(shard_rows(store, "job4", range(3))) == ROWS


def test_shard_rows_raises_on_a_missing_shard(tmp_path):
    store = LocalStore(tmp_path)
    store.put(shard_key("job5", 0), b"")
    with pytest.raises(ObjectNotFound):
        list(shard_rows(store, "job5", range(2)))


def test_shard_and_plan_keys_are_deterministic():
    assert shard_key("j", 3) == "jobs/j/shards/000003.jsonl"
    assert plan_key("j", 12) == "jobs/j/plan/000012.json"


# --- streamed lines -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64])
def test_iter_lines_splits_across_chunk_boundaries(chunk_size):
    data = b"first\nsecond line\n\nx\n" + b"y" * 20 + b"\nlast-without-newline"
    assert list(iter_lines(io.BytesIO(data), chunk_size)) == data.split(b"\n")


@pytest.mark.parametrize("chunk_size", [1, 4, 1 << 16])
def test_iter_lines_yields_no_empty_line_after_a_final_newline(chunk_size):
    assert list(iter_lines(io.BytesIO(b"a\nbb\n"), chunk_size)) == [b"a", b"bb"]
    assert list(iter_lines(io.BytesIO(b""), chunk_size)) == []


def test_iter_jsonl_skips_blank_lines():
    stream = io.BytesIO(b'{"a": 1}\n\n  \n{"a": 2}\n')
    assert list(iter_jsonl(stream)) == [{"a": 1}, {"a": 2}]


def many_rows(n: int) -> list[dict]:
    """n rows over 3 groups: every 7th failed, the rest happy or sad by turns."""
    out = []
    for i in range(n):
        failed = i % 7 == 0
        label = None if failed else ("happy" if i % 2 else "sad")
        out.append({"image": f"g{i % 3}/{i:05d}.jpg", "group": f"g{i % 3}", "label": label,
                    "confidence": None if failed else 0.9,
                    "probs": None if failed else {"happy": 0.9, "sad": 0.1},
                    "error": "broken" if failed else None})
    return out


@pytest.mark.parametrize("label, group", [("", None), ("happy", None), (ERRORS, None),
                                          ("sad", "g1")])
def test_read_rows_matches_a_full_scan_for_every_view(tmp_path, label, group):
    store, rows = LocalStore(tmp_path), many_rows(3000)
    write_results(store, "job9", rows, ["happy", "sad"])
    expected = [(i, r) for i, r in enumerate(rows)
                if (group is None or r["group"] == group)
                and (r["error"] if label == ERRORS else (not label or r["label"] == label))]
    for offset in (0, 1, STRIDE - 1, STRIDE, 2 * STRIDE + 5, len(expected) - 3, len(expected)):
        assert read_rows(store, "job9", offset, 10, label, group) == expected[offset:offset + 10]


def test_a_page_at_the_end_decodes_no_more_rows_than_one_at_the_start(tmp_path, monkeypatch):
    import facesense.outputs.pages as pages

    store = LocalStore(tmp_path)
    write_results(store, "big", many_rows(20_000), ["happy", "sad"])
    decoded = []

    def counting(stream):
        for row in iter_jsonl(stream):
            decoded.append(1)
            yield row

    monkeypatch.setattr(pages, "iter_jsonl", counting)
    assert len(read_page(store, "big", 0, 100)) == 100
    at_start, decoded[:] = len(decoded), []
    assert [r["image"] for r in read_page(store, "big", 19_900, 100)][-1] == "g1/19999.jpg"
    assert len(decoded) <= at_start + STRIDE  # not 20,000


def test_a_bounded_summary_keeps_the_largest_groups_and_adds_up_the_rest():
    summary = Summary(["happy", "sad"])
    for group, n in (("big", 5), ("mid", 3), ("s1", 1), ("s2", 1)):
        for i in range(n):
            summary.add({"group": group, "label": "happy" if i % 2 == 0 else "sad",
                         "confidence": 0.8, "error": None})
    summary.add({"group": "s2", "label": None, "confidence": None, "error": "broken"})
    full = summary.to_dict()
    out = bounded(full, 2)
    assert list(out["groups"]) == ["big", "mid"] and out["overall"] == full["overall"]
    other = out["other_groups"]
    assert (other["groups"], other["images"], other["scored"], other["failed"]) == (2, 3, 2, 1)
    assert other["labels"]["happy"] == {"count": 2, "share": 1.0, "ci95": ci95(2, 2),
                                        "mean_confidence": 0.8}
    assert other["labels"]["sad"]["count"] == 0
    assert bounded(full, 4) == full  # few enough groups: untouched


@pytest.mark.parametrize("hostile", ['=HYPERLINK("x")', "+SUM(1)", "-cmd|calc!A0", "@A1",
                                     "\tTAB", "\rCR"])
def test_csv_cells_that_would_start_a_formula_are_made_text_and_json_stays_verbatim(
        tmp_path, hostile):
    row = {"image": f"{hostile}/{hostile}.jpg", "group": hostile, "label": None,
           "confidence": None, "probs": None, "error": hostile}
    cells = csv_row(row, ["happy", "sad"])
    assert cells[0] == "'" + row["image"] and cells[1] == "'" + hostile
    assert cells[-1] == "'" + hostile
    store = LocalStore(tmp_path)
    write_results(store, "inj", [row], ["happy", "sad"])
    table = list(csv.reader(io.StringIO(store.get(job_key("inj", "results.csv")).decode(),
                                        newline="")))
    assert table[1][1] == "'" + hostile
    assert json.loads(store.get(job_key("inj", "results.jsonl")))["group"] == hostile


def test_ordinary_cells_are_left_alone():
    row = {"image": "variant_a/x.jpg", "group": "variant_a", "label": "happy",
           "confidence": 0.9, "probs": {"happy": 0.9, "sad": 0.1}, "error": None}
    assert csv_row(row, ["happy", "sad"])[:3] == ["variant_a/x.jpg", "variant_a", "happy"]
