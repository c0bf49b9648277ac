"""Peak memory of checking a manifest as the API does, each case in a fresh process.

`.venv/bin/python -m bench.manifest_memory [--tree DIR]` writes three JSON Lines manifests (16 MiB
of `{}` lines; one million short lines, past the 100,000-row cap; 17 MB of valid long lines)
and prints, for each, the answer and the process's peak RSS (VmHWM, Linux) before and after
the check. --tree
runs another checkout's code (e.g. `git archive <commit> | tar -x -C /tmp/old`); a tree whose
read_manifest returns bytes (before manifests streamed) is driven the old way.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from facesense.inputs import manifests
from facesense.settings import Settings
from facesense.storage import LocalStore
folder, path = sys.argv[2], sys.argv[3]
s = Settings(allowed_roots=(folder,), store=folder + "/store", data_dir=folder + "/var")
def rss():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 1024
before, start, answer = rss(), time.perf_counter(), "accepted"
try:
    data, base = manifests.read_manifest(path, s)
    if isinstance(data, bytes):  # before streaming: the whole file in memory
        manifests.save_manifest(data, "m.jsonl", base, None, LocalStore(folder + "/store"), "j", s)
    else:
        with data:
            manifests.save_manifest(data, "m.jsonl", base, None, LocalStore(folder + "/store"),
                                    "j", s)
except Exception as e:
    answer = f"{type(e).__name__}: {e}"[:60]
print(f"{answer:60} RSS {before:5.0f} -> {rss():5.0f} MB  {time.perf_counter() - start:6.2f} s")
"""


def write_cases(folder: Path) -> dict[str, Path]:
    """The three manifests."""
    cells = ", ".join(f'"c{i}": "{c * 1000}"' for i, c in enumerate("vwxyz"))
    cases = {
        "16 MiB of {} lines": ("empty.jsonl", b"{}\n" * ((16 << 20) // 3)),
        "1,000,000 short lines": ("million.jsonl", "".join(
            f'{{"image": "s3://bucket/p/{i:07d}.jpg"}}\n' for i in range(1_000_000)).encode()),
        "3,401 valid 5 KB lines": ("valid.jsonl", "".join(
            f'{{"image": "s3://bucket/p/{n:05d}.jpg", {cells}}}\n' for n in range(3401)).encode()),
    }
    out = {}
    for label, (name, body) in cases.items():
        (folder / name).write_bytes(body)
        out[label] = folder / name
    return out


def main() -> None:
    """Measure each case in a child process and print one line per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp).resolve()
        for label, path in write_cases(folder).items():
            out = subprocess.run([sys.executable, "-c", CHILD, args.tree, str(folder), str(path)],
                                 capture_output=True, text=True, cwd=args.tree)
            print(f"{label:24} {out.stdout.strip() or out.stderr.strip()[-300:]}")


if __name__ == "__main__":
    main()
