# One image for every mmq process: workers (with CUDA torch from PyPI), Flower, the gateway, and
# the one-off `mmq models pull`.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tasks ./tasks
COPY workers ./workers
COPY clients ./clients

# CUDA comes from PyPI wheels; the host needs only the NVIDIA driver and container toolkit.
# - torch: the default Linux x86_64 wheel targets CUDA 13 (PyPI metadata of torch 2.13.0 to 2.15.0:
#   cuda-toolkit 13.0.3 to 13.2.2 and nvidia-cudnn-cu13; the environment the tests run in has the
#   2.13.0+cpu build instead). Its libraries live in nvidia/cu13/lib and nvidia/cudnn/lib.
# - faster-whisper (MMQ_SPEECH_BACKEND=faster-whisper) runs on CTranslate2, whose PyPI wheels are
#   built for CUDA 12: they dlopen libcublas.so.12, which torch's CUDA 13 does not provide, hence
#   nvidia-cublas-cu12 (nvidia/cublas/lib, no file shared with torch's). CTranslate2 4.6.3 and later
#   use no cuDNN (4.6.0 to 4.6.2 load libcudnn.so.9; 4.6.3 to 4.8.5 reference none), so no
#   nvidia-cudnn-cu12: it would install into nvidia/cudnn/lib over torch's CUDA 13 cuDNN.
# - Flower: only the `stack` extra lists it, beside the embedded servers this image does not need.
RUN pip install '.[workers,gateway]' 'flower>=2.0' 'ctranslate2>=4.6.3' nvidia-cublas-cu12
# The dynamic loader finds libcublas.so.12 here (torch finds its own libraries by itself).
ENV LD_LIBRARY_PATH=/usr/local/lib/python3.11/site-packages/nvidia/cublas/lib
RUN python -c "import ctypes; ctypes.CDLL('libcublas.so.12')"

# A non-root runtime user that owns the model cache (HF_HOME) and the data folder (MMQ_DATA_DIR:
# tiny models, local state). A new named volume mounted on either takes its owner from the image,
# so the `models` volume of docker-compose.yml is writable by the workers and `mmq models pull`.
# (A volume created by an earlier image keeps its owner: remove it, or chown it once.)
# Numeric USER, so that Kubernetes' runAsNonRoot can verify it.
ENV HF_HOME=/models MMQ_DATA_DIR=/data
RUN groupadd --gid 1000 mmq \
    && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin mmq \
    && install -d -o mmq -g mmq "$HF_HOME" "$MMQ_DATA_DIR"
USER 1000:1000
ENTRYPOINT ["mmq"]
