#!/usr/bin/env bash
# Reproduces every run behind docs/results.md, then rewrites its tables:
#   scripts/results.sh [DIR]      (default runs/results; run from the repository root, ../shared beside it)
# Steps whose output already exists are skipped, so an interrupted call picks up where it stopped.
# CT names the command (default: cot-transplant on PATH, e.g. from `make setup`'s .venv/bin).
set -euo pipefail
OUT=${1:-runs/results}
CT=${CT:-cot-transplant}
SEEDS=${SEEDS:-"0 1 2"}
mkdir -p "$OUT"
timed() {  # timed NAME CMD...: run CMD unless OUT/NAME is done; log to OUT/NAME.log with its wall time
  local name=$1; shift
  if [ -e "$OUT/$name.done" ]; then return 0; fi
  local start; start=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  echo "wall_s $(( $(date +%s) - start ))" >> "$OUT/$name.log"
  touch "$OUT/$name.done"
}
train() {  # train NAME CONFIG OVERRIDES...
  local name=$1 config=$2; shift 2
  rm -rf "${OUT:?}/$name"  # a run that did not finish starts again
  "$CT" train "$config" "$@" run.dir="$OUT" run.name="$name" run.progress=false
}

# 1. The positive control (planted verdicts), bundled SmolLM2.
for v in joint text-only; do
  timed positive-$v-s0 train positive-$v-s0 configs/positive-control.yaml variant=$v seed=0
done
timed positive-eval-shuffled "$CT" eval "$OUT/positive-joint-s0" --checkpoint chosen --split test --control shuffled-kv

# 2. Linear probes of the base model's states: the original CSV, and GSM8K's released model solutions.
timed probe-original "$CT" probe --data ../shared/seed-data/dataset.csv --rows 150 --template chat --out "$OUT/probe-original"
timed gsm8k-pairs "$CT" data from-solutions ../shared/gsm8k/example_model_solutions.jsonl --choices none \
  --out "$OUT/gsm8k-pairs.jsonl"
timed probe-gsm8k "$CT" probe --data "$OUT/gsm8k-pairs.jsonl" --rows 150 --template chat --out "$OUT/probe-gsm8k"

# 3. The original CSV and split: joint and text-only per seed, then shuffled-kv (eval-only) on joint's chosen checkpoint.
for seed in $SEEDS; do
  for v in joint text-only; do
    timed original-$v-s$seed train original-$v-s$seed configs/results-original.yaml variant=$v seed=$seed
  done
  timed original-eval-shuffled-s$seed "$CT" eval "$OUT/original-joint-s$seed" --checkpoint chosen --split test \
    --control shuffled-kv
done

# 4. The tables, and the original CSV's curves beside the original study's published ones.
"$CT" results "$OUT" --doc docs/results.md
"$CT" plot "$OUT"/original-{joint,text-only}-s*/ --reference ../shared/seed-data/seed_test_curves.csv \
  --max-samples 384 --out docs/results-original.png
