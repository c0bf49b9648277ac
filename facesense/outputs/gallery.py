"""The gallery's thumbnails, made on demand from a job's source and kept in a bounded cache.

A thumbnail is named by its row number in results.jsonl: the row says which image it is, so
only an image of that job's results can be read, and only from that job's own source. Nothing
is written to the store: the store keeps no bytes per image for the gallery.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from contextlib import closing

from facesense.errors import NotFound, ObjectNotFound, SourceError
from facesense.imaging import ImageRejected
from facesense.inputs.scopes import scoped_settings
from facesense.inputs.sources import MANIFEST_SCHEME, UPLOAD_SCHEME, open_source
from facesense.inputs.video.limits import VideoLimits
from facesense.outputs.pages import read_rows
from facesense.outputs.thumbnails import frame_thumbnail, make_thumbnail, sampled, thumb_key, web_item
from facesense.settings import Settings
from facesense.storage import Store, TooLarge, read_limited

# Sources the API reads again: a server folder, an S3 prefix, uploads in the store, a
# manifest's folder and S3 lines. A URL list is not among them, nor a manifest's URL lines
# (no fetching from the internet for a picture): their workers keep a sample
# (thumbnails.writer_for).
READABLE = ("file://", "s3://", UPLOAD_SCHEME, MANIFEST_SCHEME)
DECODES = 2  # thumbnails made at once per API process: bounds the memory of big decodes
SOURCES = 16  # opened sources kept (an S3 client costs tens of ms to build)


class ThumbCache:
    """Least recently used thumbnails, at most max_bytes in all; safe across threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.size = max_bytes, 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        """The cached bytes, or None."""
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        """Keep data, dropping the least recently used entries beyond the byte bound."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.size += len(data) - (len(old) if old is not None else 0)
            self._items[key] = data
            while self.size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)


class GalleryThumbs:
    """Thumbnails of finished jobs' rows for the dashboard; one per API process."""

    def __init__(self, settings: Settings, store: Store):
        self.settings, self.store = settings, store
        self.cache = ThumbCache(settings.thumb_cache_bytes)
        self._slots = threading.BoundedSemaphore(DECODES)
        self._sources: OrderedDict[str, Store] = OrderedDict()
        self._lock = threading.Lock()

    def has_thumb(self, record: dict, row: dict) -> bool:
        """Whether a row's card shows a picture: a scored image whose source can be read
        again, or one of a URL-list job's sample."""
        if not self.settings.thumbnails or row.get("error"):
            return False
        return self._readable(str(record.get("source", "")), row["image"]) or sampled(row["image"])

    @staticmethod
    def _readable(source: str, image: str) -> bool:
        """Whether the API reads this image again from the job's source."""
        return source.startswith(READABLE) and not (source.startswith(MANIFEST_SCHEME)
                                                    and web_item(image))

    def get(self, job_id: str, record: dict, index: int) -> bytes:
        """The JPEG of row `index` of a job (its record already checked as the caller's);
        NotFound for a row with no thumbnail."""
        if not self.settings.thumbnails:
            raise NotFound("thumbnails are turned off (FACESENSE_THUMBNAILS=0)")
        cached = self.cache.get((job_id, index))
        if cached is not None:
            return cached
        rows = read_rows(self.store, job_id, index, 1)
        if not rows or rows[0][0] != index:
            raise NotFound(f"job {job_id} has no row {index}")
        row = rows[0][1]
        if not self.has_thumb(record, row):
            raise NotFound(f"row {index} of job {job_id} has no thumbnail"
                           + (" (the image failed)" if row.get("error") else ""))
        if row.get("frame") is not None:  # a video's sampled frame: decoded from the video
            data = self._video_frame(record, row)
        else:
            data = self._from_source(record["source"], row["image"], row.get("box"),
                                     record.get("scope"))
        if data is None:
            data = self._stored(job_id, row["image"])
        self.cache.put((job_id, index), data)
        return data

    def _from_source(self, source: str, image: str, box: list[int] | None = None,
                     scope: dict | None = None) -> bytes | None:
        """The thumbnail made from the image in the job's source (a face row's: its face);
        None if the source can't be read here (a URL list, a folder gone or no longer under
        the allowed roots)."""
        if not self._readable(source, image):
            return None
        with self._slots:
            try:
                data = read_limited(self._source(source, scope), image,
                                    self.settings.max_image_bytes)
                return make_thumbnail(data, max_pixels=self.settings.max_image_pixels, box=box)
            except (ObjectNotFound, SourceError, OSError):  # gone, moved, unreadable here
                return None
            except (ImageRejected, TooLarge) as e:  # the worker scored it: it changed since
                raise NotFound(f"no thumbnail for {image!r}: {e}") from None

    def _video_frame(self, record: dict, row: dict) -> bytes | None:
        """The thumbnail of a video row's frame (a face row's: its face), decoded from the video
        in the job's source as the worker sampled it (seek to the keyframe before, decode on);
        None if the source can't be read here."""
        # PyAV (FFmpeg) is loaded by the first video thumbnail, not by every API process
        from facesense.inputs.video.frames import sample
        from facesense.inputs.video.probe import VideoError, probe
        from facesense.inputs.video.reader import open_video

        source, image = str(record.get("source", "")), row["image"]
        if not self._readable(source, image):
            return None
        fps = record.get("video_fps") or self.settings.video_fps
        with self._slots:
            try:
                with open_video(self._source(source, record.get("scope")), image) as f:
                    info = probe(f, VideoLimits.from_settings(self.settings))
                    with closing(sample(f, info, fps, row["frame"], row["frame"] + 1)) as one:
                        got = next(one, None)  # closed here: its container before the file
            except (ObjectNotFound, SourceError, OSError):  # gone, moved, unreadable here
                return None
            except VideoError as e:  # the worker scored it: it changed since
                raise NotFound(f"no thumbnail for frame {row['frame']} of {image!r}: {e}") from None
        if got is None:
            raise NotFound(f"{image!r} has no frame {row['frame']} any more")
        return frame_thumbnail(got.image, row.get("box"))

    def _stored(self, job_id: str, image: str) -> bytes:
        """A thumbnail a worker wrote: a URL-list job's sample, or any image of a job scored
        before thumbnails were made on demand."""
        try:
            return self.store.get(thumb_key(job_id, image))
        except ObjectNotFound:
            raise NotFound(f"no thumbnail for {image!r}: its source can't be read") from None

    def _source(self, url: str, scope: dict | None = None) -> Store:
        """The job's source, read under its key's roots (facesense.inputs.scopes) if scoped."""
        name = url + (json.dumps(scope, sort_keys=True) if scope else "")
        with self._lock:
            if name not in self._sources:
                self._sources[name] = open_source(url, scoped_settings(self.settings, scope),
                                                  self.store)
                while len(self._sources) > SOURCES:
                    self._sources.popitem(last=False)
            self._sources.move_to_end(name)
            return self._sources[name]
