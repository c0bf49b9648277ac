"""Labelled datasets in ImageFolder layout: classes, a stratified split, a local cache, decoding."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from facesense.errors import FacesenseError, ObjectNotFound
from facesense.inputs.keys import is_image_key
from facesense.storage import LocalStore, Store, TooLarge, read_limited
from runtime.faces import LargestFace
from runtime.preprocess import ImageRejected, fit, preprocess
from runtime.preprocess import decode as decode_image
from trainer.images import DiskImages, DiskImagesWriter, ordered_map

log = logging.getLogger(__name__)


class DatasetError(FacesenseError):
    """The dataset can't be trained on: too few classes, an empty class, no images."""

    code = "bad_dataset"


@dataclass
class Dataset:
    """Decoded images ready for training: uint8 NHWC tensors and integer labels."""

    classes: list[str]
    train_x: DiskImages  # (N, resize, resize, 3): random crops are taken each epoch
    train_y: torch.Tensor
    val_x: DiskImages  # (M, size, size, 3): centre crops, exactly as inference sees them
    val_y: torch.Tensor
    val_keys: list[str]
    fingerprint: str
    counts: dict = field(default_factory=dict)  # per class: train, val
    skipped: list[dict] = field(default_factory=list)  # corrupt images: key and reason
    no_face: int = 0  # with faces on: images skipped because no face was found in them
    faces: dict | None = None  # with faces on: how they were found and cut (LargestFace.entry)


def find_layout(keys: list[str]) -> tuple[str, dict[str, list[str]], dict[str, list[str]] | None]:
    """('split' or 'folders', class -> keys for train (or all), class -> keys for val or None)."""
    by_top = defaultdict(list)
    for key in keys:
        top, sep, rest = key.partition("/")
        if sep:
            by_top[top].append(rest)
    if "train" in by_top and "val" in by_top:
        return "split", _by_class(by_top["train"], "train/"), _by_class(by_top["val"], "val/")
    return "folders", _by_class(keys, ""), None


def _by_class(keys: list[str], prefix: str) -> dict[str, list[str]]:
    out = defaultdict(list)
    for key in keys:
        cls, sep, _ = key.partition("/")
        if sep:
            out[cls].append(prefix + key)
    return dict(out)


def class_folders(source: Store, layout: str) -> set[str]:
    """Class folders that exist even with no images in them (local folders only)."""
    if not isinstance(source, LocalStore):
        return set()
    root = source.root / "train" if layout == "split" else source.root
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def stratified_split(by_class: dict[str, list[str]], val_split: float, seed: int):
    """Per class, a seeded shuffle; the first val_split share (at least one) is validation."""
    train, val = {}, {}
    for cls in sorted(by_class):
        keys = sorted(by_class[cls])
        random.Random(f"{seed}:{cls}").shuffle(keys)
        n_val = max(1, round(len(keys) * val_split))
        val[cls], train[cls] = keys[:n_val], keys[n_val:]
    return train, val


def check_classes(train: dict[str, list[str]], val: dict[str, list[str]] | None,
                  folders: set[str]) -> list[str]:
    """Sorted class names; fewer than 2, or an empty class, is an error that says which."""
    classes = sorted(set(train) | folders)
    if len(classes) < 2:
        raise DatasetError(f"found {len(classes)} class folder(s) ({', '.join(classes) or 'none'});"
                           " training needs at least 2: root/<class>/<image>")
    reserved = [c for c in classes if c.startswith("!")]
    if reserved:  # the gallery's views of failed and faceless rows are named so
        raise DatasetError(f"class folder(s) {', '.join(reserved)}: a class name may not start "
                           "with '!' (the results' filters !errors and !no_face are named so)")
    empty = [c for c in classes if not train.get(c)]
    if empty:
        raise DatasetError(f"class folder(s) with no images: {', '.join(empty)}")
    if val is not None:
        extra = sorted(set(val) - set(classes))
        if extra:
            raise DatasetError(f"val/ has classes missing from train/: {', '.join(extra)}")
    return classes


NO_FACE = "no face found"


def load_data(source: Store, *, val_split: float, seed: int, spec: dict, cache_dir: Path,
              max_pixels: int, max_bytes: int = 64 << 20, threads: int = 4,
              face: LargestFace | None = None) -> Dataset:
    """List, split, fetch once into the cache, and decode a labelled folder to local files.

    face, if given, cuts each image to its largest face; images without one are skipped and
    counted as no_face.
    """
    classes, train_keys, val_keys = split_keys(source, val_split, seed)
    decoding = Decoding(_cached_fetch(source, cache_dir, max_bytes), spec, cache_dir,
                        max_pixels=max_pixels, threads=threads, face=face)
    train_x, train_y, _ = decoding.split(train_keys, classes, spec["resize_size"])
    val_x, val_y, val_names = decoding.split(val_keys, classes, None)
    counts = {c: {"train": int((train_y == i).sum()), "val": int((val_y == i).sum())}
              for i, c in enumerate(classes)}
    unusable = [c for c, n in counts.items() if n["train"] == 0]
    if unusable:
        raise DatasetError(f"class(es) with no usable training images: {', '.join(unusable)} "
                           f"({len(decoding.skipped)} corrupt images skipped"
                           + (f", {len(decoding.no_face)} without a face)" if face else ")"))
    if len(val_y) == 0:
        raise DatasetError("no usable validation images" + (" (with a face)" if face else ""))
    return Dataset(classes, train_x, train_y, val_x, val_y, val_names, decoding.digest.hexdigest(),
                   counts, decoding.skipped, len(decoding.no_face), face and face.entry)


def split_keys(source: Store, val_split: float, seed: int):
    """The classes, and the training and validation keys by class, of a labelled folder
    (split here, or as its train/ and val/ folders say)."""
    keys = [k for k in source.list() if is_image_key(k)]
    layout, by_class, val_by_class = find_layout(keys)
    if layout == "folders":
        classes = check_classes(by_class, None, class_folders(source, layout))
        if any(len(by_class[c]) < 2 for c in classes):
            small = [c for c in classes if len(by_class[c]) < 2]
            raise DatasetError(f"class(es) with fewer than 2 images, too few to split: "
                               f"{', '.join(small)}")
        return classes, *stratified_split(by_class, val_split, seed)
    classes = check_classes(by_class, val_by_class, class_folders(source, layout))
    return classes, by_class, {c: sorted(val_by_class.get(c, [])) for c in classes}


class Decoding:
    """Decodes a dataset's images into the disk cache, split by split, keeping one digest of
    every image used (and of the face options: face crops are other data) and the images
    skipped: unreadable (skipped, with the reason) or without a face (no_face)."""

    def __init__(self, fetch, spec: dict, cache_dir: Path, *, max_pixels: int, threads: int,
                 face: LargestFace | None):
        self.fetch, self.spec, self.cache_dir = fetch, spec, cache_dir
        self.max_pixels, self.threads, self.face = max_pixels, threads, face
        self.digest = hashlib.sha256(json.dumps(face.entry, sort_keys=True).encode()
                                     if face else b"")
        self.skipped: list[dict] = []
        self.no_face: list[str] = []

    def split(self, keys: dict[str, list[str]], classes: list[str], crop: int | None):
        """One split's images (on disk), labels and keys, in class then key order."""
        items = [(k, classes.index(c)) for c in classes for k in sorted(keys.get(c, []))]
        ys, names = [], []
        with DiskImagesWriter(self.cache_dir / "decoded", crop or self.spec["input_size"]) as images:
            decoded = ordered_map(lambda it: self.one(it[0], crop), items, self.threads)
            for (key, label), (arr, part) in zip(items, decoded, strict=True):
                if arr is NO_FACE:
                    self.no_face.append(key)
                elif part is None:
                    self.skipped.append({"image": key, "error": arr})
                else:
                    self.digest.update(f"{key}:{part}\n".encode())
                    images.append(arr)
                    ys.append(label)
                    names.append(key)
            return images.finish(), torch.tensor(ys, dtype=torch.long), names

    def one(self, key: str, crop: int | None):
        """(the image's model input, its bytes' digest), or (why it is skipped, None)."""
        try:
            data = self.fetch(key)
            part = hashlib.sha256(data).hexdigest()
            if self.face is None:
                return preprocess(data, self.spec, max_pixels=self.max_pixels, crop=crop), part
            cut = self.face(decode_image(data, max_pixels=self.max_pixels))
            if cut is None:
                return NO_FACE, None
            return fit(cut, self.spec, crop=crop), part
        except (ImageRejected, ObjectNotFound, TooLarge) as e:
            return str(e), None


def _cached_fetch(source: Store, cache_dir: Path, max_bytes: int):
    """Local folders are read in place; remote images are fetched once into cache_dir."""
    if isinstance(source, LocalStore):
        return lambda key: read_limited(source, key, max_bytes)
    root = cache_dir / hashlib.sha256(source.uri.encode()).hexdigest()[:16]

    def fetch(key: str) -> bytes:
        path = root / key
        if path.is_file():
            return path.read_bytes()
        data = read_limited(source, key, max_bytes)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return data

    return fetch
