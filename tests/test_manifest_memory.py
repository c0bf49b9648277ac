"""A manifest streams through the API (issue 25, item 3): a request's memory stays flat whatever
the file's size, and the first bad line or the row cap ends the read."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc

import pytest

from api import create_app

MIB = 1 << 20


@pytest.fixture(scope="module")
def app_client(settings, model_version):
    """The API with a row cap of 3,400 (a 16 MiB file of long lines passes it only at its end)."""
    return create_app(dataclasses.replace(settings, manifest_max_rows=3400)).test_client()


def measured(client, path) -> tuple[int, str, float, float]:
    """(status, message, peak MiB traced while the API handled it, seconds) of one manifest."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        r = client.post("/v1/jobs", json={"type": "classify", "manifest": str(path)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return r.status_code, r.get_json()["error"]["message"], peak / MIB, time.perf_counter() - start


def test_a_16_mib_json_lines_manifest_is_read_in_flat_memory(app_client, base_dir):
    folder = base_dir / "manifest-memory"
    folder.mkdir(exist_ok=True)
    (folder / "warm.jsonl").write_text("{}\n")
    measured(app_client, folder / "warm.jsonl")  # the app's first request sets up its clients
    # a request refused before any manifest is read: what every request costs (a JSON body is
    # read into a buffer of FACESENSE_MAX_JSON_BYTES)
    base = measured(app_client, "/nowhere/m.jsonl")[2]
    # Given 16 MiB of empty objects (the probe's file: 1.31 GB and 16.6 s before its 400)
    empty = folder / "empty.jsonl"
    empty.write_bytes(b"{}\n" * (16 * MIB // 3))
    # When it is submitted, Then the first line ends the read
    status, message, peak, seconds = measured(app_client, empty)
    assert peak - base < 1 and seconds < 5, (peak, base, seconds)
    assert (status, message) == (400, "line 1: no 'image' key")
    # Given 16 MiB of valid lines (five 1,000-character columns each), one more than the cap
    cells = ", ".join(f'"c{i}": "{c * 1000}"' for i, c in enumerate("vwxyz"))
    lines = [f'{{"image": "s3://bucket/p/{n:05d}.jpg", {cells}}}\n' for n in range(3401)]
    big = folder / "big.jsonl"
    big.write_text("".join(lines))
    assert big.stat().st_size > 16 * MIB
    del lines
    # When it is submitted, Then it is read to its end, line by line: the API's memory for it
    # is a small share of the file (the checked copy spools to disk)
    status, message, peak, seconds = measured(app_client, big)
    assert status == 413 and message.startswith("line 3401: the manifest lists more than 3400")
    print(f"16 MiB JSON Lines manifest: peak {peak:.1f} MiB traced ({base:.1f} MiB for any "
          f"request), {seconds:.1f} s")
    assert peak - base < 6, (peak, base)
