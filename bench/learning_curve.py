"""Held-out accuracy against labelled photos per class: from scratch, from the starter, from
ImageNet (where its weights are in the store or reachable).

    python -m bench.learning_curve [--sizes 10,20,40,80,160] [--sets synthetic,lfw]
                                   [--methods scratch,starter,imagenet] [--out FILE]

Each run trains with the job's default params (the starting point aside) through the one
training pipeline, then scores a held-out set it never saw. Figures: bench/out/.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facesense.errors import FacesenseError
from facesense.registry import Registry
from facesense.settings import Settings
from facesense.storage import LocalStore, store_from_settings
from facesense.synthetic import draw_face, jpeg
from facesense.trainparams import TrainParams
from runtime.network import load_model
from runtime.preprocess import preprocess
from runtime.serving import LoadedModel, forward
from trainer.pipeline import train_version

CPU = torch.device("cpu")


def synthetic(root: Path, per_class: int, seed: int) -> None:
    """root/happy and root/sad drawn faces (the project's own generator)."""
    rng = random.Random(seed)
    for label in ("happy", "sad"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / label / f"{i}.jpg").write_bytes(jpeg(draw_face(rng, label == "happy"), rng))


def lfw(root: Path, per_class: int, seed: int, held_out: bool) -> None:
    """root/face and root/other: scikit-image's real LFW faces against its non-face patches
    (the last 30 of each are held out)."""
    from skimage.data import lfw_subset

    images = lfw_subset()  # 100 faces then 100 non-faces, 25x25 grey
    for label, block in (("face", images[:100]), ("other", images[100:])):
        pool = list(block[70:]) if held_out else list(block[:70])
        random.Random(f"{seed}:{label}").shuffle(pool)
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(pool[:per_class]):
            img = Image.fromarray((arr * 255).astype(np.uint8)).convert("RGB").resize((64, 64))
            img.save(root / label / f"{i}.png")


def make_set(name: str, root: Path, per_class: int, seed: int, held_out: bool = False) -> None:
    """A labelled folder of one of the sets."""
    if name == "synthetic":
        synthetic(root, per_class, seed)
    else:
        lfw(root, per_class, seed, held_out)


def held_out_accuracy(registry: Registry, manifest: dict, root: Path) -> float:
    """The version's accuracy on a folder it never saw, prepared as scoring prepares it."""
    model = load_model(manifest, registry.weights(manifest), CPU)
    loaded = LoadedModel(manifest["version"], manifest["classes"], manifest["preprocess"], model,
                         CPU, "fp32")
    right = total = 0
    for label in manifest["classes"]:
        paths = sorted((root / label).iterdir())
        batch = np.stack([preprocess(p.read_bytes(), manifest["preprocess"]) for p in paths])
        pred = forward(loaded, batch).argmax(1)
        right += int((pred == manifest["classes"].index(label)).sum())
        total += len(paths)
    return right / total


def run(set_name: str, method: str, per_class: int, work: Path, settings: Settings,
        registry: Registry, test_root: Path, seed: int) -> dict:
    """Train one way on per_class images of the set; the held-out accuracy and the time."""
    root = work / f"{set_name}-{per_class}-{seed}"
    if not root.is_dir():
        make_set(set_name, root, per_class, seed)
    # 10 a class at the default 0.2 holds out 2 + 2: too few to ever beat chance, so refused.
    raw = {"seed": seed, **({"val_split": 0.3} if per_class < 15 else {})}
    if method == "starter":
        raw.update(base="starter-happy-sad", faces=False)
    elif method == "imagenet":
        raw.update(pretrained=True)
    started = time.perf_counter()
    trained = train_version(LocalStore(root), str(root), TrainParams.parse(raw),
                            settings=settings, registry=registry, device=CPU, precision="fp32",
                            threads=2)
    return {"set": set_name, "method": method, "per_class": per_class, "seed": seed,
            "held_out_accuracy": round(held_out_accuracy(registry, trained.manifest, test_root), 4),
            "val_accuracy": trained.manifest["metrics"]["accuracy"],
            "beats_chance": trained.manifest["chance"]["beats_chance"],
            "epochs_run": trained.manifest["metrics"]["epochs_run"],
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the grid and print one line per run; write the figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,20,40,80,160")
    ap.add_argument("--sets", default="synthetic,lfw")
    ap.add_argument("--methods", default="scratch,starter,imagenet")
    ap.add_argument("--seeds", type=int, default=1, help="repeats per cell (other splits)")
    ap.add_argument("--out", default="bench/out/learning_curve.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="learning-curve-"))
    settings = Settings.from_env().replace(data_dir=str(work / "var"))
    registry = Registry(store_from_settings(settings))
    from cli.local.models import cmd_models_starter

    cmd_models_starter(argparse.Namespace(classes="happy,sad", version=None, promote=None,
                                          sample=None, sample_images=16), settings)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    rows: list[dict] = []
    try:
        for set_name in args.sets.split(","):
            if set_name == "lfw" and "starter" in args.methods:
                print("note: starter on lfw fine-tunes an expression model to tell faces from "
                      "other patches")
            test_root = work / f"{set_name}-test"
            make_set(set_name, test_root, 100 if set_name == "synthetic" else 30, 999,
                     held_out=True)
            for per_class in map(int, args.sizes.split(",")):
                if set_name == "lfw" and per_class > 70:
                    continue  # the subset has 100 of each: 70 to train on, 30 held out
                for method in args.methods.split(","):
                    for seed in range(args.seeds):
                        try:
                            row = run(set_name, method, per_class, work, settings, registry,
                                      test_root, seed)
                        except FacesenseError as e:  # e.g. no ImageNet weights here
                            row = {"set": set_name, "method": method, "per_class": per_class,
                                   "seed": seed, "not_run": str(e)}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"cpu": cpu, "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"\nheld-out accuracy ({cpu}; mean over seeds)\n" + markdown(rows))
    return 0


def markdown(rows: list[dict]) -> str:
    """A table per set: one line per size, one column per method (mean over seeds)."""
    methods = sorted({r["method"] for r in rows}, key=["scratch", "starter", "imagenet"].index)
    lines = []
    for set_name in dict.fromkeys(r["set"] for r in rows):
        lines += [f"| {set_name}, photos per class | " + " | ".join(methods) + " |",
                  "|---" * (len(methods) + 1) + "|"]
        for size in sorted({r["per_class"] for r in rows if r["set"] == set_name}):
            cells = []
            for method in methods:
                got = [r["held_out_accuracy"] for r in rows if (r["set"], r["per_class"],
                       r["method"]) == (set_name, size, method) and "held_out_accuracy" in r]
                cells.append(f"{sum(got) / len(got):.3f}" if got else "not run")
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
