"""A job's results from the client: rows, CSV, summary and timeline, and pandas frames of them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

from facesense.client.http import Http


class Results(Http):
    """The calls that read a job's results: rows, files and frames."""

    def rows(self, job_id: str, page: int = 1000) -> Iterator[dict]:
        """Every result row, fetched page by page (memory stays flat for big jobs)."""
        offset = 0
        while offset is not None:
            body = self._call("GET", f"/v1/jobs/{job_id}/results",
                              params={"offset": offset, "limit": page}).json()
            yield from body["rows"]
            offset = body["next_offset"]

    def csv(self, job_id: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The results CSV as a stream of byte chunks (no pandas; csv.reader reads the lines)."""
        with self._call("GET", f"/v1/jobs/{job_id}/results", params={"format": "csv"},
                        stream=True) as resp:
            yield from resp.iter_content(chunk_size)

    def save_csv(self, job_id: str, out: BinaryIO) -> int:
        """Write the results CSV to a binary file object; returns the bytes written."""
        written = 0
        for chunk in self.csv(job_id):
            written += out.write(chunk)
        return written

    def summary(self, job_id: str) -> dict:
        """A finished job's whole summary (summary.json, every group): per group and label the
        count, share and Wilson 95 % interval (ci95), and the comparisons between groups."""
        return self._call("GET", f"/v1/jobs/{job_id}/summary").json()

    def save_summary_csv(self, job_id: str, out: BinaryIO) -> int:
        """Write summary.csv (group,label,count,share,ci95_low,ci95_high) to a binary file
        object; returns the bytes written."""
        return out.write(self._call("GET", f"/v1/jobs/{job_id}/summary.csv").content)

    def save_timeline_csv(self, job_id: str, out: BinaryIO) -> int:
        """Write a video job's timeline.csv (group,t0,t1,viewers,label,share,ci95_low,ci95_high:
        per bin the mean over viewers and its t-interval) to a binary file object; returns the
        bytes written (ApiError 404 for a job without video rows)."""
        return out.write(self._call("GET", f"/v1/jobs/{job_id}/timeline.csv").content)

    def timeline_frame(self, job_id: str):
        """A video job's timeline.csv as a pandas DataFrame: a row per group, bin and label
        (needs pandas: the [pandas] extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("timeline_frame needs pandas: pip install 'facesense[pandas]' "
                              "(or use save_timeline_csv(), which needs nothing)") from None
        text = self._call("GET", f"/v1/jobs/{job_id}/timeline.csv").text
        # a group named "NA" stays a name; an empty share or interval (no viewer there) is NaN
        return pd.read_csv(io.StringIO(text), dtype={"group": str, "label": str},
                           keep_default_na=False,
                           na_values={c: [""] for c in ("share", "ci95_low", "ci95_high")})

    def results_frame(self, job_id: str):
        """Every result row as a pandas DataFrame: image, group, label, confidence, p_<class>
        per class, error, then a manifest's meta columns (needs pandas: the [pandas] extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("results_frame needs pandas: pip install 'facesense[pandas]' "
                              "(or use rows() / save_csv(), which need nothing)") from None
        return pd.DataFrame.from_records(map(_flat, self.rows(job_id)))


FIXED = ("image", "group", "label", "confidence", "error")


def _flat(row: dict) -> dict:
    """A result row as one table row: probabilities as p_<class>, meta keys as columns (named
    meta_<key> if the key clashes with a fixed column)."""
    out = {k: row.get(k) for k in FIXED}
    if "face" in row:  # a faces job's row: which face of its photo, and where
        out.update(face=row["face"], box=row["box"], face_score=row["face_score"])
    out.update({f"p_{c}": p for c, p in (row.get("probs") or {}).items()})
    for key, value in (row.get("meta") or {}).items():
        out[f"meta_{key}" if key in out else key] = value
    return out
