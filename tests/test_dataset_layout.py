"""A training dataset's layout is checked at submission: a 400 naming the problem, on a local
folder and on an S3 prefix alike, from a listing whose size does not grow with the dataset."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from facesense.inputs.dataset_check import check_dataset
from facesense.storage import S3Store
from tests.conftest import BUCKET
from tests.imagegen import upload_folder

PNG = b"\x89PNG\r\n\x1a\n"  # the layout check reads names only, never pixels


def build(root: Path, files: list[str]) -> Path:
    """A folder holding these (relative) files, and any folder ending in '/'."""
    for name in files:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(PNG)
    return root


BAD = {  # layout -> (files, what the 400 says)
    "loose": (["a.png", "b.jpg"], "0 class folder(s) (none) (its images lie directly in it"),
    "one_class": (["happy/a.png", "happy/b.png"], "1 class folder(s) (happy)"),
    "empty_class": (["happy/a.png", "sad/notes.txt"], "class folder(s) with no images: sad"),
    "reserved": (["happy/a.png", "!errors/b.png"], "class folder(s) !errors: a class name may not"),
    "val_extra": (["train/happy/a.png", "train/sad/b.png", "val/happy/c.png", "val/angry/d.png"],
                  "val has classes missing from train/: angry"),
    "split_one": (["train/happy/a.png", "val/happy/b.png"], "train has 1 class folder(s)"),
    "nothing": ([], "0 class folder(s) (none); training needs at least 2"),
}
GOOD = {
    "folders": ["happy/a.png", "sad/b.JPG", ".hidden/c.png", "happy/deep/d.png"],
    "split": ["train/happy/a.png", "train/sad/b.png", "val/happy/c.png", "val/sad/d.png"],
}


def submit(client, dataset: str):
    return client.post("/v1/jobs", json={"type": "train", "dataset": dataset})


@pytest.mark.parametrize("layout", sorted(BAD))
def test_a_local_folder_in_the_wrong_layout_is_a_400_naming_the_problem(client, base_dir, unique,
                                                                      layout):
    files, message = BAD[layout]
    root = build(base_dir / f"layout-{layout}-{unique}", files)
    root.mkdir(exist_ok=True)
    resp = submit(client, str(root))
    assert resp.status_code == 400, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "bad_dataset_layout" and message in error["message"], error
    assert str(root) in error["message"]  # which dataset, as the caller named it


@pytest.mark.parametrize("layout", sorted(BAD))
def test_an_s3_prefix_in_the_wrong_layout_is_the_same_400(client, s3, base_dir, unique, layout):
    files, message = BAD[layout]
    root = build(base_dir / f"s3-layout-{layout}-{unique}", files)
    root.mkdir(exist_ok=True)
    upload_folder(s3, BUCKET, f"datasets/{unique}/{layout}", root)
    resp = submit(client, f"s3://{BUCKET}/datasets/{unique}/{layout}")
    assert resp.status_code == 400, resp.get_json()
    assert message in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("layout", sorted(GOOD))
def test_a_dataset_in_either_layout_is_queued(client, s3, base_dir, unique, layout):
    root = build(base_dir / f"good-{layout}-{unique}", GOOD[layout])
    upload_folder(s3, BUCKET, f"datasets/{unique}/good-{layout}", root)
    for dataset in (str(root), f"s3://{BUCKET}/datasets/{unique}/good-{layout}"):
        resp = submit(client, dataset)
        assert resp.status_code == 202, resp.get_json()
        client.post(f"/v1/jobs/{resp.get_json()['id']}/cancel")  # nothing to train here


def list_requests(store: S3Store) -> list[str]:
    """The S3 listing requests the store's client sends from now on (botocore's own events)."""
    seen: list[str] = []
    store.client.meta.events.register("before-call.s3.ListObjectsV2",
                                      lambda params, **_: seen.append(params["query_string"]["prefix"]))
    return seen


def test_the_check_lists_per_class_not_per_image(s3, settings, unique):
    # Given two S3 datasets of 2 classes, one with 4 images, one with 2,400
    def put(key):
        s3.put_object(Bucket=BUCKET, Key=key, Body=PNG)

    small, big = f"datasets/{unique}/small", f"datasets/{unique}/big"
    keys = [f"{small}/{c}/{i}.png" for c in ("happy", "sad") for i in range(2)]
    keys += [f"{big}/{c}/{i:04d}.png" for c in ("happy", "sad") for i in range(1200)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))
    counts = {}
    for name, prefix in (("small", small), ("big", big)):
        store = S3Store(BUCKET, prefix, endpoint_url=settings.s3_endpoint_url)
        seen = list_requests(store)
        # When each is checked
        assert check_dataset(store, name) == ["happy", "sad"]
        counts[name] = len(seen)
    # Then both cost the same few requests: the classes, then one page per class
    assert counts["small"] == counts["big"] == 3, counts


def test_a_root_of_loose_files_costs_a_bounded_number_of_requests(s3, settings, unique):
    prefix = f"datasets/{unique}/loose"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{i:05d}.png", Body=PNG),
                      range(3500)))
    store = S3Store(BUCKET, prefix, endpoint_url=settings.s3_endpoint_url)
    seen = list_requests(store)
    with pytest.raises(Exception, match="its images lie directly in it"):
        check_dataset(store, "loose")
    assert len(seen) <= 4, seen  # 3 pages looking for folders, 1 for an image (of 4 + 1)
