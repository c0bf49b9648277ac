"""runtime.mtcnn against facenet-pytorch's own detect_face: the same faces, box for box, on real
photos (the astronaut, group photos, face-free scenes), alone and batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import detect_face

from bench.face_photos import astronaut, face_free, group_set
from runtime import mtcnn
from runtime.faces import MTCNN_STAGE_THRESHOLDS

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def nets():
    """The wheel's nets twice: as facenet-pytorch keeps them, and channels-last as ours."""
    plain = [net().eval() for net in (PNet, RNet, ONet)]
    ours = [net().eval().to(memory_format=torch.channels_last) for net in (PNet, RNet, ONet)]
    return plain, ours


def reference(frames: np.ndarray, plain, minsize: int) -> list[np.ndarray]:
    """detect_face's boxes [x0, y0, x1, y1, score] per frame."""
    with torch.inference_mode():
        boxes, _ = detect_face(frames, minsize, *plain, list(MTCNN_STAGE_THRESHOLDS), 0.709, CPU)
    return [np.asarray(b, dtype=np.float64).reshape(-1, 5) for b in boxes]


def ours(frames: np.ndarray, nets, minsize: int) -> list[np.ndarray]:
    with torch.inference_mode():
        return mtcnn.detect(frames, minsize, nets, MTCNN_STAGE_THRESHOLDS, 0.709, CPU)


def assert_same(found: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """The same number of faces per frame, boxes within a hundredth of a pixel, same scores."""
    for mine, theirs in zip(found, expected, strict=True):
        assert mine.shape == theirs.shape, (mine, theirs)
        order_m, order_t = np.argsort(-mine[:, 4]), np.argsort(-theirs[:, 4])
        np.testing.assert_allclose(mine[order_m, :4], theirs[order_t, :4], atol=0.01)
        np.testing.assert_allclose(mine[order_m, 4], theirs[order_t, 4], atol=1e-4)


@pytest.mark.parametrize("minsize", [20, 32])
def test_the_group_photos_give_detect_faces_boxes(nets, minsize):
    photos = [img for _, img, _ in group_set(3)]  # 960x640, several faces each
    frames = np.stack([np.asarray(img) for img in photos])
    expected = reference(frames, nets[0], minsize)
    assert sum(len(b) for b in expected) >= 6  # faces to compare, not an empty agreement
    assert_same(ours(frames, nets[1], minsize), expected)


def test_one_frame_and_face_free_scenes_agree_too(nets):
    frames = np.asarray(astronaut())[None]
    expected = reference(frames, nets[0], 20)
    assert len(expected[0]) == 1
    assert_same(ours(frames, nets[1], 20), expected)
    scene = next(iter(face_free().values()))
    assert_same(ours(np.asarray(scene)[None], nets[1], 20), reference(np.asarray(scene)[None], nets[0], 20))


def test_a_crop_is_the_area_mean_of_its_bins():
    """The integral-image crop equals interpolate(mode="area") of the cut box, shrunk or grown."""
    rng = np.random.default_rng(0)
    planar = rng.integers(0, 256, (2, 3, 50, 70), dtype=np.uint8)
    sums = mtcnn._integral(planar)
    boxes = [(1, 3, 40, 5, 37), (0, 0, 50, 0, 70), (1, 10, 17, 20, 29)]  # image, y0, y1, x0, x1
    inds, y0, y1, x0, x1 = (torch.tensor(v) for v in zip(*boxes, strict=True))
    crops = mtcnn._crops(sums, inds, y0, y1, x0, x1, 24)
    for k, (i, a, b, c, d) in enumerate(boxes):
        cut = torch.from_numpy(planar[i, :, a:b, c:d]).float()[None]
        expected = torch.nn.functional.interpolate(cut, size=(24, 24), mode="area")[0]
        torch.testing.assert_close(crops[k], expected, rtol=0, atol=1e-4)


def test_no_candidates_gives_empty_rows(nets):
    frames = np.full((2, 120, 160, 3), 128, dtype=np.uint8)
    found = ours(frames, nets[1], 20)
    assert [f.shape for f in found] == [(0, 5), (0, 5)]
