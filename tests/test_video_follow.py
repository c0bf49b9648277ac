"""Following faces through a video shard's frames (runtime.facefollow): the faces full detection
finds, at a fraction of the full detections; a face that leaves is lost, one that comes is found."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.face_photos import astronaut, face_free, group_photo
from runtime.facefollow import FaceFollower
from runtime.faces import FaceDetector, FaceOptions, crop_face, cut_faces
from runtime.preprocess import fit, spec_for
from tests.videogen import iou

SPEC = spec_for(64)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("cpu")


def scene(face_at: list[tuple[int, int]], size: int = 200) -> Image.Image:
    """A 640x480 room with the astronaut's face-and-shoulders at each position given."""
    room, face = face_free()["coffee"].resize((640, 480)), astronaut().resize((size, size))
    for at in face_at:
        room.paste(face, at)
    return room


def boxes(found) -> list[list[tuple]]:
    return [[face.box for face, _ in cut] for cut in found]


def test_following_finds_what_full_detection_finds_with_few_detections(detector):
    # A viewer moving 14 px a frame (a quarter of the face's side), then jumping 170 px (a cut
    # in the recording: lost, found again by a full detection); a group of four, standing still.
    viewer = [scene([(60 + 14 * i + 170 * (i >= 6), 60 + 6 * (i % 3))], 300) for i in range(12)]
    group = [group_photo(3, 4, (640, 480))[0].convert("RGB")] * 6
    options = FaceOptions()
    for frames, detections in ((viewer, 3 + 1), (group, 2)):  # scheduled: frames 0, 5, 10
        follower = FaceFollower(detector, options, every=5)
        followed = follower(frames[:4], SPEC) + follower(frames[4:], SPEC)  # state spans calls
        full = cut_faces(frames, SPEC, detector=detector, options=options)
        assert all(full) and sum(map(len, full)) >= len(frames) * len(full[0])
        for got, want in zip(boxes(followed), boxes(full), strict=True):
            assert len(got) == len(want)
            for box in want:
                assert max(iou(box, other) for other in got) >= 0.7
        assert follower.seen == len(frames) and follower.detected == detections
    # The model inputs are the followed faces' own crops, cut and fit as for photos.
    face, pixels = followed[3][0]
    assert np.array_equal(pixels, fit(crop_face(frames[3], face, options.margin), SPEC))


def test_a_face_that_leaves_is_lost_and_faces_that_come_are_found(detector):
    empty, one, two = scene([]), scene([(60, 100)]), scene([(60, 100), (380, 100)])
    follower = FaceFollower(detector, FaceOptions(), every=4)
    found = follower([one, one, empty, empty, one, one, two, two, two, two], SPEC)
    # Gone at once; back at once (after a frame without faces every frame is detected); the
    # second viewer is found at the next scheduled full detection (frame 8), not before.
    assert [len(cut) for cut in found] == [1, 1, 0, 0, 1, 1, 1, 1, 2, 2]


def test_every_one_detects_every_frame(detector):
    follower = FaceFollower(detector, FaceOptions(), every=0)
    found = follower([scene([(120 + 24 * i, 80)]) for i in range(3)], SPEC)
    assert [len(cut) for cut in found] == [1, 1, 1] and follower.detected == 3
