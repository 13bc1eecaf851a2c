# One image for every mmq process: workers (with CUDA torch from PyPI), Flower, producers.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tasks ./tasks
COPY workers ./workers
COPY clients ./clients
RUN pip install '.[workers,gateway,dev]'
USER nobody
ENV HF_HOME=/models
ENTRYPOINT ["mmq"]
