#!/usr/bin/env bash
# The prepared device check, for a machine with a CUDA GPU; from anywhere in the repository:
#
#   bash benchmarks/gpu_check.sh [OUTPUT.md]     # default: $OUT/gpu_check.md if $OUT is set, else ./gpu_check.md
#
# 1. the CUDA tests (tests/test_cuda.py; tests/test_precision.py for bf16), their summary into the file;
# 2. W1, W3 and S2 for mnistlab and plain PyTorch on the GPU in fp32, then W3 and S2 in bf16
#    (benchmarks.run's contenders and tables: steady s/epoch, sweeps extrapolated from 2 epochs/run).
# Every step has its own time limit and a step that would start past BUDGET_S is skipped (said in the
# file), so the whole stays under 10 minutes (about 6 on an H200). Needs a Python with a CUDA build of
# torch and mnistlab's dependencies ($PYTHON, else .venv/bin/python, else python3) and MNIST's verified
# cache: $MNISTLAB_DATA or ~/.cache/mnistlab, else .mnist/mnist.npz in the repository (a copy of
# ~/.cache/mnistlab/mnist.npz, for a machine without internet).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
OUTFILE=${1:-${OUT:-.}/gpu_check.md}
BUDGET_S=${BUDGET_S:-540}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DATA_DIR=${MNISTLAB_DATA:-$HOME/.cache/mnistlab}
[ -f "$DATA_DIR/mnist.npz" ] || [ ! -f .mnist/mnist.npz ] || DATA_DIR=$PWD/.mnist
export MNISTLAB_DATA=$DATA_DIR
mkdir -p "$(dirname "$OUTFILE")"
START=$(date +%s)

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

step() {  # step SECONDS TITLE COMMAND...: run COMMAND with a limit, its stdout into the file
  local limit=$1 title=$2; shift 2
  if [ "$(left)" -lt "$limit" ]; then
    printf '\n### %s\n\nskipped: %s s left of the %s s budget, the step may take %s s\n' "$title" "$(left)" "$BUDGET_S" "$limit" >> "$OUTFILE"
    return
  fi
  printf '\n### %s\n\n' "$title" >> "$OUTFILE"
  echo "[gpu_check] $title (limit ${limit} s, $(left) s left)" >&2
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >> "$OUTFILE"
  local rc=$?
  printf '\n(exit %s, %s s: `%s`)\n' "$rc" "$(( $(date +%s) - t0 ))" "$*" >> "$OUTFILE"
  echo >> "$OUTFILE"
}

{
  echo "# GPU check"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), \`bash benchmarks/gpu_check.sh\`, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
  "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())'
  echo "MNIST: $DATA_DIR/mnist.npz $([ -f "$DATA_DIR/mnist.npz" ] && echo found || echo MISSING)"
  echo '```'
} > "$OUTFILE"

step 200 "CUDA and precision tests" sh -c "'$PY' -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_precision.py 2>&1 | tail -n 15 | sed 's/^/    /'"

BENCH=("$PY" -m benchmarks.run --contenders mnistlab,torch-plain --device cuda --threads 4 --quiet-wait 0
       --retries 0 --timeout 150 --reps 1 --epochs 3 --for S2:epochs=2 --repeats 1 --data "$DATA_DIR/mnist.npz")
step 200 "fp32: W1, W3" "${BENCH[@]}" --only W1,W3
step 150 "fp32: S2 (one repeat of each of the 9 models, 2 epochs each, extrapolated)" "${BENCH[@]}" --only S2
step 150 "bf16: W3, S2" "${BENCH[@]}" --only W3,S2 --precision bf16

echo "[gpu_check] done in $(( $(date +%s) - START )) s: $OUTFILE" >&2
