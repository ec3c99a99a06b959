#!/usr/bin/env bash
# The device benchmarks on one GPU in about 8 minutes: per backbone of the benchmark (SEED_BACKBONES), extract
# images/s against the forward ceiling and adapt (LoRA) images/s against the forward + backward ceiling; on one
# backbone every packable method's adapt loop against its ceiling; packed vs one-by-one few-shot runs; the probe
# heads on the GPU. Each stage has its own time ceiling, and the suite skips what would pass SUITE_BUDGET seconds.
# Prints each stage's figures and OK / FAILED / SKIPPED; writes one JSON of every stage (rc, seconds, the stage's
# own JSON figures where it writes them, its output's tail) to $OUT/gpu_suite.json ($OUT if set, else ./).
#   bash benchmarks/gpu_suite.sh                 (repository root, the project's venv active, a GPU visible)
#   DRY_RUN=1 bash benchmarks/gpu_suite.sh       (CPU, tiny sizes, one small backbone: checks the script works)
# Environment: BACKBONES (space-separated; default the benchmark's 11), METHODS_BACKBONE, METHODS, PACK_BACKBONE,
# SUITE_BUDGET (seconds, default 470).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DRY_RUN=${DRY_RUN:-0}
DEST=${OUT:-$PWD}
WORK=$(mktemp -d -t gpu-suite-XXXX)
BUDGET=${SUITE_BUDGET:-470}
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  BACKBONES=${BACKBONES:-resnet18}
  METHODS_BACKBONE=${METHODS_BACKBONE:-resnet18}
  METHODS=${METHODS:-lora bitfit}
  PACK_BACKBONE=${PACK_BACKBONE:-test-tiny-vit}
  EXTRACT_ARGS="--n 4 --naive-n 1 --batch-size 4 --repeats 1 --image-size 32"
  ADAPT_ARGS="--batch-size 2 --steps 1 --warmup 1 --image-size 32 --threads 1"
  PACK_ARGS="--runs 2 --epochs 1 --patients 40 --batch-size 4"
  PROBE_ARGS="--sizes small --sample 1 --heads logreg"
  SCALE=20  # ceilings x20: a loaded, shared 2-core CPU is slow; the dry run checks the script, not the speed
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || { echo "error: no GPU visible (DRY_RUN=1 runs the suite on the CPU at tiny sizes)" >&2; exit 2; }
  DEVICE=cuda
  BACKBONES=${BACKBONES:-$(python -c "from medtransfer.backbones.registry import SEED_BACKBONES; print(*SEED_BACKBONES)")}
  METHODS_BACKBONE=${METHODS_BACKBONE:-dinov2-b}
  METHODS=${METHODS:-lora vera ia3 bitfit ln-tune vpt-deep fft}
  PACK_BACKBONE=${PACK_BACKBONE:-dinov2-b}
  EXTRACT_ARGS="--n 512 --naive-n 16 --batch-size 128 --repeats 1"
  ADAPT_ARGS="--batch-size 32 --steps 10 --warmup 3"
  PACK_ARGS="--runs 8 --epochs 3 --shots 8 --batch-size 16 --patients 200"
  PROBE_ARGS="--sizes small,large --sample 1"
  SCALE=1
fi
echo "gpu suite: device $DEVICE, dry run $DRY_RUN, budget ${BUDGET} s, figures -> $DEST/gpu_suite.json"
status=0
STAGES="$WORK/stages.tsv"
: > "$STAGES"
run() {  # name ceiling_seconds json_or_- command...
  local name=$1 ceiling=$(( $2 * SCALE )) json=$3; shift 3
  echo; echo "=== $name (ceiling ${ceiling} s) ==="
  if [ "$SECONDS" -ge "$BUDGET" ] && [ "$DRY_RUN" != 1 ]; then
    echo "--- $name: SKIPPED (suite budget ${BUDGET} s spent)"; printf '%s\t%s\t%s\t%s\t%s\n' "$name" skipped 0 "$ceiling" - >> "$STAGES"; return
  fi
  local start=$SECONDS
  timeout "$ceiling" "$@" 2>&1 | grep -v -e "UserWarning" -e "attn_output = " | tee "$WORK/$name.log"
  local rc=${PIPESTATUS[0]}
  local took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then echo "--- $name: ${took} s of ${ceiling} s: OK"
  elif [ "$rc" -eq 124 ]; then echo "--- $name: over its ${ceiling} s ceiling: FAILED"; status=1
  else echo "--- $name: exit status $rc after ${took} s: FAILED"; status=1; fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$took" "$ceiling" "$json" >> "$STAGES"
}
for backbone in $BACKBONES; do
  # shellcheck disable=SC2086
  run "extract-$backbone" 25 - python benchmarks/extract_throughput.py --backbone "$backbone" --device $DEVICE $EXTRACT_ARGS
  # shellcheck disable=SC2086
  run "adapt-lora-$backbone" 15 "$WORK/adapt-lora-$backbone.json" python benchmarks/adapt_step.py --backbone "$backbone" \
    --method lora --device $DEVICE $ADAPT_ARGS --json "$WORK/adapt-lora-$backbone.json"
done
for method in $METHODS; do
  # shellcheck disable=SC2086
  run "method-$method-$METHODS_BACKBONE" 15 "$WORK/adapt-$method.json" python benchmarks/adapt_step.py \
    --backbone "$METHODS_BACKBONE" --method "$method" --device $DEVICE $ADAPT_ARGS --json "$WORK/adapt-$method.json"
done
# shellcheck disable=SC2086
run "packed-$PACK_BACKBONE" 90 "$WORK/packed.json" python benchmarks/adapt_packed.py --backbone "$PACK_BACKBONE" \
  --device $DEVICE $PACK_ARGS --json "$WORK/packed.json"
# shellcheck disable=SC2086
run probe-heads 60 - python benchmarks/probe_heads.py --device $DEVICE $PROBE_ARGS
python - "$STAGES" "$WORK" "$DEST/gpu_suite.json" "$DEVICE" "$DRY_RUN" <<'PY'
import json, subprocess, sys
from pathlib import Path
stages, work, dest, device, dry = sys.argv[1:]
report = {"device": device, "dry_run": dry == "1", "stages": {}}
if device == "cuda":
    report["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                    "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
for line in Path(stages).read_text().splitlines():
    name, rc, took, ceiling, figures = line.split("\t")
    log = Path(work) / f"{name}.log"
    entry = {"rc": None if rc == "skipped" else int(rc), "status": "skipped" if rc == "skipped" else
             ("ok" if rc == "0" else "failed"), "seconds": int(took), "ceiling_seconds": int(ceiling),
             "output_tail": log.read_text()[-3000:] if log.is_file() else ""}
    if figures != "-" and Path(figures).is_file():
        entry["figures"] = json.loads(Path(figures).read_text())
    report["stages"][name] = entry
Path(dest).parent.mkdir(parents=True, exist_ok=True)
Path(dest).write_text(json.dumps(report, indent=1))
print(f"figures of {len(report['stages'])} stage(s) -> {dest}")
PY
rm -rf "$WORK"
exit $status
