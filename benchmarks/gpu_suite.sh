#!/usr/bin/env bash
# The extract, adapt and probe benchmarks on one GPU, each under its own time ceiling (about 8 minutes in all);
# prints each benchmark's figures and whether it finished under its ceiling.
#   bash benchmarks/gpu_suite.sh            (from the repository root, with the project's venv active)
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || { echo "error: no GPU visible" >&2; exit 2; }
status=0
run() {  # name ceiling_seconds command...
  local name=$1 ceiling=$2; shift 2
  echo; echo "=== $name (ceiling ${ceiling} s) ==="
  local start=$SECONDS
  timeout "$ceiling" "$@"; local rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then echo "--- $name: ${took} s of ${ceiling} s: OK"
  elif [ "$rc" -eq 124 ]; then echo "--- $name: over its ${ceiling} s ceiling: FAILED"; status=1
  else echo "--- $name: exit status $rc after ${took} s: FAILED"; status=1; fi
}
run extract 120 python benchmarks/extract_throughput.py --n 512 --naive-n 64 --batch-size 64 --device cuda --repeats 2
run adapt 90 python benchmarks/adapt_step.py --backbone resnet18 --method lora --batch-size 64 --steps 30 --device cuda
run probe-logreg 60 python benchmarks/probe_sweep.py --sizes small,large
run probe-heads 200 python benchmarks/probe_heads.py --sizes small,large --device cuda --sample 1
exit $status
