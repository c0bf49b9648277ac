"""Faces: find every face in a photo (MTCNN, weights shipped in the facenet-pytorch wheel), crop it.

MTCNN was kept over OpenCV's Haar cascade by measurement on real photos (README, Faces): it
made no false find on ten face-free scenes where the cascade made six, at 0.95 recall against
the cascade's 1.0, and it was the faster of the two.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from facesense.errors import FacesenseError
from facesense.imaging import face_square
from facesense.settings import Settings

DETECTOR = "mtcnn"  # recorded in a version's manifest: the detector its faces were cut with
MTCNN_STAGE_THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults for its three stages
MTCNN_MIN_SIDE = 20  # smallest face MTCNN is asked to look for on a copy (its default)


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found and cut: the settings, or what a version's manifest recorded."""

    # Defaults: the settings' (FACESENSE_FACE_*, whose help says what each does).
    margin: float = Settings.face_margin
    min_size: int = Settings.face_min_size
    threshold: float = Settings.face_threshold
    max_faces: int = Settings.face_max_per_image
    detect_side: int = Settings.face_detect_side

    @classmethod
    def from_settings(cls, settings: Settings) -> FaceOptions:
        """The options FACESENSE_FACE_* set."""
        return cls(settings.face_margin, settings.face_min_size, settings.face_threshold,
                   settings.face_max_per_image, settings.face_detect_side)

    def __post_init__(self):
        if not (0 <= self.margin <= 2 and self.min_size >= 1 and 0 <= self.threshold <= 1
                and self.max_faces >= 1 and self.detect_side >= 2 * MTCNN_MIN_SIDE):
            raise FacesenseError(f"face options out of range: {self} (FACESENSE_FACE_*: margin "
                                 f"0..2, min_size >= 1, threshold 0..1, max_per_image >= 1, "
                                 f"detect_side >= {2 * MTCNN_MIN_SIDE})")

    def detect_scale(self, img: Image.Image) -> float:
        """How much an image is shrunk for detection (at most detect_side long)."""
        return min(1.0, self.detect_side / max(img.size))

    def stage_thresholds(self) -> list[float]:
        """MTCNN's three stage bars: a threshold under the last stage's own bar lowers it too."""
        return [*MTCNN_STAGE_THRESHOLDS[:2], min(MTCNN_STAGE_THRESHOLDS[2], self.threshold)]

    def for_version(self, manifest: dict) -> FaceOptions:
        """These options, with how a version trained on faces found and cut them (train/serve
        consistency: every worker cuts its faces the same way, whatever its own settings)."""
        faces = manifest.get("faces")
        if not isinstance(faces, dict):
            return self
        if faces.get("detector", DETECTOR) != DETECTOR:
            raise FacesenseError(f"version {manifest.get('version')} was trained on faces found "
                                 f"by {faces['detector']!r}; this worker has {DETECTOR!r}")
        recorded = {k: faces[k] for k in ("margin", "min_size", "threshold", "detect_side")
                    if k in faces}
        return dataclasses.replace(self, **recorded)


@dataclass(frozen=True)
class Face:
    """One face: its box [x0, y0, x1, y1] in the upright photo's pixels and its detection score."""

    box: tuple[int, int, int, int]
    score: float


class FaceDetector:
    """MTCNN on a device, run on batches of downscaled copies; thread-safe."""

    def __init__(self, device: torch.device | str = "cpu"):
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet  # loads the wheel's weights
        self.device = torch.device(device)
        # channels-last: P-net ran 2x and R-net / O-net 3-4x as fast on a 2-core CPU
        self.nets = [net.to(self.device, memory_format=torch.channels_last).eval()
                     for net in (PNet(), RNet(), ONet())]
        # On a CPU, 4 frames a call: 24-25 ms a frame against 31-33 at 16 (whose pyramid and
        # candidates outgrow the cache) and 28-37 one at a time (bench/webcam.py's 640x480
        # frames, 2-core AMD EPYC); a GPU takes whatever same-size frames there are at once.
        self.chunk = 4 if self.device.type == "cpu" else 1 << 30
        self._lock = threading.Lock()  # one detection at a time: its batches already fill the cores

    def detect(self, images: list[Image.Image], options: FaceOptions) -> list[list[Face]]:
        """Faces per image, largest first; images of one size after downscaling share a batch."""
        from facenet_pytorch.models.utils.detect_face import detect_face
        scales = [options.detect_scale(img) for img in images]
        copies = [_downscaled(img, s) for img, s in zip(images, scales, strict=True)]
        found: list[list[Face]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, copy in enumerate(copies):
            by_size.setdefault(copy.size, []).append(i)
        stages = options.stage_thresholds()
        for indexes in by_size.values():
            # No smaller than the least face kept: fewer pyramid levels, same faces kept.
            least = max(MTCNN_MIN_SIDE, int(options.min_size * min(scales[i] for i in indexes)))
            if least > min(copies[indexes[0]].size):
                continue  # no face that big fits in these photos (MTCNN would have no scale)
            for at in range(0, len(indexes), self.chunk):
                chunk = indexes[at:at + self.chunk]
                batch = _planar([np.asarray(copies[i]) for i in chunk], self.device)
                with self._lock, torch.inference_mode():
                    boxes, _ = detect_face(batch, least, *self.nets, stages, 0.709, self.device)
                for i, rows in zip(chunk, boxes, strict=True):
                    found[i] = _faces(np.asarray(rows, dtype=np.float64).reshape(-1, 5),
                                      copies[i].size, images[i].size, options)
        return found

    def refine(self, image: Image.Image, faces: list[Face], options: FaceOptions) -> list[Face]:
        """The faces near `faces` in an image (a frame of the size of the one that had them):
        MTCNN's last two stages alone score and regress six boxes around each (see _around) as
        they do the first stage's proposals (no image pyramid: a fraction of detect's time)."""
        if not faces:
            return []
        copy = _downscaled(image, options.detect_scale(image))
        sx, sy = copy.width / image.width, copy.height / image.height
        boxes = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 1.0]
                              for face in faces for cx, cy, w, h in _around(face.box, sx, sy)],
                             device=self.device)
        stages = options.stage_thresholds()
        planar = _planar([np.asarray(copy)], self.device).permute(0, 3, 1, 2)
        with self._lock, torch.inference_mode():
            rows = _last_stages(planar, boxes, self.nets[1:], stages[1:])
        return _faces(rows.cpu().numpy().astype(np.float64), copy.size, image.size, options)


def _around(box: tuple[int, int, int, int], sx: float, sy: float) -> list[tuple[float, ...]]:
    """Candidate boxes (centre x, y, width, height on the copy) where a face at box in the frame
    before may be now: the box, one wider, and the box moved a third of its side each way
    (R-net's regression reaches about a quarter: together they follow a face moving half its
    side between two frames)."""
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    return [(cx, cy, w, h), (cx, cy, 1.4 * w, 1.4 * h)] + [
        (cx + dx * w / 3, cy + dy * h / 3, w, h) for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1))]


def _last_stages(image: torch.Tensor, boxes: torch.Tensor, nets, thresholds) -> torch.Tensor:
    """detect_face's R-net and O-net stages (scores, regression, non-maximum suppression) on one
    1x3xHxW image's candidate boxes (x0, y0, x1, y1, score); the boxes kept."""
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, rerec
    from torchvision.ops.boxes import batched_nms
    for net, threshold, side in zip(nets, thresholds, (24, 48), strict=True):
        boxes = rerec(boxes)
        boxes, crops = _crops(image, boxes, side)
        if not len(boxes):
            return boxes
        out = net((crops - 127.5) * 0.0078125)
        score = out[-1][:, 1]
        keep = score > threshold
        boxes = torch.cat([boxes[keep, :4], score[keep, None]], dim=1)
        moves, one = out[0][keep], torch.zeros(int(keep.sum()), dtype=torch.long, device=boxes.device)
        if side == 24:
            pick = batched_nms(boxes[:, :4], boxes[:, 4], one, 0.7)
            boxes = bbreg(boxes[pick], moves[pick])
        else:
            boxes = bbreg(boxes, moves)
            boxes = boxes[batched_nms_numpy(boxes[:, :4], boxes[:, 4], one, 0.7, "Min")]
    return boxes


def _crops(image: torch.Tensor, boxes: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the boxes with pixels inside the image, their crops resampled to side x side), as
    detect_face cuts them."""
    from torch.nn.functional import interpolate
    h, w = image.shape[2:]
    ints = boxes.trunc().int().cpu().numpy()
    x0, y0 = ints[:, 0].clip(1, None), ints[:, 1].clip(1, None)
    x1, y1 = ints[:, 2].clip(None, w), ints[:, 3].clip(None, h)
    inside = [i for i in range(len(ints)) if x1[i] > x0[i] - 1 and y1[i] > y0[i] - 1]
    crops = [interpolate(image[:, :, y0[i] - 1:y1[i], x0[i] - 1:x1[i]], size=(side, side),
                         mode="area") for i in inside]
    return boxes[inside], torch.cat(crops) if crops else image.new_zeros((0, 3, side, side))


def _planar(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Same-size HxWx3 images as the N x H x W x 3 float view of a contiguous N x 3 x H x W batch:
    detect_face permutes it to that batch, so its per-box crops are cut from planar memory (a
    crop of the interleaved uint8 batch cost several times as much to resample, more the larger
    the batch); the values are the same floats detect_face would make."""
    planar = torch.from_numpy(np.stack(arrays)).to(device).permute(0, 3, 1, 2)
    return planar.to(torch.float32, memory_format=torch.contiguous_format).permute(0, 2, 3, 1)


HOLD_SIDE = 2048  # photos are held (and faces cut) at most this long: 12 MB a photo, however big


def face_copy(img: Image.Image) -> tuple[Image.Image, tuple[int, int]]:
    """The copy of a decoded photo faces are found in and cut from, and the photo's own size
    (boxes are given in it: see in_photo)."""
    return _downscaled(img, min(1.0, HOLD_SIDE / max(img.size))), img.size


def in_photo(box: tuple[int, int, int, int], held_size: tuple[int, int],
             size: tuple[int, int]) -> list[int]:
    """A box on the held copy in the photo's own pixels."""
    sx, sy = size[0] / held_size[0], size[1] / held_size[1]
    return [min(size[0], round(box[0] * sx)), min(size[1], round(box[1] * sy)),
            min(size[0], round(box[2] * sx)), min(size[1], round(box[3] * sy))]


def _downscaled(img: Image.Image, scale: float) -> Image.Image:
    """The copy detection runs on (reducing_gap: a cheap box-filter reduce first for big photos)."""
    if scale >= 1.0:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.BILINEAR, reducing_gap=2.0)


def _faces(rows: np.ndarray, copy: tuple[int, int], size: tuple[int, int],
           options: FaceOptions) -> list[Face]:
    """Boxes on the copy -> faces in the photo's pixels: clipped, filtered, largest first, capped."""
    w, h = size
    sx, sy = copy[0] / w, copy[1] / h  # each axis its own: the copy's sides were rounded apart
    faces = []
    for x0, y0, x1, y1, score in rows / np.array([sx, sy, sx, sy, 1.0]):
        box = (max(0, int(x0)), max(0, int(y0)), min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1))))
        side = min(box[2] - box[0], box[3] - box[1])
        if score >= options.threshold and side >= options.min_size:
            faces.append(Face(box, round(float(score), 4)))
    faces.sort(key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)
    return faces[:options.max_faces]


def crop_face(img: Image.Image, face: Face, margin: float) -> Image.Image:
    """The face's square crop (facesense.imaging.face_square: grown by margin, inside the photo)."""
    return img.crop(face_square(face.box, img.size, margin))


# What the engine is given to cut faces: cut_faces with its detector and options bound.
CutFaces = Callable[[list[Image.Image], dict], list[list[tuple[Face, np.ndarray]]]]


def cut_faces(images: list[Image.Image], spec: dict, *, detector: FaceDetector,
              options: FaceOptions) -> list[list[tuple[Face, np.ndarray]]]:
    """Each image's faces, each with its model input (its square, fit as the version's spec says)."""
    return with_inputs(images, detector.detect(images, options), spec, options.margin)


def with_inputs(images: list[Image.Image], found: list[list[Face]], spec: dict,
                margin: float) -> list[list[tuple[Face, np.ndarray]]]:
    """Each image's faces found, each with its square cut and fit as the version's spec says."""
    from runtime.preprocess import fit
    return [[(face, fit(crop_face(img, face, margin), spec)) for face in faces]
            for img, faces in zip(images, found, strict=True)]


def largest_face(img: Image.Image, *, detector: FaceDetector, options: FaceOptions) -> Image.Image | None:
    """The photo's largest face as its square crop (how training images are cut), or None."""
    img, _ = face_copy(img)  # as scoring holds its photos: the same crop pixels
    faces = detector.detect([img], options)[0]
    return crop_face(img, faces[0], options.margin) if faces else None


@dataclass(frozen=True)
class LargestFace:
    """Cuts a training photo to its largest face, as scoring with the version will cut them."""

    detector: FaceDetector
    options: FaceOptions

    def __call__(self, img: Image.Image) -> Image.Image | None:
        return largest_face(img, detector=self.detector, options=self.options)

    @property
    def entry(self) -> dict:
        """What the version records, so every job scoring with it cuts faces the same way."""
        o = self.options
        return {"detector": DETECTOR, "margin": o.margin, "min_size": o.min_size,
                "threshold": o.threshold, "detect_side": o.detect_side}
