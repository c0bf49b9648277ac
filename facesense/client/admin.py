"""Jobs and models by id from the client: read, wait, list, delete, promote; the health check."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator

from facesense.client.http import Http, _optional
from facesense.state.status import FINISHED


class Admin(Http):
    """The calls that find, wait on and delete jobs, and list, delete and promote models."""

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
