#!/usr/bin/env bash
# B2 (batching) and B5 (cold start) with real-size models on a machine with a GPU, in under 10
# minutes (a borrowed GPU is held for a few), its table written into docs/benchmarks.md.
# Every side of each comparison (the workers and the in-process baseline) gets the same
# checkpoints and device; each output is checked to be real (a caption that says something, an
# image of more than one colour), or the run fails instead of counting it.
# The hub need not be reachable: point the variables at local folders of the checkpoints (with
# random weights of the real architectures where no weights can be fetched:
# `python -m bench.dominant_blip base FOLDER` builds BLIP-base's). MMQ_DIFFUSION_MODEL is optional
# (B5 then starts the caption worker only); without Ray installed, set MMQ_BENCH_B2_PEERS=direct.
#
#   MMQ_CAPTION_MODEL=/models/blip-image-captioning-base \
#   MMQ_DIFFUSION_MODEL=/models/stable-diffusion-v1-5 bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MMQ_CAPTION_MODEL:?set MMQ_CAPTION_MODEL to a BLIP checkpoint (hub id or local folder)}"
PY="${PYTHON:-.venv/bin/python}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no GPU visible to torch')"
if ! "$PY" -c "import ray.serve" 2>/dev/null; then
  if [ "${MMQ_BENCH_B2_PEERS:-}" != direct ]; then
    echo "B2's peer is missing: pip install -e '.[bench]' (ray[serve]), or MMQ_BENCH_B2_PEERS=direct" >&2
    exit 1
  fi
fi
export MMQ_BENCH_MODELS=env MMQ_DEVICE=cuda MMQ_BENCH_B5=caption${MMQ_DIFFUSION_MODEL:+,diffusion}
export MMQ_CAPTION_MODEL
[ -n "${MMQ_DIFFUSION_MODEL:-}" ] && export MMQ_DIFFUSION_MODEL
exec timeout --signal=INT 570 "$PY" -m bench B2 B5
