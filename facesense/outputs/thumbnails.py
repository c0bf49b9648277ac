"""Gallery thumbnails: small JPEGs of scored images under jobs/<id>/thumbs/, written in threads."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from facesense.storage import Store, layout

log = logging.getLogger(__name__)

SIDE = 128  # longest side in pixels
QUALITY = 75


def thumb_name(image: str) -> str:
    """A thumbnail's file name: a hash of the image key, so any reader of a row can find it."""
    return hashlib.sha1(image.encode("utf-8", "surrogatepass")).hexdigest()[:24] + ".jpg"


def thumb_key(job_id: str, image: str) -> str:
    """Where an image's thumbnail lives in the store."""
    return layout.thumb_key(job_id, thumb_name(image))


def encode(image) -> bytes:
    """A JPEG of at most SIDE px on its longest side from a decoded PIL image or an HWC array."""
    if not isinstance(image, Image.Image):  # a crop from the GPU path, copied to the host
        image = Image.fromarray(image)
    w, h = image.size
    scale = min(1.0, SIDE / max(w, h))
    # BOX (area average): as sharp as bilinear at these >2x reductions, at half the cost.
    thumb = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


class ThumbnailWriter:
    """Encodes in the caller's (decode) thread, stores in a few writer threads; never raises.

    A thumbnail that fails costs only itself: the image's row is unaffected. At most
    max_pending thumbnails wait for the store, so memory stays flat if it is slow.
    """

    def __init__(self, store: Store, job_id: str, *, threads: int = 4, max_pending: int = 256):
        self.store, self.job_id = store, job_id
        self.written = self.failed = 0
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="thumbs")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()

    def add(self, image_key: str, image: Image.Image) -> None:
        """Encode one decoded image's thumbnail here (a decode thread) and queue its write."""
        try:
            data = encode(image)
        except Exception as e:  # a thumbnail is a nicety: log it, keep scoring
            self._count(ok=False, why=f"{image_key}: {type(e).__name__}: {e}")
            return
        self._submit(image_key, data)

    def add_batch(self, image_keys: list[str], images) -> None:
        """Thumbnails of a (N, H, W, 3) uint8 device tensor: one copy to the host, encoded in
        the writer threads so the forward pass is not kept waiting."""
        try:
            arrays = images.cpu().numpy()
        except Exception as e:
            self._count(ok=False, why=f"{len(image_keys)} images: {type(e).__name__}: {e}")
            return
        for key, array in zip(image_keys, arrays, strict=True):
            self._submit(key, array)

    def _submit(self, image_key: str, data) -> None:
        self._slots.acquire()  # back-pressure: a slow store slows scoring rather than filling memory
        try:
            self._pool.submit(self._put, image_key, data)
        except RuntimeError:  # closed already (the shard stopped): drop it
            self._slots.release()

    def _put(self, image_key: str, data) -> None:
        try:
            if not isinstance(data, bytes):
                data = encode(data)
            self.store.put(thumb_key(self.job_id, image_key), data)
            self._count(ok=True)
        except Exception as e:
            self._count(ok=False, why=f"{image_key}: {type(e).__name__}: {e}")
        finally:
            self._slots.release()

    def _count(self, ok: bool, why: str = "") -> None:
        with self._lock:
            if ok:
                self.written += 1
                return
            self.failed += 1
            if self.failed <= 3:  # enough to diagnose; a dead store would flood the log
                log.warning("job %s: thumbnail not written: %s", self.job_id, why)

    def close(self) -> None:
        """Wait for the queued thumbnails to be stored."""
        self._pool.shutdown(wait=True)


def writer_for(store: Store, job_id: str, enabled: int) -> ThumbnailWriter | None:
    """A writer for one shard of a job, or None when thumbnails are turned off."""
    return ThumbnailWriter(store, job_id) if enabled else None
