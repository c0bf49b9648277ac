"""The inference engine: agreement with the plain fp32 reference path, decoder choice, GPU path."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from facesense.errors import FacesenseError
from facesense.synthetic import draw_face
from runtime.device import resolve_precision, time_cpu_precisions
from runtime.gpu_decode import choose_decoder, decode_batch_gpu
from runtime.network import build_alexnet
from runtime.preprocess import preprocess, spec_for
from runtime.serving import LoadedModel
from worker.inference import score

SPEC = spec_for(224, 256)
CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def photos(n: int, size=(1600, 1200)) -> dict[str, bytes]:
    rng, out = random.Random(0), {}
    for i in range(n):
        img = draw_face(rng, i % 2 == 0, size=900).convert("RGB").resize(size)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out[f"g{i % 2}/p{i}.jpg"] = buf.getvalue()
    return out


@pytest.fixture(scope="module")
def loaded():
    torch.manual_seed(0)
    model = build_alexnet(2).eval()
    return LoadedModel("v-test", ["happy", "sad"], SPEC, model, CPU, "fp32")


def run(images: dict[str, bytes], loaded, **kw) -> list[dict]:
    return list(score(list(images), loaded, lambda k, _limit: images[k], batch_size=4, threads=2,
                      max_pixels=10**8, max_bytes=1 << 30, **kw))


def test_engine_matches_the_plain_fp32_reference_path(loaded):
    images = photos(8)
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(SPEC["mean"], SPEC["std"])])
    rows = run(images, loaded)
    with torch.no_grad():
        for row in rows:
            x = reference(Image.open(io.BytesIO(images[row["image"]])).convert("RGB"))[None]
            p = torch.softmax(loaded.model(x), 1)[0]
            assert row["label"] == loaded.classes[int(p.argmax())]
            for i, c in enumerate(loaded.classes):
                assert abs(row["probs"][c] - float(p[i])) < 1e-3


def test_engine_pixels_are_close_to_the_reference_transform():
    # The engine decodes JPEGs at a reduced DCT scale and resizes once; the pixels it feeds the
    # model stay close to the full decode + Resize + CenterCrop a PyTorch user writes.
    data = next(iter(photos(1).values()))
    ours = preprocess(data, SPEC).astype(np.float32)
    ref = np.asarray(T.CenterCrop(224)(T.Resize(256)(Image.open(io.BytesIO(data)).convert("RGB"))),
                     dtype=np.float32)
    assert ours.shape == ref.shape == (224, 224, 3)
    assert np.abs(ours - ref).mean() < 4  # of 255


@pytest.mark.parametrize(("setting", "device", "available", "timings", "expected"), [
    ("auto", CPU, False, None, "cpu"),
    ("gpu", CPU, False, None, "cpu"),  # asked for, but no GPU: fall back, don't fail
    ("auto", CUDA, False, None, "cpu"),  # CUDA without nvJPEG
    ("auto", CUDA, True, {"cpu": 0.004, "gpu": 0.001}, "gpu"),
    ("auto", CUDA, True, {"cpu": 0.001, "gpu": 0.004}, "cpu"),  # measured slower: not used
    ("cpu", CUDA, True, {"cpu": 0.004, "gpu": 0.001}, "cpu"),
    ("gpu", CUDA, True, {"cpu": 0.001, "gpu": 0.004}, "gpu"),  # forced
])
def test_decoder_choice(setting, device, available, timings, expected):
    assert choose_decoder(setting, device, available, timings) == expected


def test_decoder_choice_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown decoder"):
        choose_decoder("fast", CPU, False)


def no_timing():
    raise AssertionError("no measurement expected")


@pytest.mark.parametrize(("setting", "cpu_bf16", "timings", "expected"), [
    ("auto", False, no_timing, "fp32"),  # emulated bf16 (this CI machine): never measured
    ("auto", True, lambda: {"fp32": 0.3, "bf16": 0.1}, "bf16"),  # AVX-512 BF16 / AMX, faster
    ("auto", True, lambda: {"fp32": 0.1, "bf16": 0.3}, "fp32"),  # native but measured slower
    ("auto", True, lambda: {"fp32": 0.11, "bf16": 0.1}, "fp32"),  # within the noise margin
    ("bf16", False, no_timing, "bf16"),  # an explicit setting is honoured
    ("fp32", True, no_timing, "fp32"),
])
def test_cpu_precision_choice(setting, cpu_bf16, timings, expected):
    assert resolve_precision(setting, CPU, cpu_bf16=cpu_bf16, timings=timings) == expected


def test_precision_choice_rejects_unknown_settings():
    with pytest.raises(FacesenseError, match="unknown precision 'int4'"):
        resolve_precision("int4", CPU)


def test_the_cpu_precision_measurement_times_both_paths():
    seconds = time_cpu_precisions.__wrapped__(batch=2, repeats=1)
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())


def test_torch_still_has_the_cpu_bf16_probes():
    # cpu_has_bf16 treats a missing probe as "no bf16": a rename in torch must fail here instead
    assert isinstance(torch.cpu._is_avx512_bf16_supported(), bool)
    assert isinstance(torch.cpu._is_amx_tile_supported(), bool)


def test_batched_jpeg_decode_matches_the_cpu_preprocessing():
    # torchvision's decode_jpeg runs on CPU too: the same code the GPU path runs, checked here.
    images = photos(3, size=(1000, 700))
    batch = decode_batch_gpu(list(images.values()), SPEC, CPU)
    assert batch.shape == (3, 224, 224, 3) and batch.dtype == torch.uint8
    for got, data in zip(batch, images.values(), strict=True):
        assert np.abs(got.numpy().astype(float) - preprocess(data, SPEC).astype(float)).mean() < 4


def test_the_gpu_path_falls_back_per_image_when_a_jpeg_is_corrupt(loaded, monkeypatch):
    import worker.inference as engine

    monkeypatch.setattr(engine, "decode_batch_gpu", lambda datas, spec, device:
                        decode_batch_gpu(datas, spec, CPU))
    images = photos(3)
    good = dict(images)
    key = next(iter(images))
    images[key] = images[key][: len(images[key]) // 2]  # truncated JPEG
    rows = run(images, loaded, decoder="gpu")
    assert [r["image"] for r in rows] == list(images)
    assert rows[0]["error"] and all(r["label"] for r in rows[1:])
    reference = {r["image"]: r for r in run(good, loaded)}
    for r in rows[1:]:
        assert r["label"] == reference[r["image"]]["label"]

