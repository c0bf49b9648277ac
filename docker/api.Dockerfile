# The API image: Flask under gunicorn, no torch (small and quick to start).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY facesense ./facesense
COPY api ./api
COPY worker ./worker
COPY trainer ./trainer
COPY runtime ./runtime
COPY cli ./cli
RUN pip install --no-cache-dir ".[server]"
USER nobody
EXPOSE 8000
# api.gunicorn_conf: gunicorn's own errors (a 414, a bad request line) are JSON like the app's
CMD ["gunicorn", "-c", "python:api.gunicorn_conf", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4", "--timeout", "300", "api:create_app()"]
