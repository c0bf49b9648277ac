"""The GPU check without a GPU: its dry run as CI runs it on every change (and `make test`
leaving out the CUDA tests it runs), and its judgement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import parse_args
from bench.gpu_report import ceilings, judge

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_dry_run_passes_with_every_cuda_test_reported_not_run(tmp_path):
    # bench.precision is left out: on the CPU it times five variants (about 15 s here), and
    # what the GPU runs of it (its CUDA branch) no CPU run exercises anyway.
    out = tmp_path / "gpu-cpu-dryrun.json"
    env = {**os.environ, "PYTHON": sys.executable,
           "FACESENSE_GPU_WHEELS": str(tmp_path / "no-wheels")}  # .whl holds cp312 wheels
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry-run", "--skip", "precision", "--n", "8",
         "--decode-n", "8", "--out", str(out), "--dir", str(tmp_path / "work")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    figures = json.loads(out.read_text())
    assert figures["ok"] and figures["dry_run"] and figures["device"] == "cpu-dryrun"
    tests = figures["stages"]["tests"]
    assert tests["counts"]["passed"] == tests["counts"]["failed"] == tests["counts"]["error"] == 0
    reasons = {t["name"].split("[")[0]: t["reason"] for t in tests["tests"]}
    assert {t["outcome"] for t in tests["tests"]} == {"skipped"}
    assert reasons["test_one_training_epoch_in_bf16"] == "CUDA not available"
    assert reasons["test_a_corrupt_jpeg_in_a_gpu_batch_falls_back_per_image"] == "CUDA not available"
    assert reasons["test_the_reaction_video_decoder_on_the_gpu"].startswith("not run: ")
    stages = figures["stages"]
    assert stages["precision"] == "not run: --skip"
    assert stages["decode"]["gpu"] == stages["model_only"]["note"] == "not run: CUDA not available"
    assert stages["engine"]["cpu"] > 0 and stages["forward"]["from_host"] > 0
    assert stages["system"]["images_per_s"] > 0 and stages["system"]["device"] == "cpu"
    assert {t["met"] for t in figures["targets"].values()} == {None}  # nothing judged on a CPU
    # And `make test` (plain pytest) deselects exactly the tests the check's -m cuda ran
    count = len(tests["tests"])
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", "tests/test_cuda.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert count >= 13 and f"{count} deselected" in done.stdout, done.stdout[-2000:]


def test_dry_run_sizes_are_tiny_and_gpu_sizes_fill_20_seconds():
    dry, real = parse_args(["--dry-run"]), parse_args(["--n", "5000"])
    assert (dry.n, dry.epochs, dry.batch) == (16, 0, 8)
    assert (real.n, real.epochs, real.batch, real.precision_n) == (5000, 8, 0, 128)
    with pytest.raises(SystemExit):
        parse_args(["--skip", "tests,nonsense"])


def test_ceilings_overlap_cpu_decoding_with_the_gpu_and_add_what_shares_a_device():
    decode = {"cpu_images_per_s": 1000.0, "gpu_images_per_s": 4000.0}
    forward = {"from_host": 3000.0, "from_device": 12000.0}
    on_gpu = ceilings(decode, forward, cuda=True)
    assert on_gpu == {"cpu_decode": 1000.0, "gpu_decode": 3000.0, "best": 3000.0}
    assert ceilings(decode, {"from_host": 1000.0}, cuda=False) == {"cpu_decode": 500.0,
                                                                    "best": 500.0}
    assert ceilings({"error": "x"}, forward, cuda=True).startswith("not computed")


def figures(cuda: bool, **stages) -> dict:
    """A check's figures with these stages, from a GPU run or a dry run."""
    return {"cuda": cuda, "dry_run": not cuda, "stages": stages}


def test_targets_are_judged_only_on_a_gpu_and_auto_only_against_the_faster_decoder():
    measured = figures(True, system={"images_per_s": 2600.0}, engine={"cpu": 900.0, "gpu": 2700.0},
                       ceiling={"best": 3000.0}, model_only={"bf16": 90_000.0, "bf16-full": 120_000.0},
                       decode={"cpu_images_per_s": 1000.0, "gpu_images_per_s": 4000.0,
                               "auto": {"choice": "cpu"}})
    targets = judge(measured)
    assert targets["d_system_images_per_s"]["met"] is True
    assert targets["c_over_ceiling"] == {"target": 0.85, "figure": 0.9, "met": True}
    assert targets["model_only_bf16_images_per_s"]["figure"] == 120_000.0
    assert targets["auto_picks_nvjpeg_only_where_faster"]["met"] is False  # nvJPEG was faster
    dry = judge(figures(False, system={"images_per_s": 16.0}, decode={"gpu": "not run"}))
    assert {t["met"] for t in dry.values()} == {None}
