"""Training checkpoints: the last state of a run and its best weights, in the store."""

from __future__ import annotations

import shutil
import tempfile
import time

import torch

from facesense.errors import ModelError, ObjectNotFound
from facesense.storage import Store
from runtime.network import to_bytes


class Checkpoints:
    """The last checkpointed epoch's state (model, optimiser, schedule, history) under one key
    in the store, and the best epoch's weights under another (written with it, if improved)."""

    def __init__(self, store: Store, key: str, interval_s: float = 0):
        self.store, self.key, self.interval_s = store, key, interval_s
        self.best_key = key.rsplit(".", 1)[0] + "-best.safetensors"
        self.saved_at = time.monotonic()  # the run's start, until a checkpoint is written

    def due(self) -> bool:
        """Whether interval_s have passed since the last checkpoint (or the run's start)."""
        # Each is ~900 MB with AdamW's state: short epochs must not spend most of their time
        # writing them; a killed run loses at most interval_s plus an epoch.
        return time.monotonic() - self.saved_at >= self.interval_s

    def save_best(self, state: dict) -> None:
        """Write the best weights so far."""
        self.store.put(self.best_key, to_bytes(state))

    def load_best(self) -> dict:
        """The best weights so far."""
        from safetensors.torch import load

        return load(self.store.get(self.best_key))

    def load(self) -> dict | None:
        """The saved state, or None; loaded weights-only, so a checkpoint can't run code."""
        with tempfile.TemporaryFile() as f:
            try:
                with self.store.open(self.key) as stream:
                    shutil.copyfileobj(stream, f, 1 << 20)
            except ObjectNotFound:
                return None
            f.seek(0)
            try:
                return torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ModelError(f"checkpoint {self.key} is not a plain tensor checkpoint "
                                 f"({e})") from None

    def delete(self) -> None:
        """Remove both files (after the version is registered)."""
        self.store.delete(self.key)
        self.store.delete(self.best_key)

    def save(self, state: dict) -> None:
        """Write the state through a temporary file, streamed to the store (multipart on S3;
        atomic either way): no in-memory copy of a checkpoint that can pass 1 GB."""
        with tempfile.TemporaryFile() as f:
            torch.save(state, f)
            f.seek(0)
            self.store.put_stream(self.key, f)
        self.saved_at = time.monotonic()
