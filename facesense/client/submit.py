"""Queueing jobs from the client: a source, URLs, uploaded files or a manifest; training;
retry and cancel."""

from __future__ import annotations

import io
import tempfile
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from facesense.client.http import ApiError, Http, _form, _form_fields, _optional, _tags
from facesense.errors import BadRequest
from facesense.inputs.keys import is_scored_key
from facesense.inputs.uploads import check_unique

ZIP_OVER = 200  # files in one upload: more go as one .zip (a server allows 1,000 parts by default)


class Submitting(Http):
    """The calls that queue a job or act on one: submit, upload, manifest, train, retry, cancel."""

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
