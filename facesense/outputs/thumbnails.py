"""Gallery thumbnails: 128 px JPEGs, made from image bytes on demand (the API) or, for jobs
whose source can't be read again (URL lists), written for a sample by the workers."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageOps

from facesense.imaging import ImageRejected, face_square, flatten_to_rgb, open_image
from facesense.inputs.manifest_images import URL
from facesense.storage import Store, layout

log = logging.getLogger(__name__)

SIDE = 128  # longest side in pixels
QUALITY = 75
# A URL-list job keeps the thumbnails of 1 image in SAMPLE_EVERY (by a hash of its key, so a
# redelivered shard writes the same ones and a reader knows which exist without a lookup):
# ~5 KB / 16 per image, at most url_max_per_job / 16 files a job.
SAMPLE_EVERY = 16


def thumb_name(image: str) -> str:
    """A thumbnail's file name: a hash of the image key, so any reader of a row can find it."""
    return hashlib.sha1(image.encode("utf-8", "surrogatepass")).hexdigest()[:24] + ".jpg"


def thumb_key(job_id: str, image: str) -> str:
    """Where an image's thumbnail lives in the store."""
    return layout.thumb_key(job_id, thumb_name(image))


def sampled(image: str) -> bool:
    """True for the images of a URL-list job whose thumbnail the workers keep."""
    return hashlib.sha1(image.encode("utf-8", "surrogatepass")).digest()[0] % SAMPLE_EVERY == 0


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


FACE_MARGIN = 0.2  # around a face's box in its thumbnail: some hair and chin, as scored


def make_thumbnail(data: bytes, *, max_pixels: int, box: list[int] | None = None) -> bytes:
    """A thumbnail JPEG from an image file's bytes, under the workers' guards (formats, pixel
    limit, PNG bombs); raises ImageRejected for what they would refuse or can't decode.
    box: a face's [x0, y0, x1, y1] in the upright image: the thumbnail is that face's square."""
    img = open_image(data, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / palette warnings are not errors here
            # JPEGs decode at the smallest 1/2^k scale still >= SIDE (for a face: its square
            # still >= SIDE): a few ms and ~1/64 the memory of a full decode for a big photo.
            full = img.size
            zoom = 1 if box is None else max(1, max(full) // max(1, box[2] - box[0]))
            img.draft("RGB", (SIDE * zoom, SIDE * zoom))
            img.load()
            scale = img.size[0] / full[0]  # draft's 1/2^k, the same on both axes
            ImageOps.exif_transpose(img, in_place=True)
            if box is not None:
                img = img.crop(face_square([round(v * scale) for v in box], img.size, FACE_MARGIN))
            return encode(_rgb(img))
    except Exception as e:  # truncated, corrupt, unsupported: no thumbnail, never a crash
        raise ImageRejected(f"cannot decode image: {type(e).__name__}: {e}") from None


def frame_thumbnail(image: Image.Image, box: list[int] | None = None) -> bytes:
    """A thumbnail JPEG of a decoded, upright video frame; box: a face's, in the frame: the
    thumbnail is that face's square, as for a photo."""
    if box is not None:
        image = image.crop(face_square(box, image.size, FACE_MARGIN))
    return encode(image)


def _rgb(img: Image.Image) -> Image.Image:
    """RGB good enough to look at (the model's exact conversion needs numpy, which the core
    does without): 16-bit scaled to 8, alpha on white, CMYK without Adobe's marker un-inverted."""
    if img.mode.startswith("I"):
        wide = img.mode.startswith("I;16") or img.getextrema()[1] > 255
        img = img.convert("I") if img.mode != "I" else img
        img = (img.point(lambda v: v * (255 / 65535)) if wide else img).convert("L")
    return flatten_to_rgb(img)


class ThumbnailWriter:
    """Encodes in the caller's (decode) thread, stores in a few writer threads; never raises.

    A thumbnail that fails costs only itself: the image's row is unaffected. At most
    max_pending thumbnails wait for the store, so memory stays flat if it is slow.
    """

    def __init__(self, store: Store, job_id: str, *, threads: int = 4, max_pending: int = 256,
                 keep: Callable[[str], bool] = lambda image_key: True):
        self.store, self.job_id, self.keep = store, job_id, keep
        self.written = self.failed = 0
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="thumbs")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()

    def add(self, image_key: str, image: Image.Image) -> None:
        """Encode one decoded image's thumbnail here (a decode thread) and queue its write."""
        if not self.keep(image_key):
            return
        try:
            data = encode(image)
        except Exception as e:  # a thumbnail is a nicety: log it, keep scoring
            self._count(ok=False, why=f"{image_key}: {type(e).__name__}: {e}")
            return
        self._submit(image_key, data)

    def add_batch(self, image_keys: list[str], images) -> None:
        """Thumbnails of a (N, H, W, 3) uint8 device tensor: one copy to the host, encoded in
        the writer threads so the forward pass is not kept waiting."""
        if not any(map(self.keep, image_keys)):
            return  # no device-to-host copy for nothing
        try:
            arrays = images.cpu().numpy()
        except Exception as e:
            self._count(ok=False, why=f"{len(image_keys)} images: {type(e).__name__}: {e}")
            return
        for key, array in zip(image_keys, arrays, strict=True):
            if self.keep(key):
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


def web_item(image: str) -> bool:
    """A manifest line naming an http(s) URL: an image the API won't fetch again."""
    return bool(URL.match(image))


def writer_for(store: Store, job_id: str, enabled: int) -> ThumbnailWriter | None:
    """A writer for one shard of a job with images that can't be read again (a URL list, a
    manifest's URL lines: the API won't fetch from the internet for a gallery), keeping a
    sample of those; None for any other job (the API makes their thumbnails from the source
    on demand) or when thumbnails are off."""
    if not enabled:
        return None
    if store.exists(layout.url_list(job_id)):  # a HEAD or two a shard
        return ThumbnailWriter(store, job_id, keep=sampled)
    if store.exists(layout.manifest(job_id)):
        return ThumbnailWriter(store, job_id, keep=lambda key: web_item(key) and sampled(key))
    return None
