#!/usr/bin/env bash
# B2 (batching) and B5 (cold start) with real-size models on a machine with a GPU and the weights.
# The hub need not be reachable: point the variables at local folders of the checkpoints.
#
#   MMQ_CAPTION_MODEL=/models/blip-image-captioning-base \
#   MMQ_DIFFUSION_MODEL=/models/stable-diffusion-v1-5 bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MMQ_CAPTION_MODEL:?set MMQ_CAPTION_MODEL to a BLIP checkpoint (hub id or local folder)}"
: "${MMQ_DIFFUSION_MODEL:?set MMQ_DIFFUSION_MODEL to a Stable Diffusion checkpoint (hub id or local folder)}"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no GPU visible to torch')"
export MMQ_BENCH_MODELS=env MMQ_DEVICE=cuda MMQ_BENCH_B5=caption,diffusion
export MMQ_CAPTION_MODEL MMQ_DIFFUSION_MODEL
exec "${PYTHON:-.venv/bin/python}" -m bench B2 B5
