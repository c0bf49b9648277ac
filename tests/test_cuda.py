"""The GPU path on a real CUDA device; deselected by `make test`, run by bench/gpu_check.sh.

Self-contained (bench.gpu_check runs it with --noconftest: the GPU machine has no boto3).
Without CUDA every test here is skipped with the reason "CUDA not available".
"""

from __future__ import annotations

import importlib.util
import io
import math
import random
import urllib.request

import numpy as np
import pytest
import torch

from facesense.synthetic import draw_photo
from runtime.network import build_alexnet
from runtime.preprocess import normalize, preprocess, spec_for
from runtime.serving import LoadedModel

pytestmark = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")

CUDA = torch.device("cuda")
SPEC = spec_for(224, 256)
# nvJPEG against libjpeg-turbo on the same file: both are exact-enough IDCTs, but chroma
# upsampling may differ at colour edges, so a few pixels differ by more than rounding.
DECODE_MEAN, DECODE_WITHIN, DECODE_SHARE = 1.5, 8, 0.99
# The GPU path (full decode + antialiased resize) against the engine's CPU path (Pillow's DCT
# draft + one bilinear resize): 0.96-1.07 mean levels on these 2 MP photos with torchvision's
# CPU decoder in the GPU path's geometry, measured on CPU when this bound was written.
ENGINE_MEAN = 2.0


def jpeg(img, quality: int = 90) -> bytes:
    """An image's JPEG bytes (4:2:0, as cameras and Pillow write them)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    """Four 2 MP benchmark photos (drawn) and real photographs from scikit-image, as JPEGs."""
    from bench.face_photos import astronaut, face_free
    rng = random.Random(0)
    drawn = [jpeg(draw_photo(rng, (1600, 1200)), 95) for _ in range(4)]
    scenes = face_free()
    return drawn + [jpeg(astronaut())] + [jpeg(scenes[n]) for n in ("coffee", "chelsea", "rocket")]


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    """A seeded random AlexNet on the GPU in fp32, as the engine holds a version."""
    torch.manual_seed(0)
    model = build_alexnet(2).eval().to(CUDA, memory_format=torch.channels_last)
    return LoadedModel("cuda-test", ["happy", "sad"], SPEC, model, CUDA, "fp32")


@needs_cuda
def test_auto_chooses_cuda_bf16_and_the_gpu_batch():
    from facesense.errors import ConfigError
    from facesense.settings import Settings
    from runtime.device import default_batch_size, resolve_device, resolve_precision
    from worker.model_cache import check_device

    device = resolve_device("auto")
    assert device.type == "cuda"
    assert resolve_precision("auto", device) == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert default_batch_size(device) == 256
    check_device(Settings(device="auto", precision="auto"))
    with pytest.raises(ConfigError, match="CPU only"):
        check_device(Settings(device="auto", precision="int8"))


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                  ("fp16", torch.float16),
                                                  ("bf16-full", torch.bfloat16)])
@needs_cuda
def test_autocast_runs_each_precision_in_its_dtype(loaded, precision, dtype):
    from runtime.device import autocast
    from runtime.precision import run, variant

    x = normalize(torch.randint(0, 256, (8, 224, 224, 3), dtype=torch.uint8), SPEC, CUDA)
    module = variant(loaded.model, precision)
    inner = x.to(torch.bfloat16) if precision == "bf16-full" else x
    with torch.inference_mode(), autocast(CUDA, precision):
        assert module(inner).dtype == dtype
    logits, reference = run(module, precision, x), run(loaded.model, "fp32", x)
    assert logits.dtype == torch.float32 and logits.device.type == CUDA.type
    assert torch.allclose(logits, reference, rtol=0.05, atol=0.05)


@needs_cuda
def test_nvjpeg_decodes_real_jpegs_as_the_cpu_decoder_does(photos):
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in photos]
    on_gpu = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=CUDA)
    for i, data in enumerate(tensors):
        cpu = decode_jpeg(data, mode=ImageReadMode.RGB).to(torch.int16)
        diff = (on_gpu[i].cpu().to(torch.int16) - cpu).abs().float()
        figures = (i, float(diff.mean()), float((diff <= DECODE_WITHIN).float().mean()))
        assert figures[1] <= DECODE_MEAN and figures[2] >= DECODE_SHARE, figures


@needs_cuda
def test_the_gpu_batch_path_matches_the_engines_cpu_path(photos):
    from runtime.gpu_decode import decode_batch_gpu

    drawn = photos[:4]
    batch = decode_batch_gpu(drawn, SPEC, CUDA)
    assert batch.shape == (4, 224, 224, 3) and batch.dtype == torch.uint8
    assert batch.device.type == CUDA.type
    for i, data in enumerate(drawn):
        cpu = preprocess(data, SPEC).astype(np.int16)
        mean = float(np.abs(batch[i].cpu().numpy().astype(np.int16) - cpu).mean())
        assert mean <= ENGINE_MEAN, (i, mean)


def broken_huffman(data: bytes) -> bytes:
    """A JPEG whose header passes every check but whose Huffman table is zeroed: undecodable."""
    i = data.index(b"\xff\xc4")
    n = int.from_bytes(data[i + 2:i + 4], "big")
    return data[:i + 5] + bytes(n - 3) + data[i + 2 + n:]


@needs_cuda
def test_the_gpu_batch_path_makes_a_grey_versions_inputs_grey(photos):
    from runtime.architectures import GREY_64
    from runtime.gpu_decode import decode_batch_gpu

    batch = decode_batch_gpu(photos[:4], GREY_64, CUDA).cpu().numpy().astype(np.int16)
    assert (batch[..., 0] == batch[..., 1]).all() and (batch[..., 1] == batch[..., 2]).all()
    for i, data in enumerate(photos[:4]):
        mean = float(np.abs(batch[i] - preprocess(data, GREY_64).astype(np.int16)).mean())
        assert mean <= ENGINE_MEAN, (i, mean)


@needs_cuda
def test_a_corrupt_jpeg_in_a_gpu_batch_falls_back_per_image(photos, loaded):
    from worker.inference import score

    files = {f"g/{i}.jpg": d for i, d in enumerate(photos[:4])}
    files["g/bad.jpg"] = broken_huffman(photos[0])
    keys = ["g/0.jpg", "g/bad.jpg", "g/1.jpg", "g/2.jpg", "g/3.jpg"]

    def rows(decoder: str) -> list[dict]:
        return list(score(keys, loaded, lambda k, _limit: files[k], batch_size=8, threads=4,
                          max_pixels=10**8, max_bytes=1 << 30, decoder=decoder))

    gpu, cpu = rows("gpu"), rows("cpu")
    assert [r["image"] for r in gpu] == keys
    assert gpu[1]["label"] is None and "cannot decode" in gpu[1]["error"]
    for g, c in zip(gpu, cpu, strict=True):
        assert g["error"] == c["error"]
        if c["probs"]:
            assert max(abs(g["probs"][k] - v) for k, v in c["probs"].items()) <= 0.02, (g, c)


@needs_cuda
def test_batches_reach_the_gpu_through_pinned_memory_without_blocking():
    from torch.profiler import ProfilerActivity, profile

    batch = torch.randint(0, 256, (64, 224, 224, 3), dtype=torch.uint8)
    normalize(batch, SPEC, CUDA)  # warm-up: the pinned allocator, the kernels
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        x = normalize(batch, SPEC, CUDA)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    copies = [n for n in names if "Memcpy HtoD" in n]
    if not copies:
        pytest.skip("not run: the profiler recorded no host-to-device copies (no CUPTI here)")
    assert any("Pinned" in n for n in copies), copies
    assert torch.allclose(x.cpu(), normalize(batch, SPEC, torch.device("cpu")), atol=1e-5)


@needs_cuda
def test_the_worker_metric_reports_gpu_memory():
    from cli.launcher import free_port
    from worker import metrics

    port = free_port()
    assert metrics.serve(port)
    held = torch.empty(64 << 20, dtype=torch.uint8, device=CUDA)

    def allocated() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        line = next(x for x in text.splitlines()
                    if x.startswith('facesense_worker_gpu_memory_allocated_bytes{device="0"}'))
        return float(line.split()[-1])

    holding = allocated()
    assert holding >= held.numel() and holding == torch.cuda.memory_allocated(0)
    del held
    assert allocated() == torch.cuda.memory_allocated(0) < holding


@needs_cuda
def test_one_training_epoch_in_bf16(tmp_path):
    from facesense.storage import LocalStore
    from facesense.synthetic import make_dataset
    from facesense.trainparams import TrainParams
    from trainer.data import load_data
    from trainer.train import fit

    make_dataset(tmp_path / "faces", per_class=8)
    spec = spec_for(64)
    data = load_data(LocalStore(tmp_path / "faces"), val_split=0.25, seed=0, spec=spec,
                     cache_dir=tmp_path / "cache", max_pixels=10**8)
    params = TrainParams.parse({"epochs": 1, "batch_size": 4, "image_size": 64})
    torch.manual_seed(params.seed)
    initial = build_alexnet(len(data.classes)).state_dict()
    torch.cuda.reset_peak_memory_stats()
    result = fit(data, params, spec, device=CUDA, precision="bf16")
    assert len(result.history) == 1 and math.isfinite(result.history[0]["loss"])
    assert torch.cuda.max_memory_allocated() > 0  # the epoch ran on the GPU
    state = result.state
    assert all(v.device.type == "cpu" for v in state.values())
    assert any(not torch.equal(state[k], initial[k]) for k in initial if k.endswith("weight"))


@needs_cuda
def test_faces_are_found_on_the_gpu_as_on_the_cpu():
    pytest.importorskip("facenet_pytorch", reason="not run: facenet-pytorch is not installed "
                        "(bring it in .whl, bench/gpu_wheels.sh)")
    from bench.face_photos import astronaut
    from runtime.faces import FaceDetector, FaceOptions

    photo = astronaut()
    on_gpu = FaceDetector(CUDA).detect([photo], FaceOptions())[0]
    on_cpu = FaceDetector("cpu").detect([photo], FaceOptions())[0]
    assert len(on_gpu) == len(on_cpu) == 1
    assert max(abs(a - b) for a, b in zip(on_gpu[0].box, on_cpu[0].box, strict=True)) <= 4
    x0, y0, x1, y1 = on_gpu[0].box  # the face in scikit-image's astronaut
    assert x0 < 230 < x1 and y0 < 110 < y1


def test_the_reaction_video_decoder_on_the_gpu():
    if importlib.util.find_spec("runtime.video") is None:
        pytest.skip("not run: the reaction-video decoder (runtime.video) is not built yet")
    pytest.fail("runtime.video exists now: write this test against its GPU decode path")
