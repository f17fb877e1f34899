#!/usr/bin/env bash
# The GPU smoke test (tests/gpu, pytest marker `gpu`), about 5 minutes on one GPU: tiny Llama and the
# bundled SmolLM2 in fp32, bf16, 8-bit and 4-bit; the fast path against the reference step; one
# evaluation; a stopped run resumed; with 2+ GPUs, two processes against one. What it checks: docs/gpu.md.
#
#   scripts/gpu-smoke.sh                                  # on CUDA; one line and exit 0 where there is none
#   COT_TRANSPLANT_SMOKE_DEVICE=cpu scripts/gpu-smoke.sh  # the same tests on the CPU (8/4-bit skip)
#   scripts/gpu-smoke.sh -k fast_path                     # extra arguments go to pytest
#
# It ends with a summary (versions, GPUs, counts, each failure and skip) to paste into docs/gpu.md,
# and exits non-zero when a test failed. PY picks the Python (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export COT_TRANSPLANT_SMOKE_DEVICE=${COT_TRANSPLANT_SMOKE_DEVICE:-cuda}

skip=$("$PY" tests/gpu/smoke.py skip)
if [ -n "$skip" ]; then
    echo "$skip"
    exit 0
fi

junit=$(mktemp -t gpu-smoke-XXXXXX.xml)
trap 'rm -f "$junit"' EXIT
start=$(date -u +%Y-%m-%dT%H:%MZ)
status=0
"$PY" -m pytest tests/gpu -m gpu -p no:cacheprovider --timeout=300 -rfEs --junitxml="$junit" "$@" || status=$?

echo
echo "## gpu-smoke, $start"
echo '```'
"$PY" tests/gpu/smoke.py header
if [ -s "$junit" ]; then
    "$PY" tests/gpu/smoke.py summary "$junit" || true
else
    echo "pytest wrote no results (exit $status)"
fi
echo '```'
exit "$status"
