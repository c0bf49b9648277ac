"""Following faces through a video shard's frames (runtime.facefollow): the faces full detection
finds, at a fraction of the full detections; a face that leaves is lost, one that comes is found."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.face_photos import astronaut, face_free, group_photo
from runtime.facefollow import FaceFollower, _one_to_one
from runtime.faces import Face, FaceDetector, FaceOptions, crop_face, cut_faces
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
    # in the recording: lost, found again by full detections); a group of four, standing still.
    viewer = [scene([(60 + 14 * i + 170 * (i >= 6), 60 + 6 * (i % 3))], 300) for i in range(12)]
    group = [group_photo(3, 4, (640, 480))[0].convert("RGB")] * 6
    # Scheduled: frames 0, 5, 10; the cut at frame 6 brings a run of full detections (6-9).
    # detect_side 320: found and followed on a copy half the frame's size.
    for frames, options, detections in ((viewer, FaceOptions(), 3 + 4), (group, FaceOptions(), 2),
                                        (viewer, FaceOptions(detect_side=320), 3 + 4)):
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
    follower = FaceFollower(detector, FaceOptions(), every=8)
    assert detector.chunk == 4  # a CPU detects 4 frames a call: the runs below
    found = follower([one, one] + [empty] * 5 + [one, one] + [two] * 8, SPEC)
    # Lost at frame 2: frames 2-5 detected in one call; frame 5 had no face: 6-7 too (8 is
    # scheduled), so the viewer is back at frame 7 though no detection was scheduled there.
    # The second viewer joins at frame 9 and is found at the next scheduled detection, 16.
    assert [len(cut) for cut in found] == [1, 1, 0, 0, 0, 0, 0, 1, 1] + [1] * 7 + [2]
    assert follower.detected == 3 + 4 + 2


def test_a_frame_of_another_size_is_detected_in_full(detector):
    frame = scene([(60, 100)], 300)
    follower = FaceFollower(detector, FaceOptions(), every=10)
    found = follower([frame, frame.resize((480, 360))], SPEC)
    assert follower.detected == 2 and len(found[1]) == 1
    x0, y0, x1, y1 = found[1][0][0].box
    assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 360


def test_a_followed_face_needs_a_successor_of_its_own():
    a, b = Face((100, 100, 160, 160), 1.0), Face((400, 100, 460, 160), 1.0)

    def moved(face, dx):
        return Face((face.box[0] + dx, face.box[1], face.box[2] + dx, face.box[3]), 1.0)

    assert _one_to_one([a, b], [moved(b, 5), moved(a, 20)])
    assert not _one_to_one([a, b], [moved(b, 5), moved(b, 15)])  # b twice, a gone
    assert not _one_to_one([a, b], [moved(a, 5)])
    assert not _one_to_one([a], [moved(a, 70)])  # moved more than its side: another face
    assert not _one_to_one([a], [a, b])


def test_every_frame_is_detected_when_every_is_under_two(detector):
    for every in (0, 1):
        follower = FaceFollower(detector, FaceOptions(), every=every)
        found = follower([scene([(120 + 24 * i, 80)]) for i in range(3)], SPEC)
        assert [len(cut) for cut in found] == [1, 1, 1] and follower.detected == 3
