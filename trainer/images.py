"""Decoded training images kept in a local file and read a batch at a time.

A dataset of 100,000 images at 256 px is about 20 GB decoded: held in memory (and copied by
np.stack) it would not fit a worker. Each split is decoded once into an unlinked temporary file
(nothing is left behind, whatever ends the process) and read back with pread per batch, so the
process holds one batch, and the kernel's page cache does the rest.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import torch


class DiskImages:
    """uint8 images of shape (side, side, 3) in a file; indexed like a tensor, read on demand."""

    def __init__(self, fd: int, n: int, side: int):
        self.fd, self.n, self.side = fd, n, side
        self.row = side * side * 3
        self.shape = (n, side, side, 3)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> torch.Tensor:
        """Rows by slice (read in one pass) or by a tensor / list of indices (one read each)."""
        if isinstance(index, slice):
            start, stop, step = index.indices(self.n)
            if step != 1:
                raise IndexError("DiskImages slices take no step")
            out = np.empty((max(0, stop - start), *self.shape[1:]), np.uint8)
            view, done = memoryview(out).cast("B"), 0
            while done < len(view):  # pread returns at most ~2 GiB at a time
                got = os.preadv(self.fd, [view[done:]], self.row * start + done)
                if not got:
                    raise OSError("decoded images file ended early")
                done += got
            return torch.from_numpy(out)
        if isinstance(index, int):
            return self[index:index + 1][0]
        rows = [int(i) for i in index]
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for j, r in enumerate(rows):
            out[j] = np.frombuffer(os.pread(self.fd, self.row, self.row * r), np.uint8).reshape(
                self.shape[1:])
        return torch.from_numpy(out)

    def __del__(self):
        with contextlib.suppress(OSError):  # closed already
            os.close(self.fd)


class DiskImagesWriter:
    """Appends decoded images to an unlinked temporary file under folder; used as a context
    manager, so a decode that fails half-way gives its file back at once."""

    def __init__(self, folder: Path, side: int):
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=folder, prefix="decoded-")
        os.unlink(path)  # the open descriptor keeps the data; no file outlives the process
        self.fd, self.side, self.n = fd, side, 0

    def append(self, image: np.ndarray) -> None:
        """Add one (side, side, 3) uint8 image."""
        os.write(self.fd, np.ascontiguousarray(image, np.uint8).tobytes())
        self.n += 1

    def finish(self) -> DiskImages:
        """The images written, ready to read (they now own the file)."""
        images, self.fd = DiskImages(self.fd, self.n, self.side), -1
        return images

    def __enter__(self) -> DiskImagesWriter:
        return self

    def __exit__(self, *_) -> None:
        if self.fd >= 0:  # not finished: an error cut the decode short
            os.close(self.fd)
            self.fd = -1


def ordered_map(fn: Callable, items: Iterable, threads: int, window: int = 64) -> Iterator:
    """fn over items in threads, results in order, with at most window results pending (so
    memory holds a window of decoded images, not the whole dataset)."""
    items = iter(items)
    with ThreadPoolExecutor(threads) as pool:
        pending: list[Future] = [pool.submit(fn, i) for i in islice(items, window)]
        while pending:
            result = pending.pop(0).result()
            pending.extend(pool.submit(fn, i) for i in islice(items, 1))
            yield result
