"""The Python client of the HTTP API: what the CLI uses, and handy in scripts and notebooks.

    from facesense.client import Client
    api = Client("http://127.0.0.1:8000", api_key=None)
    job = api.submit("s3://campaigns/spring")
    api.wait(job["id"], on_update=lambda r: print(r["progress"]["done"], r["progress"]["total"]))
    for row in api.rows(job["id"]):
        ...
"""

from __future__ import annotations

import io
import itertools
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import requests

from facesense.errors import BadRequest
from facesense.inputs.keys import is_scored_key
from facesense.inputs.uploads import check_unique
from facesense.state.status import FINISHED

ZIP_OVER = 200  # files in one upload: more go as one .zip (a server allows 1,000 parts by default)


class ApiError(Exception):
    """The API answered with an error body, or could not be reached (status 0)."""

    def __init__(self, message: str, status: int = 0, code: str = "unreachable"):
        super().__init__(message)
        self.status, self.code = status, code


class Client:
    """Talks JSON to a FaceSense API; every method raises ApiError on an error answer."""

    def __init__(self, base_url: str, timeout: float = 60, api_key: str | None = None):
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        self.http = requests.Session()
        if api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            resp = self.http.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise ApiError(f"cannot reach the API at {self.base_url} ({type(e).__name__}; "
                           "is `facesense up` running? see --api)") from None
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                hint = " (set FACESENSE_API_KEY or pass --api-key)" if resp.status_code == 401 else ""
                message, code = f"{err['message']} [{resp.status_code} {err['code']}]{hint}", err["code"]
            except (ValueError, KeyError, TypeError):
                message, code = f"HTTP {resp.status_code} from {path}", "http_error"
            resp.close()
            raise ApiError(message, resp.status_code, code)
        return resp

    def submit(self, source: str | None = None, *, urls: Iterable[str | dict] | None = None,
               model: str | None = None, callback_url: str | None = None,
               priority: str | None = None, faces: bool | None = None, name: str | None = None,
               tags: Iterable[str] | None = None, **video) -> dict:
        """Queue a scoring job on a source the server reads (S3 URL or server-side folder), or
        on image URLs (strings, or {"url", "group"}); priority: high, normal (default) or low;
        faces: score each face found (None: as the model was trained); name and tags: to find
        it by later; video: timeline_bin_s and baseline, for reaction videos; returns the job
        record."""
        if (source is None) == (urls is None):
            raise ValueError("give a source or urls, not both")
        body: dict = {"type": "classify"}
        body.update({"source": source} if urls is None else {"urls": list(urls)})
        body.update(_optional(model=model, callback_url=callback_url, priority=priority,
                              faces=faces, name=name, tags=_tags(tags), **video))
        return self._call("POST", "/v1/jobs", json=body).json()

    def upload(self, folders_or_files: Iterable[str | Path], model: str | None = None,
               callback_url: str | None = None, *, zip_over: int = ZIP_OVER,
               priority: str | None = None, faces: bool | None = None, name: str | None = None,
               tags: Iterable[str] | None = None, **video) -> dict:
        """Queue a scoring job on local files, uploaded: a folder's images keep their
        sub-folders (groups); a file is sent by name (a .zip is unpacked by the server).

        More than zip_over files go as one uncompressed .zip, streamed from a temporary file:
        one multipart part, so a big folder stays under the server's FACESENSE_MAX_FORM_PARTS
        and the client's memory stays flat."""
        pairs = []
        for path in map(Path, folders_or_files):
            if path.is_dir():
                pairs += [(p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*"))
                          if p.is_file() and is_scored_key(p.relative_to(path).as_posix())]
            else:
                pairs.append((path, path.name))
        data = {"type": "classify", **_optional(model=model, callback_url=callback_url,
                                                priority=priority, faces=_form(faces), name=name,
                                                tags=",".join(tags) if tags else None,
                                                **{k: _form(v) for k, v in video.items()})}
        if len(pairs) > zip_over:
            return self._upload_zip(pairs, data)
        handles = [(name, p.open("rb")) for p, name in pairs]
        try:
            files = [("files", (name, fh)) for name, fh in handles]
            return self._call("POST", "/v1/jobs", data=data, files=files).json()
        finally:
            for _, fh in handles:
                fh.close()

    def _upload_zip(self, pairs: list[tuple[Path, str]], data: dict) -> dict:
        """Send files as one stored (not deflated: images are compressed already) .zip."""
        check_unique([(name, name) for _, name in pairs], "upload file name")  # before zipping
        bad = [name for _, name in pairs if not is_scored_key(name)]
        if bad:  # the server skips a .zip's non-images; named files must be images, as unzipped
            raise BadRequest(f"not image file(s): {', '.join(map(repr, bad[:5]))}")
        boundary = uuid.uuid4().hex
        with tempfile.TemporaryFile() as archive:
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for path, name in pairs:
                    zf.write(path, name)
            head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
                           f"{v}\r\n" for k, v in data.items())
            head += (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                     'filename="upload.zip"\r\nContent-Type: application/zip\r\n\r\n')
            body = _Joined(head.encode(), archive, f"\r\n--{boundary}--\r\n".encode())
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            return self._call("POST", "/v1/jobs", data=body, headers=headers).json()

    def submit_manifest(self, manifest: str | Path, group_by: str | None = None, *,
                        upload: bool | None = None, model: str | None = None,
                        callback_url: str | None = None, priority: str | None = None,
                        faces: bool | None = None, name: str | None = None,
                        tags: Iterable[str] | None = None, **video) -> dict:
        """Queue a scoring job over a manifest (CSV or JSON Lines, an 'image' column and any
        others, carried into each row's meta); group_by names the column the summary groups by.

        An s3:// manifest is read by the server; a local file is sent by its path when the
        server can read it (upload=False: only so), else uploaded (upload=True: always), and
        an uploaded manifest's images must be absolute paths, s3:// URIs or http(s) URLs."""
        fields = {"type": "classify", **_optional(group_by=group_by, model=model,
                                                  callback_url=callback_url, priority=priority,
                                                  faces=faces, name=name, tags=_tags(tags),
                                                  **video)}
        where = str(manifest)
        if upload and not Path(where).is_file():
            raise BadRequest(f"no manifest file {where} to upload")
        if where.startswith("s3://") or not Path(where).is_file():
            return self._call("POST", "/v1/jobs", json={**fields, "manifest": where}).json()
        path = Path(where).resolve()
        if not upload:
            try:
                return self._call("POST", "/v1/jobs", json={**fields, "manifest": str(path)}).json()
            except ApiError as e:  # the server can't read that file (another machine): send it
                if upload is False or e.status != 422 or not str(e).startswith("manifest "):
                    raise
        with path.open("rb") as fh:
            return self._call("POST", "/v1/jobs", data=_form_fields(fields),
                              files=[("manifest", (path.name, fh))]).json()

    def train(self, dataset: str, params: dict | None = None, promote: str = "never",
              callback_url: str | None = None, alias: str | None = None, name: str | None = None,
              tags: Iterable[str] | None = None) -> dict:
        """Queue a training job on a labelled folder the server reads."""
        body = {"type": "train", "dataset": dataset, "params": params or {}, "promote": promote,
                **_optional(callback_url=callback_url, alias=alias, name=name, tags=_tags(tags))}
        return self._call("POST", "/v1/jobs", json=body).json()

    def retry(self, job_id: str, model: str | None = None, priority: str | None = None) -> dict:
        """A new scoring job over the images that failed in a finished one (ApiError 409 if none)."""
        return self._call("POST", f"/v1/jobs/{job_id}/retry",
                          json=_optional(model=model, priority=priority)).json()

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job (ApiError 409 once it finished)."""
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def job(self, job_id: str) -> dict:
        """A job's record."""
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, every: float = 0.5, on_update: Callable[[dict], None] | None = None,
             timeout: float | None = None) -> dict:
        """Poll until the job finishes and return its record. on_update(record) is the progress
        callback, called after each poll (record["progress"] holds done, failed and total).
        Raises TimeoutError after timeout seconds, if given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.job(job_id)
            if on_update:
                on_update(record)
            if record["status"] in FINISHED:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record['status']} after {timeout}s")
            time.sleep(every)

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

    def jobs(self, limit: int = 20, offset: int = 0, **filters) -> list[dict]:
        """Recent jobs, newest first; filters as in jobs_page (then up to limit, every page)."""
        if offset or not filters:
            return self._call("GET", "/v1/jobs",
                              params={"limit": limit, "offset": offset}).json()["jobs"]
        return list(itertools.islice(self.iter_jobs(**filters), limit))

    def jobs_page(self, limit: int = 20, cursor: str | None = None, *, name: str | None = None,
                  tag: str | None = None, status: str | Iterable[str] | None = None,
                  since: float | str | None = None, until: float | str | None = None) -> dict:
        """One page of jobs, newest first, filtered by name prefix, tag, status(es) and creation
        time (unix seconds or ISO 8601); its next_cursor asks for the next, older page."""
        if status is not None and not isinstance(status, str):
            status = ",".join(status)
        params = _optional(limit=limit, cursor=cursor, name=name, tag=tag, status=status,
                           since=since, until=until)
        return self._call("GET", "/v1/jobs", params=params).json()

    def iter_jobs(self, **filters) -> Iterator[dict]:
        """Every job matching filters (as jobs_page's), newest first, page by page."""
        cursor = None
        while True:
            page = self.jobs_page(200, cursor, **filters)
            yield from page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def delete_job(self, job_id: str) -> dict:
        """Delete a finished job: results, thumbnails, uploads, record (ApiError 409 while it is
        queued or running: cancel it first)."""
        return self._call("DELETE", f"/v1/jobs/{job_id}").json()

    def delete_model(self, version: str) -> dict:
        """Delete a model version (an admin key; ApiError 409 while an alias or a queued or
        running job names it)."""
        return self._call("DELETE", f"/v1/models/{version}").json()

    def models(self) -> dict:
        """Versions (newest first) and aliases."""
        return self._call("GET", "/v1/models").json()

    def model(self, version: str) -> dict:
        """One version's manifest, with the aliases pointing at it."""
        return self._call("GET", f"/v1/models/{version}").json()

    def promote(self, version: str, alias: str = "production", force: bool = False) -> dict:
        """Move an alias to a version (an admin key, when keys are configured); force puts a
        version that does not beat chance behind it."""
        body = {"alias": alias, **({"force": True} if force else {})}
        return self._call("POST", f"/v1/models/{version}/promote", json=body).json()

    def health(self) -> dict:
        """The /healthz answer (ApiError 503 names what is down)."""
        return self._call("GET", "/healthz").json()


class _Joined:
    """Bytes, an open file, then bytes, read back to back with a known length: requests sends
    it with a Content-Length, in blocks, instead of building the body in memory (no tell():
    requests would take its position for the length)."""

    def __init__(self, head: bytes, file: BinaryIO, tail: bytes):
        size = file.seek(0, 2)
        file.seek(0)
        self.parts = [io.BytesIO(head), file, io.BytesIO(tail)]
        self.length = len(head) + size + len(tail)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(1 << 16):
            yield block

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes (all that is left if size < 0)."""
        out = b""
        while self.parts and (size < 0 or len(out) < size):
            block = self.parts[0].read(-1 if size < 0 else size - len(out))
            if block:
                out += block
            else:
                self.parts.pop(0)
        return out


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


def _optional(**fields) -> dict:
    """The fields that were given (not None)."""
    return {k: v for k, v in fields.items() if v is not None}


def _form(value):
    """A value as a multipart form's text: booleans as true / false, as the API reads them."""
    return str(value).lower() if isinstance(value, bool) else value


def _form_fields(fields: dict) -> dict:
    """Request fields as a multipart form's text (a list, the tags, comma-separated)."""
    return {k: ",".join(v) if isinstance(v, list) else _form(v) for k, v in fields.items()}


def _tags(tags: Iterable[str] | None) -> list[str] | None:
    """Tags as the JSON body's list (None: not given)."""
    return None if tags is None else list(tags)
