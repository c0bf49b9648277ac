"""The API and the core must not import torch: their containers and start-up stay small."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import api, facesense
for pkg in (api, facesense):  # every module of both packages, sub-packages included
    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(mod.name)
from api import create_app
from facesense.settings import Settings
create_app(Settings(redis_url="redis://127.0.0.1:1/0", store="{store}"))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "numpy"))
print(",".join(heavy))
"""


def test_api_and_core_import_no_torch(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHECK.format(store=tmp_path)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_worker_does_import_torch(tmp_path):
    # The check above would pass vacuously if module names were wrong; the worker proves it.
    code = "import sys, worker.inference; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
