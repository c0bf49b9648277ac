"""Manifest jobs: a CSV or JSON Lines file naming the images and the analyst's columns, checked
line by line at submission, scored by the real worker, its columns joined into every row."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest

from api import create_app
from tests.conftest import BUCKET, wait_for_job
from tests.imagegen import corrupt_files, make_folder, upload_folder

VARIANTS = {"variant_a": "A", "variant_b": "B", "variant_c": "C"}
COLUMNS = ["image", "variant", "participant", "session"]


@pytest.fixture(scope="module")
def folder(base_dir) -> Path:
    """120 small images over three variant folders, and a CSV manifest beside them."""
    root = base_dir / "manifest-study"
    make_folder(root, 120, groups=tuple(VARIANTS), max_side=64, corrupt=False)
    lines = manifest_lines(root)
    write_csv(root / "study.csv", lines)
    return root


def manifest_lines(root: Path) -> list[dict]:
    """One line per image: its path relative to root, its variant (a column, not the folder),
    a participant (one starts a spreadsheet formula) and a session."""
    out = []
    for i, path in enumerate(sorted(root.rglob("img*"))):
        out.append({"image": path.relative_to(root).as_posix(),
                    "variant": VARIANTS[path.parent.name],
                    "participant": "=HYPERLINK(1)" if i == 7 else f"p{i % 30:02d}",
                    "session": f"s{i % 4}"})
    return out


def write_csv(path: Path, lines: list[dict], columns: list[str] = COLUMNS) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(lines)


def all_rows(client, job_id: str) -> list[dict]:
    page = client.get(f"/v1/jobs/{job_id}/results?limit=1000").get_json()
    assert page["next_offset"] is None
    return page["rows"]


def check_study(client, record: dict, lines: list[dict], missing: set[str] = frozenset()):
    """The job's rows carry their lines' columns, its summary groups by variant."""
    assert record["status"] == "succeeded", record
    job_id = record["id"]
    rows = all_rows(client, job_id)
    assert [r["image"] for r in rows] == [x["image"] for x in lines]  # the manifest's order
    for row, line in zip(rows, lines, strict=True):
        assert row["meta"] == {k: v for k, v in line.items() if k != "image"}
        assert row["group"] == line["variant"]
        assert (row["error"] is not None) == (row["image"] in missing)
    summary = record["summary"]
    assert sorted(summary["groups"]) == ["A", "B", "C"]
    assert {g: t["images"] for g, t in summary["groups"].items()} == {
        g: sum(1 for x in lines if x["variant"] == g) for g in "ABC"}
    assert summary["overall"]["failed"] == len(missing)
    assert record["manifest"]["columns"] == ["variant", "participant", "session"]
    assert record["manifest"]["group_by"] == "variant"
    table = list(csv.reader(io.StringIO(
        client.get(f"/v1/jobs/{job_id}/results?format=csv").get_data(as_text=True))))
    assert table[0][-4:] == ["error", "variant", "participant", "session"]
    assert table[8][-2] == "'=HYPERLINK(1)"  # the formula guard, in the CSV only
    assert rows[7]["meta"]["participant"] == "=HYPERLINK(1)"
    return rows


def test_a_csv_manifest_scores_its_images_with_their_columns(client, worker, folder):
    r = client.post("/v1/jobs", json={"type": "classify", "manifest": str(folder / "study.csv"),
                                      "group_by": "variant"})
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["manifest"]["rows"] == 120
    record = wait_for_job(client, r.get_json()["id"])
    assert record["progress"]["total"] == 120
    check_study(client, record, manifest_lines(folder))


def test_a_json_lines_manifest_on_s3_works_the_same_way(client, worker, folder, s3, unique):
    prefix = f"manifests/{unique}"
    upload_folder(s3, BUCKET, prefix, folder)
    lines = [*manifest_lines(folder), {"image": "variant_c/gone.jpg", "variant": "C",
                                       "participant": "p99", "session": "s9"}]
    body = "".join(json.dumps(x) + "\n" for x in lines)
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/study.jsonl", Body=body.encode())
    r = client.post("/v1/jobs", json={"type": "classify", "group_by": "variant",
                                      "manifest": f"s3://{BUCKET}/{prefix}/study.jsonl"})
    assert r.status_code == 202, r.get_json()
    record = wait_for_job(client, r.get_json()["id"])
    rows = check_study(client, record, lines, missing={"variant_c/gone.jpg"})
    assert rows[-1]["error"] == "image not found in the source"  # an error row, not a 4xx


def test_an_uploaded_manifest_of_absolute_paths_and_its_retry(client, worker, folder):
    """Without group_by, a line's group is its image's folder; a listed image that can't be
    read is an error row, and a retry of it keeps its line's columns."""
    for name, data in corrupt_files().items():
        (folder / "broken").mkdir(exist_ok=True)
        (folder / "broken" / name).write_bytes(data)
    paths = [*sorted(folder.glob("variant_a/img*"))[:4], folder / "broken" / "truncated.jpg"]
    text = "image,participant\n" + "".join(f"{p},p{i}\n" for i, p in enumerate(paths))
    r = client.post("/v1/jobs", data={"type": "classify",
                                      "manifest": (io.BytesIO(text.encode()), "mine.csv")},
                    content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    record = wait_for_job(client, r.get_json()["id"])
    rows = all_rows(client, record["id"])
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    assert [r["meta"] for r in rows] == [{"participant": f"p{i}"} for i in range(5)]
    assert [r["group"] for r in rows] == ["variant_a"] * 4 + ["broken"]
    assert [bool(r["error"]) for r in rows] == [False] * 4 + [True]
    retry = client.post(f"/v1/jobs/{record['id']}/retry", json={})
    assert retry.status_code == 202, retry.get_json()
    again = wait_for_job(client, retry.get_json()["id"])
    assert [(r["image"], r["group"], r["meta"]) for r in all_rows(client, again["id"])] == [
        (str(paths[-1]), "broken", {"participant": "p4"})]


def test_other_jobs_rows_carry_no_meta(client, worker, folder):
    record = wait_for_job(client, client.post("/v1/jobs", json={
        "type": "classify", "source": str(folder / "variant_b")}).get_json()["id"])
    assert all("meta" not in row for row in all_rows(client, record["id"]))
    header = client.get(f"/v1/jobs/{record['id']}/results?format=csv").get_data(as_text=True)
    assert header.splitlines()[0] == "image,group,label,confidence,p_happy,p_sad,error"


def refusal(client, folder: Path, text: str, name: str = "bad.csv", **body):
    """Submit a manifest written beside the study's images; (status, error message)."""
    (folder / name).write_text(text)
    r = client.post("/v1/jobs", json={"type": "classify", "manifest": str(folder / name), **body})
    return r.status_code, r.get_json()["error"]["message"]


def test_bad_manifests_are_refused_naming_the_line(client, folder, base_dir, settings):
    a, b = "variant_a/img0000.jpg", "variant_b/img0001.png"
    assert (folder / a).exists() and (folder / b).exists()
    outside = Path(base_dir).parent / "elsewhere.jpg"
    cases = [
        ("photo,variant\nx.jpg,A\n", 400, "line 1: no 'image' column"),
        (f"image,variant\n{a},A\n{outside},B\n", 422,
         "line 3: the image is outside the allowed roots"),
        (f"image,variant\n{a},A\n{b},B\n./{a},A\n", 400,
         "line 4: duplicate row: its image is already listed on line 2"),
        (f"image,variant\n{a},A\nvariant_a/nope.jpg,A\n", 422,
         "line 3: the image does not exist"),
        (f"image,variant\n{a},A,extra\n", 400, "line 2: 3 cells, but the header has 2 columns"),
        ("image,variant\n../../../../etc/passwd,A\n", 422,
         "line 2: the image is outside the allowed roots"),
        (f"image,variant\nftp://h/{a},A\n", 400, "line 2: unsupported image"),
    ]
    for text, status, message in cases:
        got = refusal(client, folder, text)
        assert got[0] == status and message in got[1], (text, got)
    assert refusal(client, folder, f"image,variant\n{a},A\n", group_by="cell") == (
        400, "group_by 'cell' is not a column of the manifest")
    jsonl = f'{{"image": "{a}", "variant": "A"}}\n{{"image": "{b}", "variant": ["B"]}}\n'
    got = refusal(client, folder, jsonl, name="bad.jsonl")
    assert got == (400, "line 2: value 2 is a list; values must be text, numbers, "
                        "true/false or null")
    assert refusal(client, folder, "", name="gone.csv", manifest=str(folder / "nope.csv"))[0] == 422
    r = client.post("/v1/jobs", json={"type": "classify", "source": str(folder), "group_by": "x"})
    assert r.status_code == 400


def test_an_oversized_manifest_is_refused_naming_the_first_line_past_the_cap(settings, folder):
    small = create_app(dataclasses.replace(settings, manifest_max_rows=3)).test_client()
    images = sorted(p.relative_to(folder).as_posix() for p in folder.glob("variant_a/img*"))
    text = "image\n" + "\n".join(images[:5]) + "\n"
    assert refusal(small, folder, text) == (
        413, "line 5: the manifest lists more than 3 images (FACESENSE_MANIFEST_MAX_ROWS)")
    r = small.post("/v1/jobs", data={"type": "classify",
                                     "manifest": (io.BytesIO(text.encode()), "m.csv")},
                   content_type="multipart/form-data")
    assert r.status_code == 400 and "line 2: the image" in r.get_json()["error"]["message"]
    tiny = create_app(dataclasses.replace(settings, manifest_max_bytes=10)).test_client()
    assert refusal(tiny, folder, text)[0] == 413
