"""The Python client of the HTTP API: what the CLI uses, and handy in scripts and notebooks.

    from facesense.client import Client
    api = Client("http://127.0.0.1:8000", api_key=None)
    job = api.submit("s3://campaigns/spring")
    api.wait(job["id"], on_update=lambda r: print(r["progress"]["done"], r["progress"]["total"]))
    for row in api.rows(job["id"]):
        ...
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import requests

from facesense.inputs.sources import is_image_key
from facesense.state.status import FINISHED


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
               model: str | None = None, callback_url: str | None = None) -> dict:
        """Queue a scoring job on a source the server reads (S3 URL or server-side folder), or
        on image URLs (strings, or {"url", "group"}); returns the job record."""
        if (source is None) == (urls is None):
            raise ValueError("give a source or urls, not both")
        body: dict = {"type": "classify"}
        body.update({"source": source} if urls is None else {"urls": list(urls)})
        body.update(_optional(model=model, callback_url=callback_url))
        return self._call("POST", "/v1/jobs", json=body).json()

    def upload(self, folders_or_files: Iterable[str | Path], model: str | None = None,
               callback_url: str | None = None) -> dict:
        """Queue a scoring job on local files, uploaded: a folder's images keep their
        sub-folders (groups); a file is sent by name (a .zip is unpacked by the server)."""
        pairs = []
        for path in map(Path, folders_or_files):
            if path.is_dir():
                pairs += [(p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*"))
                          if p.is_file() and is_image_key(p.relative_to(path).as_posix())]
            else:
                pairs.append((path, path.name))
        handles = [(name, p.open("rb")) for p, name in pairs]
        try:
            files = [("files", (name, fh)) for name, fh in handles]
            data = {"type": "classify", **_optional(model=model, callback_url=callback_url)}
            return self._call("POST", "/v1/jobs", data=data, files=files).json()
        finally:
            for _, fh in handles:
                fh.close()

    def train(self, dataset: str, params: dict | None = None, promote: str = "never",
              callback_url: str | None = None) -> dict:
        """Queue a training job on a labelled folder the server reads."""
        body = {"type": "train", "dataset": dataset, "params": params or {}, "promote": promote,
                **_optional(callback_url=callback_url)}
        return self._call("POST", "/v1/jobs", json=body).json()

    def retry(self, job_id: str, model: str | None = None) -> dict:
        """A new scoring job over the images that failed in a finished one (ApiError 409 if none)."""
        return self._call("POST", f"/v1/jobs/{job_id}/retry", json=_optional(model=model)).json()

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

    def jobs(self, limit: int = 20, offset: int = 0) -> list[dict]:
        """Recent jobs, newest first."""
        return self._call("GET", "/v1/jobs", params={"limit": limit, "offset": offset}).json()["jobs"]

    def models(self) -> dict:
        """Versions (newest first) and aliases."""
        return self._call("GET", "/v1/models").json()

    def model(self, version: str) -> dict:
        """One version's manifest, with the aliases pointing at it."""
        return self._call("GET", f"/v1/models/{version}").json()

    def promote(self, version: str, alias: str = "production") -> dict:
        """Move an alias to a version (an admin key, when keys are configured)."""
        return self._call("POST", f"/v1/models/{version}/promote", json={"alias": alias}).json()

    def health(self) -> dict:
        """The /healthz answer (ApiError 503 names what is down)."""
        return self._call("GET", "/healthz").json()


def _optional(**fields) -> dict:
    """The fields that were given (not None)."""
    return {k: v for k, v in fields.items() if v is not None}
