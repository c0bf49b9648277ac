"""Faces through a video shard's frames: detect now and then, follow each face in between.

Full detection is most of a video's time with faces on: MTCNN's first stage scans an image
pyramid of every frame. A viewer's face moves little from one sample to the next, so between
full detections each face of the frame before is followed by MTCNN's last two stages alone
(FaceDetector.refine), at a fraction of the cost. A frame is detected in full at the shard's
start and every `every` frames (so a face that comes into the picture beside one already
followed is found at most that late), and whenever following is not possible: the frame before
had no face, changed size, or a followed face is lost (turned away, covered, gone, a cut in the
recording: no successor near it, or a face more than before). Then the next few frames are
detected in full together (a detector batch), as a run of frames without faces would be.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from runtime.faces import Face, FaceDetector, FaceOptions, with_inputs


class FaceFollower:
    """CutFaces for one video shard's frames, called on them in order (its state: the last
    frame's faces): about the faces cut_faces gives frame by frame, found faster."""

    def __init__(self, detector: FaceDetector, options: FaceOptions, every: int):
        self.detector, self.options, self.every = detector, options, max(1, every)
        self.seen = 0  # frames of the shard so far
        self.detected = 0  # of them, found by full detection (the rest followed)
        self._last: list[Face] = []
        self._size: tuple[int, int] | None = None  # the last frame's size

    def __call__(self, images: list[Image.Image], spec: dict) -> list[list[tuple[Face, np.ndarray]]]:
        due = [i for i in range(len(images)) if (self.seen + i) % self.every == 0]
        scheduled = dict(zip(due, self._detect([images[i] for i in due]), strict=True))
        found: list[list[Face]] = []
        while len(found) < len(images):
            i = len(found)
            if i in scheduled:
                found.append(scheduled[i])
            elif (followed := self._follow(images[i])) is not None:
                found.append(followed)
            else:  # this frame and the next few, up to a scheduled one, in one detection call
                end = i + 1
                while end < len(images) and end - i < self.detector.chunk and end not in scheduled:
                    end += 1
                found += self._detect(images[i:end])
            self._last, self._size = found[-1], images[len(found) - 1].size
        self.seen += len(images)
        return with_inputs(images, found, spec, self.options.margin)

    def _detect(self, images: list[Image.Image]) -> list[list[Face]]:
        """Full detection, counted."""
        self.detected += len(images)
        return self.detector.detect(images, self.options) if images else []

    def _follow(self, image: Image.Image) -> list[Face] | None:
        """The last frame's faces followed into this one, or None where that is not possible."""
        if not self._last or image.size != self._size:
            return None
        faces = self.detector.refine(image, self._last, self.options)
        return faces if _one_to_one(self._last, faces) else None


def _one_to_one(before: list[Face], after: list[Face]) -> bool:
    """Every face before has its own successor after (its centre within the face's side of the
    old centre), and there is no other face after."""
    if len(after) != len(before):
        return False
    free = list(after)
    for face in before:
        near = [f for f in free if _distance(face, f) < max(_sides(face))]
        if not near:
            return False
        free.remove(min(near, key=lambda f: _distance(face, f)))
    return True


def _sides(face: Face) -> tuple[int, int]:
    """The box's width and height."""
    return face.box[2] - face.box[0], face.box[3] - face.box[1]


def _distance(a: Face, b: Face) -> float:
    """Between the boxes' centres, in pixels."""
    return float(np.hypot((a.box[0] + a.box[2] - b.box[0] - b.box[2]) / 2,
                          (a.box[1] + a.box[3] - b.box[1] - b.box[3]) / 2))
