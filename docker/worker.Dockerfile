# The worker image: CUDA PyTorch base; one container = one GPU = one solo-pool process.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /app
COPY pyproject.toml README.md ./
COPY facesense ./facesense
COPY api ./api
COPY worker ./worker
COPY trainer ./trainer
COPY runtime ./runtime
COPY cli ./cli
RUN pip install --no-cache-dir ".[worker]"
CMD ["facesense", "worker", "--queues", "inference"]
