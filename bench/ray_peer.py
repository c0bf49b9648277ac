"""(f) The peer: Ray Data batch inference, as Ray's documentation shows it, on the same photos.

ray.data.read_images -> map_batches preprocessing with torchvision transforms -> map_batches
with a model actor class; Ray started with num_cpus = the machine's cores. Needs the optional
`bench` extra (`pip install .[bench]`, which `make bench` does). The time runs from the
dataset's execution to the last prediction, so it includes Ray starting the model actor (as a
job on a running FaceSense worker does not: (d) runs after a warm-up job).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms as T


def bench_f(root: Path, state: dict, spec: dict, n: int, batch_size: int = 64) -> float:
    """(f) images/s of Ray Data batch inference over every image under root."""
    import ray

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        weights = ray.put(state)  # the actor fetches the weights once, not inside its closure
        transform = T.Compose([T.ToTensor(), T.Resize(spec["resize_size"]),
                               T.CenterCrop(spec["input_size"]),
                               T.Normalize(spec["mean"], spec["std"])])

        def preprocess(batch: dict) -> dict:
            return {"image": np.stack([transform(img).numpy() for img in batch["image"]])}

        class Classifier:
            """The model actor: loads the weights once, scores batches."""

            def __init__(self):
                from runtime.network import build_alexnet
                torch.set_num_threads(cores)
                self.model = build_alexnet(classes).eval()
                self.model.load_state_dict(ray.get(weights))

            def __call__(self, batch: dict) -> dict:
                with torch.inference_mode():
                    probs = torch.softmax(self.model(torch.as_tensor(batch["image"])), 1)
                return {"label": probs.argmax(1).numpy(), "confidence": probs.max(1).values.numpy()}

        classes = state["classifier.6.weight"].shape[0]
        start = time.perf_counter()
        ds = (ray.data.read_images(str(root), mode="RGB", file_extensions=["jpg"])
              .map_batches(preprocess, batch_size=batch_size)
              .map_batches(Classifier, compute=ray.data.ActorPoolStrategy(size=1),
                           batch_size=batch_size))
        rows = sum(len(b["label"]) for b in ds.iter_batches(batch_size=None))
        seconds = time.perf_counter() - start
        assert rows == n, (rows, n)
        return round(n / seconds, 1)
    finally:
        ray.shutdown()
