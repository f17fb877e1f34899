#!/usr/bin/env bash
# The pre-registered campaign of docs/results.md, one run at a time, in the order that makes a partial
# campaign most informative:
#   scripts/campaign.sh [WORK] [RESULTS]   (defaults runs/campaign and results/campaign; run from the repo root)
# Each run trains in WORK (weights, checkpoints: never committed), gets its eval-only controls, and then its
# small outputs (resolved config, spec, splits, metrics, per-row predictions, summary, control predictions,
# log with each attempt's wall time, an interrupted one's too) are copied to RESULTS/<run>/; commit those. A
# run already in RESULTS is skipped; a run interrupted in WORK resumes from its last checkpoint (or starts again
# without one). So the campaign continues where it stopped, on any machine, across sessions.
# `cot-transplant results RESULTS` rewrites the tables.
#
# Environment: CT (the command; default cot-transplant), CONFIG (default configs/campaign.yaml; a GPU-sized
# design: configs/campaign-7b.yaml), ONLY (a regex: run only the matching run names), STOP_AFTER (seconds: start
# no new run after this long), NICE (default 0).
set -euo pipefail
WORK=${1:-runs/campaign}
RESULTS=${2:-results/campaign}
CT=${CT:-cot-transplant}
CONFIG=${CONFIG:-configs/campaign.yaml}
ONLY=${ONLY:-.}
STOP_AFTER=${STOP_AFTER:-0}
STARTED=$(date +%s)
STOPPED=0
mkdir -p "$WORK" "$RESULTS"

CURRENT='' CURRENT_START=0  # the run in progress, so an interruption still counts its wall time
begin() {  # begin NAME: an attempt at a run starts; its wall time counts from here
  CURRENT=$1 CURRENT_START=$(date +%s)
  echo "campaign: $1" >&2
}
log_wall() {  # log_wall [interrupted]: the attempt's wall time goes to its run's log; the attempt is over
  echo "wall_s $(( $(date +%s) - CURRENT_START ))${1:+ $1}" >> "$WORK/$CURRENT.log"
  CURRENT=''
}
interrupted() {  # the session ended or Ctrl-C mid-run: the run's wall so far goes to its log, then stop
  if [ -n "$CURRENT" ]; then log_wall interrupted; fi
  exit 130
}
trap interrupted INT TERM HUP

wanted() {  # wanted NAME: not finished yet, selected by ONLY, and time left to start it
  [ -e "$RESULTS/$1/summary.json" ] || [ -e "$RESULTS/$1/done" ] && return 1
  echo "$1" | grep -Eq "$ONLY" || return 1
  if [ "$STOP_AFTER" -gt 0 ] && [ $(( $(date +%s) - STARTED )) -ge "$STOP_AFTER" ]; then
    echo "campaign: STOP_AFTER reached; not starting $1" >&2; STOPPED=1; return 1
  fi
}

export_run() {  # export_run NAME: the run's small outputs to RESULTS/NAME (no weights)
  local src=$WORK/$1 dst=$RESULTS/$1
  mkdir -p "$dst/predictions"
  cp "$src"/{config.yaml,spec.json,splits.json,metrics.jsonl} "$dst/"
  cp "$src"/predictions/*.csv "$dst/predictions/"
  cp "$src"/eval-*.json "$src"/eval-*.csv "$dst/" 2>/dev/null || true
  cp "$WORK/$1.log" "$dst/log.txt"
  cp "$src/summary.json" "$dst/"  # last: its presence marks the run finished
  rm -rf "$src/checkpoints" "$src/chosen"  # the controls have run; weights are not kept
}

run() {  # run NAME VARIANT SEED OVERRIDES...: train, eval-only controls (joint), export
  local name=$1 variant=$2 seed=$3; shift 3
  wanted "$name" || return 0
  local dir=$WORK/$name
  begin "$name"
  case $name in gsm8k-*) gsm8k_pairs ;; esac
  {
    if [ -e "$dir/summary.json" ]; then :  # trained; controls or export were interrupted
    elif ls "$dir"/checkpoints/step-*/state.json > /dev/null 2>&1; then
      "$CT" train --resume "$dir"
    else
      rm -rf "$dir"
      "$CT" train "$CONFIG" variant="$variant" seed="$seed" "$@" run.dir="$WORK" run.name="$name"
    fi
    if [ "$variant" = joint ]; then
      for control in "base-arguer" "shuffled-kv --donors length-matched" "swapped-kv"; do
        local label=${control%% *}
        [ "$control" = "shuffled-kv --donors length-matched" ] && label=shuffled-kv-length-matched
        ls "$dir"/eval-step-*-control-"$label".json > /dev/null 2>&1 && continue
        # shellcheck disable=SC2086
        "$CT" eval "$dir" --checkpoint chosen --split test --control $control
      done
    fi
  } >> "$WORK/$name.log" 2>&1
  log_wall
  export_run "$name"
}

probe() {  # probe NAME ARGS...: the base model's states, nested-CV probes (small outputs only are exported)
  local name=$1; shift
  wanted "$name" || return 0
  begin "$name"
  [ "$name" = probe-gsm8k ] && gsm8k_pairs
  "$CT" probe "$@" --out "$WORK/$name" >> "$WORK/$name.log" 2>&1
  log_wall
  mkdir -p "$RESULTS/$name"
  cp "$WORK/$name"/*.json "$RESULTS/$name/"
  cp "$WORK/$name.log" "$RESULTS/$name/log.txt"
  touch "$RESULTS/$name/done"
}

GSM8K_PAIRS=$WORK/gsm8k-pairs.jsonl
gsm8k_pairs() {  # GSM8K's released model solutions, model-written on both sides (deterministic; regenerated)
  [ -e "$GSM8K_PAIRS" ] && return 0
  "$CT" data from-solutions ../shared/gsm8k/example_model_solutions.jsonl --correct model --choices none \
    --out "$GSM8K_PAIRS" > "$WORK/gsm8k-pairs.log" 2>&1
  mkdir -p "$RESULTS/gsm8k-pairs"
  cp "$WORK/gsm8k-pairs.log" "$RESULTS/gsm8k-pairs/log.txt"
  cp "$GSM8K_PAIRS".counts.json "$RESULTS/gsm8k-pairs/" 2>/dev/null || true
}
GSM8K=(data.path="$GSM8K_PAIRS" data.split=grouped data.val_fraction=0.07 data.test_fraction=0.35)

# 1. The positive control at the main runs' settings: every row's verdict readable by the arguer only.
#    text-only's input does not depend on the planted fraction, so plant100's text-only serves every level.
run plant100-joint-s0 joint 0 data.planted_fraction=1.0
run plant100-text-only-s0 text-only 0 data.planted_fraction=1.0
# 2. The primary condition (original CSV, no argument), seed 0, and the eval-only controls on joint.
for v in joint text-only frozen-arguer; do run noarg-$v-s0 $v 0; done
# 3. The graded positive controls (the detection limit), and the full-vocabulary loss at full strength.
for f in 25 50 10; do run plant$f-joint-s0 joint 0 data.planted_fraction=0.$f; done
run plantfullce-joint-s0 joint 0 data.planted_fraction=1.0 loss.choice_only=false
run plantfullce-text-only-s0 text-only 0 data.planted_fraction=1.0 loss.choice_only=false
# 4. The primary condition's other seeds.
for seed in 1 2; do for v in joint text-only frozen-arguer; do run noarg-$v-s$seed $v $seed; done; done
# 5. Probes of the base model's states on every CSV row and every GSM8K model pair.
probe probe-csv --data ../shared/seed-data/dataset.csv --template chat
probe probe-gsm8k --data "$GSM8K_PAIRS" --template chat
# 6. GSM8K model-written pairs (no argument), then the original argument format (secondary).
for seed in 0 1 2; do for v in joint text-only frozen-arguer; do run gsm8k-$v-s$seed $v $seed "${GSM8K[@]}"; done; done
for seed in 0 1 2; do for v in joint text-only frozen-arguer; do run arg-$v-s$seed $v $seed data.argument=original; done; done
# 7. The positive-control series' other seeds.
for seed in 1 2; do
  run plant100-text-only-s$seed text-only $seed data.planted_fraction=1.0
  for f in 100 50 25 10; do run plant$f-joint-s$seed joint $seed data.planted_fraction=$( [ $f = 100 ] && echo 1.0 || echo 0.$f ); done
done
if [ "$STOPPED" = 1 ]; then
  echo "campaign: stopped by STOP_AFTER; run the same command again to continue" >&2
elif [ "$ONLY" != . ]; then
  echo "campaign: every run of $CONFIG matching ONLY=$ONLY is in $RESULTS" >&2
else
  echo "campaign: every run of $CONFIG is in $RESULTS" >&2
fi
