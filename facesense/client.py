"""A small HTTP client for the API, used by the CLI (and handy in notebooks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import requests

from facesense.sources import is_image_key


class ApiError(Exception):
    """The API answered with an error body, or could not be reached."""


class Client:
    """Talks JSON to a FaceSense API."""

    def __init__(self, base_url: str, timeout: float = 60, api_key: str | None = None):
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        self.http = requests.Session()
        if api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            resp = self.http.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.ConnectionError:
            raise ApiError(f"cannot reach the API at {self.base_url} "
                           "(is `facesense up` running? see --api)") from None
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                hint = " (set FACESENSE_API_KEY or pass --api-key)" if resp.status_code == 401 else ""
                raise ApiError(f"{err['message']} [{resp.status_code} {err['code']}]{hint}")
            except (ValueError, KeyError, TypeError):
                raise ApiError(f"HTTP {resp.status_code} from {path}") from None
        return resp

    def submit(self, source: str, model: str | None = None) -> dict:
        """Queue a scoring job on a source the server can read (S3 URL or server-side folder)."""
        body = {"type": "classify", "source": source, **({"model": model} if model else {})}
        return self._call("POST", "/v1/jobs", json=body).json()

    def upload(self, folder_or_files: list[Path], model: str | None = None) -> dict:
        """Queue a scoring job on local files, uploaded (sub-folders kept as groups)."""
        pairs = []
        for path in folder_or_files:
            if path.is_dir():
                pairs += [(p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*"))
                          if p.is_file() and is_image_key(p.relative_to(path).as_posix())]
            else:
                pairs.append((path, path.name))
        handles = [(name, p.open("rb")) for p, name in pairs]
        try:
            files = [("files", (name, fh)) for name, fh in handles]
            data = {"type": "classify", **({"model": model} if model else {})}
            return self._call("POST", "/v1/jobs", data=data, files=files).json()
        finally:
            for _, fh in handles:
                fh.close()

    def train(self, dataset: str, params: dict | None = None, promote: str = "never") -> dict:
        """Queue a training job on a labelled folder the server can read."""
        body = {"type": "train", "dataset": dataset, "params": params or {}, "promote": promote}
        return self._call("POST", "/v1/jobs", json=body).json()

    def cancel(self, job_id: str) -> dict:
        """Cancel a job."""
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def job(self, job_id: str) -> dict:
        """A job's record."""
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, every: float = 0.5, on_update=None) -> dict:
        """Poll until the job finishes; on_update(record) is called after each poll."""
        while True:
            record = self.job(job_id)
            if on_update:
                on_update(record)
            if record["status"] in ("succeeded", "failed", "cancelled"):
                return record
            time.sleep(every)

    def rows(self, job_id: str, page: int = 1000) -> Iterator[dict]:
        """Every result row, page by page."""
        offset = 0
        while offset is not None:
            body = self._call("GET", f"/v1/jobs/{job_id}/results",
                              params={"offset": offset, "limit": page}).json()
            yield from body["rows"]
            offset = body["next_offset"]

    def csv(self, job_id: str) -> Iterator[bytes]:
        """The results CSV, streamed."""
        resp = self._call("GET", f"/v1/jobs/{job_id}/results", params={"format": "csv"},
                          stream=True)
        yield from resp.iter_content(1 << 16)

    def jobs(self, limit: int = 20) -> list[dict]:
        """Recent jobs, newest first."""
        return self._call("GET", "/v1/jobs", params={"limit": limit}).json()["jobs"]

    def models(self) -> dict:
        """Versions and aliases."""
        return self._call("GET", "/v1/models").json()

    def promote(self, version: str, alias: str = "production") -> dict:
        """Move an alias to a version."""
        return self._call("POST", f"/v1/models/{version}/promote", json={"alias": alias}).json()
