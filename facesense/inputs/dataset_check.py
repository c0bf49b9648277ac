"""A training dataset's layout, checked when the job is submitted: class sub-folders (or train/ and
val/ holding them), at least two classes, an image in each. The trainer checks it all again on
the images it reads; this is the cheap, bounded look that turns a run failing minutes later into
a 400 naming the problem at once."""

from __future__ import annotations

from itertools import islice

from facesense.errors import BadRequest, TransientError
from facesense.inputs.keys import is_image_key
from facesense.storage import Store
from facesense.storage.s3 import S3Store

MAX_LIST_PAGES = 3  # S3 listing requests per folder level (1000 entries each)
MAX_CLASSES_CHECKED = 64  # classes looked into for an image; beyond, the trainer finds out
MAX_KEYS_PER_CLASS = 1000  # keys read in one class while looking for an image (one S3 page)
LAYOUT = "root/<class>/<image>, or root/train/<class>/<image> and root/val/<class>/<image>"


class DatasetLayoutError(BadRequest):
    """A training dataset is not in ImageFolder layout: no class folders, one class, no images."""

    code = "bad_dataset_layout"


def check_dataset(store: Store, where: str) -> list[str] | None:
    """The dataset's class names, or DatasetLayoutError naming what is wrong with its layout;
    None when the store can't answer now (the worker retries, and checks it again). At most a
    bounded number of keys is read, whatever the dataset's size."""
    try:
        return _check(store, where)
    except TransientError:  # an S3 hiccup must not refuse a job the worker could run
        return None


def _check(store: Store, where: str) -> list[str]:
    """check_dataset, outages included."""
    top = _folders(store, "")
    if "train" in top and "val" in top:
        classes = _classes(store, "train/", f"{where}/train")
        val = _classes(store, "val/", f"{where}/val", least=1)
        extra = sorted(set(val) - set(classes))
        if extra:
            raise DatasetLayoutError(f"{where}/val has classes missing from train/: "
                                     f"{', '.join(extra)}")
        return classes
    return _classes(store, "", where, top=top)


def _classes(store: Store, prefix: str, where: str, least: int = 2,
             top: list[str] | None = None) -> list[str]:
    """The class folders under prefix, checked: enough of them, names allowed, images in each."""
    classes = top if top is not None else _folders(store, prefix)
    if len(classes) < least:
        loose = _has_image(store, prefix.rstrip("/"))
        hint = (" (its images lie directly in it: put each class's images in a sub-folder "
                "named after the class)" if loose else "")
        raise DatasetLayoutError(
            f"{where} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}){hint}; "
            f"training needs at least {least}: {LAYOUT}")
    reserved = [c for c in classes if c.startswith("!")]
    if reserved:  # the results' views of failed and faceless rows are named so
        raise DatasetLayoutError(f"{where}: class folder(s) {', '.join(reserved)}: a class name may "
                                 "not start with '!' (the results' filters !errors and !no_face)")
    empty = [c for c in classes[:MAX_CLASSES_CHECKED] if _has_image(store, prefix + c) is False]
    if empty:
        raise DatasetLayoutError(f"{where}: class folder(s) with no images: {', '.join(empty)} "
                                 "(images are .jpg, .jpeg, .png, .webp, .bmp, .gif or .tif files)")
    return classes


def _folders(store: Store, prefix: str) -> list[str]:
    """Visible sub-folders directly under prefix (hidden ones and __MACOSX are not classes)."""
    if isinstance(store, S3Store):
        names = store.folders(prefix.rstrip("/"), max_pages=MAX_LIST_PAGES)
    else:
        names = store.folders(prefix.rstrip("/"))
    return [n for n in names if n and not n.startswith(".") and n != "__MACOSX"]


def _has_image(store: Store, prefix: str) -> bool | None:
    """True if an image lies under prefix, False if none does, None if the first keys read
    held none but there are more (it can't be told cheaply: the trainer will)."""
    keys = list(islice(store.list(prefix), MAX_KEYS_PER_CLASS))
    if any(is_image_key(k) for k in keys):
        return True
    return None if len(keys) == MAX_KEYS_PER_CLASS else False
