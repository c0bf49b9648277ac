# The API image: Flask under gunicorn, no torch (small and quick to start). Its dependencies are
# exactly requirements/server.txt (hash-checked); the base is pinned by tag (digest:
# docker/pin-images.sh).
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements/server.txt ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/server.txt
COPY pyproject.toml README.md ./
COPY facesense ./facesense
COPY api ./api
COPY worker ./worker
COPY trainer ./trainer
COPY runtime ./runtime
COPY cli ./cli
RUN pip install --no-cache-dir --no-deps .
USER 65534:65534
EXPOSE 8000
# api.gunicorn_conf: gunicorn's own errors (a 414, a bad request line) are JSON like the app's
CMD ["gunicorn", "-c", "python:api.gunicorn_conf", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4", "--timeout", "300", "api:create_app()"]
