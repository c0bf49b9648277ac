"""Faces through a video shard's frames: detect now and then, follow each face in between.

Full detection is most of a video's time with faces on: MTCNN's first stage scans an image
pyramid of every frame. A viewer's face moves little from one sample to the next, so between
full detections each face of the frame before is followed by MTCNN's last two stages alone
(FaceDetector.refine), at a fraction of the cost. A frame is detected in full at the shard's
start and every `every` frames (so a face that comes into the picture is found at most that
late), whenever the frame before had no face, and whenever a followed face is lost (turned
away, covered, gone, a cut in the recording): a lost face is looked for in the whole frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from runtime.faces import Face, FaceDetector, FaceOptions, crop_face


class FaceFollower:
    """CutFaces for one video shard's frames, called on them in order (state: the last frame's
    faces); the same faces, boxes and model inputs as cut_faces gives, found faster."""

    def __init__(self, detector: FaceDetector, options: FaceOptions, every: int):
        self.detector, self.options, self.every = detector, options, max(1, every)
        self.seen = 0  # frames of the shard so far
        self.detected = 0  # of them, found by full detection (the rest followed)
        self._last: list[Face] = []

    def __call__(self, images: list[Image.Image], spec: dict) -> list[list[tuple[Face, np.ndarray]]]:
        from runtime.preprocess import fit
        # The batch's scheduled full detections in one call: the detector batches them.
        due = [i for i in range(len(images)) if (self.seen + i) % self.every == 0]
        found = self.detector.detect([images[i] for i in due], self.options)
        scheduled = dict(zip(due, found, strict=True))
        out = []
        for i, image in enumerate(images):
            faces = scheduled.get(i)
            if faces is None:
                faces = self._follow(image)
            self.detected += i in scheduled
            self._last = faces
            out.append([(face, fit(crop_face(image, face, self.options.margin), spec))
                        for face in faces])
        self.seen += len(images)
        return out

    def _follow(self, image: Image.Image) -> list[Face]:
        """The last frame's faces followed into this one, or a full detection if there were
        none or one is lost."""
        if self._last:
            faces = self.detector.refine(image, self._last, self.options)
            if len(faces) >= len(self._last):
                return faces
        self.detected += 1
        return self.detector.detect([image], self.options)[0]
