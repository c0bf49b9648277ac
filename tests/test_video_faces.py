"""Faces in video frames: a batch of a shard's frames detected in one call finds what each frame
detected alone finds, and the frames thread detects a whole batch in one call."""

from __future__ import annotations

import numpy as np
import pytest

from bench.face_photos import group_photo
from facesense.inputs.video.frames import sample
from facesense.inputs.video.limits import VideoLimits
from facesense.inputs.video.probe import probe
from runtime.faces import FaceDetector, FaceOptions, cut_faces, face_copy
from runtime.preprocess import spec_for
from tests.videogen import steady, write_video
from worker.video import _found


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Real frames of two videos: scikit-image's astronaut and a group photo of four faces."""
    root, held = tmp_path_factory.mktemp("video-faces"), []
    group = np.asarray(group_photo(3, 4, (640, 480))[0].convert("RGB")).copy()
    for name, base in (("astronaut.mp4", None), ("group.mp4", group)):
        path = write_video(root / name, steady(2.0), (640, 480), base=base)
        held += [face_copy(s.image)[0] for s in sample(path, probe(path, VideoLimits()), 5, 0, 8)]
    return held


def test_a_batch_of_frames_finds_the_faces_each_frame_finds_alone(frames):
    detector, options = FaceDetector("cpu"), FaceOptions()
    batched = detector.detect(frames, options)
    alone = [detector.detect([frame], options)[0] for frame in frames]
    assert sum(map(len, alone)) >= 8 + 8 * 3, "the astronaut in each frame, most group faces"
    for one, many in zip(alone, batched, strict=True):
        assert len(one) == len(many)
        for a, b in zip(one, many, strict=True):
            assert np.abs(np.subtract(a.box, b.box)).max() <= 1
            assert abs(a.score - b.score) <= 1e-3


def test_the_frames_thread_detects_a_whole_batch_in_one_call(frames):
    calls = []

    def faces(images, spec):
        calls.append(len(images))
        return cut_faces(images, spec, detector=FaceDetector("cpu"), options=FaceOptions())

    batch = [(k / 5, k, frame) for k, frame in enumerate(frames)]
    found = _found(faces, spec_for(64), batch)
    assert calls == [len(frames)]
    assert [k for _, k, _, _ in found] == list(range(len(frames)))
    assert all(cut for _, _, _, cut in found[:8]), "the astronaut found in every frame"
