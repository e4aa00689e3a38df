#!/usr/bin/env bash
# The GPU checks of issue 25, for a session lent a GPU: under 8 minutes on one H100.
#
#   benchmarks/gpu_check.sh [OUT]          # CUDA: FR's 68 folds stacked against fold by fold (one seed),
#                                          # torch TV-L1 pairs/s at 256 px against OpenCV, the CUDA tests
#   benchmarks/gpu_check.sh --tiny [OUT]   # CPU, tiny sizes, CUDA tests only collected: checks that the
#                                          # script runs (tests/test_gpu_check.py); measures nothing
#
# The composite cache is imported from STSTNet's released inputs (fr-mer import-ststnet) found in
# $SHARED, ./shared or ../shared (data/megc2019/ststnet_flow); without them, a synthetic composite
# of 69 subjects (tests/cachefactory.py, 414 samples) stands in, and summary.txt says so.
# Writes OUT (default runs/gpu-check): environment.txt, one log per step, fold_stack/fold_stack.json,
# tvl1_torch-*.json, cuda-tests.log, and summary.txt (each step's exit status and seconds).
# Each step has its own time limit, so one that hangs does not take the session's device time.
# Python: $PYTHON, else .venv/bin/python, else python3 (an environment with fr-mer and a CUDA torch).
set -uo pipefail

TINY=0
if [[ "${1:-}" == "--tiny" ]]; then TINY=1; shift; fi
OUT=${1:-runs/gpu-check}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
mkdir -p "$OUT" || exit 2
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0

# step NAME LIMIT_SECONDS COMMAND...: runs COMMAND with its output in OUT/NAME.log; its status and time in summary.txt
step() {
  local name=$1 limit=$2 start status
  shift 2
  start=$(date +%s)
  echo "== $name: $*" | tee -a "$OUT/$name.log"
  timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
  status=$?
  [[ $status -ne 0 ]] && FAILED=1
  echo "$name: exit $status, $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$SUMMARY"
  tail -n 5 "$OUT/$name.log"
}

if [[ $TINY -eq 1 ]]; then
  DEVICE=cpu
  echo "mode: tiny (CPU, tiny sizes): no figure here means anything" >> "$SUMMARY"
else
  DEVICE=cuda
  echo "mode: GPU" >> "$SUMMARY"
fi

step environment 120 "$PY" -c "
import torch
from fr_mer.environment import describe_environment
from fr_mer.workers import usable_cores
print(describe_environment('$DEVICE'), 'usable cores', usable_cores())
if '$DEVICE' == 'cuda' and not torch.cuda.is_available():
    raise SystemExit('no CUDA device: run with --tiny on a machine without a GPU')
"
cp "$OUT/environment.log" "$OUT/environment.txt"
[[ $FAILED -ne 0 ]] && { cat "$SUMMARY"; exit 1; }

# 1. The composite cache: the real inputs when present, else a synthetic 69-subject composite.
CACHE="$OUT/composite.h5"
LIST_ARGS=()
IMAGES=""
for shared in "${SHARED:-}" ./shared ../shared; do
  if [[ -n "$shared" && -d "$shared/data/megc2019/ststnet_flow" ]]; then IMAGES="$shared/data/megc2019/ststnet_flow"; break; fi
done
if [[ $TINY -eq 0 && -n "$IMAGES" ]]; then
  echo "cache: the real composite inputs, $IMAGES" >> "$SUMMARY"
  step import 120 "$PY" -m fr_mer.cli import-ststnet --images "$IMAGES" --out "$CACHE" --overwrite
else
  SUBJECTS=$([[ $TINY -eq 1 ]] && echo 1 || echo 23)
  echo "cache: synthetic composite, $SUBJECTS subjects per database (tests/cachefactory.py)" >> "$SUMMARY"
  step synthetic-cache 120 "$PY" -c "
from pathlib import Path
from tests.cachefactory import small_composite
folder = Path('$OUT') / 'synthetic'
folder.mkdir(parents=True, exist_ok=True)
print(*small_composite(folder, subjects_per_db=$SUBJECTS))
"
  CACHE="$OUT/synthetic/small.h5"
  LIST_ARGS=(--composite-list "$OUT/synthetic/small_list.csv")
fi

# 2. FR: every fold of a seed stacked (--fold-batch 0) against fold by fold, the same GPU.
if [[ $TINY -eq 1 ]]; then
  step fold-stack 300 "$PY" benchmarks/fold_stack.py --model fr --cache "$CACHE" "${LIST_ARGS[@]}" \
    --out "$OUT/fold_stack" --device cpu --threads 1 --epochs 1 --fold-by-fold 1 --seeds 1
else
  step fold-stack 300 "$PY" benchmarks/fold_stack.py --model fr --cache "$CACHE" "${LIST_ARGS[@]}" \
    --out "$OUT/fold_stack" --device cuda --fold-by-fold 68 --seeds 1
fi

# 3. TV-L1: torch on the GPU, batched, against OpenCV pair by pair on one core and on all.
if [[ $TINY -eq 1 ]]; then
  step tvl1 120 "$PY" benchmarks/tvl1_torch.py --pairs 2 --size 32 --batch 2 --threads 1 --save "$OUT"
else
  step tvl1 90 "$PY" benchmarks/tvl1_torch.py --pairs 32 --size 256 --batch 16 32 --skip-cpu-torch --save "$OUT"
fi

# 4. The tests that need CUDA (they skip on a machine without one; the tiny mode only lists them).
CUDA_TEST_FILES=(tests/test_evaluation.py tests/test_flow_device.py tests/test_fold_stack.py tests/test_func_stack.py
                 tests/test_tvl1_torch.py)
if [[ $TINY -eq 1 ]]; then
  step cuda-tests 120 "$PY" -m pytest --collect-only -q "${CUDA_TEST_FILES[@]}" -k cuda
else
  step cuda-tests 150 "$PY" -m pytest -q -rs "${CUDA_TEST_FILES[@]}" -k cuda
fi

echo
cat "$SUMMARY"
exit $FAILED
