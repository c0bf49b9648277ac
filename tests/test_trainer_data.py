"""Datasets in ImageFolder layout: classes, stratified split, corrupt images, clear errors."""

from __future__ import annotations

import pytest

from facesense.storage import LocalStore
from facesense.synthetic import make_dataset
from facesense.trainparams import TrainParams
from runtime.preprocess import spec_for
from trainer.data import DatasetError, load_data, stratified_split

SPEC = spec_for(64)


def load(root, tmp_path, **kw):
    return load_data(LocalStore(root), val_split=kw.get("val_split", 0.25), seed=0, spec=SPEC,
                     cache_dir=tmp_path / "cache", max_pixels=10**8)


def test_classes_are_sorted_folders_and_the_split_is_stratified(tmp_path):
    make_dataset(tmp_path / "d", per_class=8)
    data = load(tmp_path / "d", tmp_path)
    assert data.classes == ["happy", "sad"]
    assert data.counts == {"happy": {"train": 6, "val": 2}, "sad": {"train": 6, "val": 2}}
    assert tuple(data.train_x.shape[1:]) == (SPEC["resize_size"], SPEC["resize_size"], 3)
    assert tuple(data.val_x.shape[1:]) == (64, 64, 3)
    again = load(tmp_path / "d", tmp_path)
    assert again.val_keys == data.val_keys and again.fingerprint == data.fingerprint


def test_the_split_is_seeded():
    keys = {"a": [f"a/{i}.jpg" for i in range(10)], "b": [f"b/{i}.jpg" for i in range(10)]}
    assert stratified_split(keys, 0.3, 1) == stratified_split(keys, 0.3, 1)
    assert stratified_split(keys, 0.3, 1) != stratified_split(keys, 0.3, 2)


def test_an_explicit_train_val_layout_is_used_as_is(tmp_path):
    make_dataset(tmp_path / "d" / "train", per_class=4)
    make_dataset(tmp_path / "d" / "val", per_class=2, seed=9)
    data = load(tmp_path / "d", tmp_path)
    assert data.counts == {"happy": {"train": 4, "val": 2}, "sad": {"train": 4, "val": 2}}
    assert all(k.startswith("val/") for k in data.val_keys)


def test_fewer_than_two_classes_fails_with_a_message(tmp_path):
    make_dataset(tmp_path / "d", per_class=3)
    for p in (tmp_path / "d" / "sad").iterdir():
        p.unlink()
    (tmp_path / "d" / "sad").rmdir()
    with pytest.raises(DatasetError, match=r"found 1 class folder\(s\) \(happy\).*at least 2"):
        load(tmp_path / "d", tmp_path)


def test_an_empty_class_folder_fails_with_its_name(tmp_path):
    make_dataset(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "neutral").mkdir()
    with pytest.raises(DatasetError, match="no images: neutral"):
        load(tmp_path / "d", tmp_path)


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    make_dataset(tmp_path / "d", per_class=6)
    (tmp_path / "d" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "d" / "sad" / "empty.png").write_bytes(b"")
    data = load(tmp_path / "d", tmp_path)
    assert sorted(s["image"].split("/")[-1] for s in data.skipped) == ["broken.jpg", "empty.png"]
    assert sum(c["train"] + c["val"] for c in data.counts.values()) == 12


def test_a_class_with_only_corrupt_images_fails(tmp_path):
    make_dataset(tmp_path / "d", per_class=3)
    for p in (tmp_path / "d" / "sad").iterdir():
        p.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="sad"):
        load(tmp_path / "d", tmp_path)


def test_params_have_defaults_and_reject_unknown_names():
    assert TrainParams.parse({}).epochs >= 1
    with pytest.raises(Exception, match=r"unknown param.*colour"):
        TrainParams.parse({"colour": 1})
    with pytest.raises(Exception, match="image_size must be between 63"):
        TrainParams.parse({"image_size": 32})
    assert TrainParams.parse({"lr": 1}).lr == 1.0


def test_decoded_images_live_in_an_unlinked_file_and_read_back_exactly(tmp_path):
    import torch

    from runtime.preprocess import preprocess

    make_dataset(tmp_path / "d", per_class=6)
    data = load(tmp_path / "d", tmp_path)
    # What was decoded is read back, by index list and by slice, as preprocessing made it
    key = data.val_keys[1]
    expected = preprocess((tmp_path / "d" / key).read_bytes(), SPEC)
    assert torch.equal(data.val_x[[1]][0], torch.from_numpy(expected))
    assert torch.equal(data.val_x[1:2][0], data.val_x[torch.tensor([1])][0])
    assert data.train_x[0:len(data.train_x)].shape == data.train_x.shape
    # and no decoded file is left on disk (the descriptor alone holds it)
    assert list((tmp_path / "cache" / "decoded").iterdir()) == []


def test_ordered_map_keeps_order_and_never_runs_ahead_more_than_its_window():
    from trainer.images import ordered_map

    started = []
    consumed = 0
    for n, value in enumerate(ordered_map(lambda i: started.append(i) or i * i, iter(range(500)),
                                          threads=4, window=8)):
        assert value == n * n
        consumed += 1
        assert len(started) - consumed <= 8  # decoded images waiting: a window, not the set
    assert consumed == 500


def test_a_decode_cut_short_by_an_error_gives_its_file_back(tmp_path):
    import os

    from trainer.images import DiskImagesWriter

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError), DiskImagesWriter(tmp_path, side=4) as images:
        images.append(__import__("numpy").zeros((4, 4, 3), "uint8"))
        raise RuntimeError("the store went away mid-decode")
    assert len(os.listdir("/proc/self/fd")) == before  # the descriptor (and its data) is gone
    assert list(tmp_path.iterdir()) == []
