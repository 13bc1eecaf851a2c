#!/usr/bin/env bash
# Everything a GPU can show that the CPU-only suite cannot, in one run of a few minutes (a borrowed
# GPU is held for minutes, not hours), each part under its own time limit, its log in $GPU_CHECKS_OUT:
#   plan     `mmq plan` against the real nvidia-smi
#   tests    the test files whose workers compute, with every worker on CUDA (MMQ_TEST_DEVICE=cuda):
#            each specialisation's tiny model in float16, batching, prepare processes, loads that
#            fail or take long, pool processes respawned
#   oom      a real CUDA out-of-memory (bench/gpu_checks.py)
#   prepare  a batching caption worker's prepare processes stay off the GPU (bench/gpu_checks.py)
#   bench    bench/gpu.sh's B2 and B5 with BLIP-base's architecture (random weights: no hub needed)
# Exits 1 if any part failed; every part runs either way.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT_DIR="${GPU_CHECKS_OUT:-.mmq/gpu-checks}"
mkdir -p "$OUT_DIR"
TEST_FILES="tests/test_end_to_end.py tests/test_batching.py tests/test_batched_specialisations.py
  tests/test_prepare_processes.py tests/test_model_lifecycle.py tests/test_depth.py tests/test_segment.py
  tests/test_features.py tests/test_vqa.py tests/test_seq2seq.py tests/test_text2mesh.py tests/test_image2image.py
  tests/test_safety_checker.py tests/test_image_formats.py tests/test_pixels.py tests/test_worker_crash.py"
# A test that needs what a GPU box may lack (the real MiniLM wheel, PyAV) is left out by name.
DESELECT="${GPU_CHECKS_DESELECT:-not two_models_alternate}"
failed=""

part() {
  local name=$1 limit=$2 started=$SECONDS rc
  shift 2
  echo "== $name (at most $limit s)"
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - started)) s"
  tail -n "${GPU_CHECKS_TAIL:-30}" "$OUT_DIR/$name.log"
  [ "$rc" = 0 ] || failed="$failed $name"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || exit 1
"$PY" -c "import sys, torch, transformers, diffusers; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__)" || exit 1
parallel=""
"$PY" -c "import xdist" 2>/dev/null && parallel="-n ${GPU_CHECKS_TEST_PROCESSES:-3}"

part plan 60 "$PY" -m mmq.clients plan
# shellcheck disable=SC2086 # word splitting wanted: the file list and the xdist option
part tests "${GPU_CHECKS_TESTS_S:-200}" env MMQ_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider \
  --timeout 120 -k "$DESELECT" $parallel $TEST_FILES
part oom "${GPU_CHECKS_OOM_S:-100}" "$PY" -m bench.gpu_checks oom
part prepare "${GPU_CHECKS_PREPARE_S:-100}" "$PY" -m bench.gpu_checks prepare
model="${MMQ_CAPTION_MODEL:-$PWD/.mmq/blip-base-random}"
"$PY" -m bench.dominant_blip base "$model" >"$OUT_DIR/build-blip.log" 2>&1 || model=""
python_has_ray() { "$PY" -c "import ray.serve" 2>/dev/null; }
peers=direct,ray; python_has_ray || peers=direct
part bench "${GPU_CHECKS_BENCH_S:-220}" env MMQ_CAPTION_MODEL="${model:-missing}" MMQ_BENCH_B2_PEERS="$peers" PYTHON="$PY" bench/gpu.sh
echo "== failed:${failed:- nothing}"
[ -z "$failed" ]
