"""Pages of a job's results in time independent of their offset.

While results.jsonl is written, a sparse index notes, for every STRIDE-th row of each view (all
rows, the failed ones, those of each label), the row's index and the byte where it starts. A
page then reads from the nearest noted row before it: at most STRIDE rows are decoded before the
page, wherever it lies. Results written before the index existed are read from their first row.
"""

from __future__ import annotations

import json

from facesense.errors import ObjectNotFound
from facesense.outputs.jsonl import iter_jsonl
from facesense.storage import Store
from facesense.storage.layout import RESULTS_INDEX, RESULTS_JSONL, job_key

STRIDE = 256  # rows between two index entries: the most rows skipped to reach a page
# Views besides one per label (a class would need these odd names): failed images, and a
# faces job's images without a face.
ALL, ERRORS, NO_FACE = "", "!errors", "!no_face"


def view_of(row: dict) -> tuple[str, ...]:
    """The views a row belongs to: all rows, plus its label's, the failed or the faceless ones'."""
    if row.get("error"):
        return ALL, ERRORS
    if "face" in row and row["face"] is None:
        return ALL, NO_FACE
    return ALL, row.get("label") or ""


class PageIndex:
    """Built row by row beside results.jsonl; a few bytes per STRIDE rows of each view."""

    def __init__(self):
        self.seen: dict[str, int] = {}
        self.marks: dict[str, list[tuple[int, int]]] = {}

    def add(self, index: int, start: int, row: dict) -> None:
        """Note row number index, which starts at byte start of results.jsonl."""
        for view in view_of(row):
            n = self.seen.get(view, 0)
            if n % STRIDE == 0:
                self.marks.setdefault(view, []).append((index, start))
            self.seen[view] = n + 1

    def to_bytes(self) -> bytes:
        """The index as JSON: {stride, views: {view: [[row, byte], ...]}}."""
        return json.dumps({"stride": STRIDE, "views": self.marks}, separators=(",", ":")).encode()


def _start(store: Store, job_id: str, view: str, offset: int) -> tuple[int, int, int]:
    """(byte to read from, its row index, matching rows to skip there) for a page at offset."""
    try:
        index = json.loads(store.get(job_key(job_id, RESULTS_INDEX)))
    except ObjectNotFound:
        return 0, 0, offset  # results from before the index: read from the top
    marks = index["views"].get(view) or [[0, 0]]
    k = min(offset // index["stride"], len(marks) - 1)
    row, start = marks[k]
    return start, row, offset - k * index["stride"]


def read_rows(store: Store, job_id: str, offset: int, limit: int, label: str = ALL,
              group: str | None = None) -> list[tuple[int, dict]]:
    """(row index, row) for rows [offset, offset + limit) of a view (label: a class, ERRORS or
    ALL), optionally of one group (groups are not indexed: those pages read from the top)."""
    start, index, skip = _start(store, job_id, label, offset) if group is None else (0, 0, offset)
    out: list[tuple[int, dict]] = []
    try:
        stream = store.open(job_key(job_id, RESULTS_JSONL), start=start)
    except ObjectNotFound:
        return out
    with stream:
        for i, row in enumerate(iter_jsonl(stream), start=index):
            if (group is not None and row["group"] != group) or label not in view_of(row):
                continue
            if skip:
                skip -= 1
                continue
            out.append((i, row))
            if len(out) >= limit:
                break
    return out
