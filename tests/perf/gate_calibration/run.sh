#!/bin/bash
# Calibrate the regression gate on this machine (the figures in docs/gate.md).
#
# In a scratch project whose conftest.py registers the test kernels of slowed_kernel.py (the
# package's one-thread Q4_K dequantize and gemv, each slowed by spinning for SLOWDOWN of its own
# time), gate N runs each of unchanged code, 10 % slower and 5 % slower, interleaved so that the
# machine's drift hits all three alike, one run each, no confirmation:
#   stored: BASE_RUNS runs (default 5) saved as the baseline first, then each run gated against
#           it at fail-on 5 (every run is also stored: analyse.py gates them again against the
#           baseline's first run alone, and says how much of the run-to-run spread each
#           normalisation removes);
#   ab:     each run is one process timing "new" (slowed) against "old" (not slowed),
#           --quantbench-ab old,new, at fail-on 3.
# SIZES=16x4096 calibrates at another --quantbench-sizes than 16M (small calls show warm-up effects).
# With HOG=1 a memory-bandwidth hog (a process copying 256 MB arrays without end) runs beside it.
#
# usage: tests/perf/gate_calibration/run.sh [stored|ab] [N] [DIR]    (stored: ~25 min, ab: ~8)
set -u
MODE=${1:-stored}
N=${2:-20}
DIR=${3:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$HERE/../../../.venv/bin/python}
mkdir -p "$DIR" && cp "$HERE/slowed_kernel.py" "$DIR/conftest.py" && cd "$DIR" || exit 1
COMMON=(--quantbench --quantbench-sizes="${SIZES:-16M}" -p no:cacheprovider -q)
case $MODE in
  stored) PCT=5; SEL=(-k "throughput and (timed or probe)") ;;
  ab) PCT=3; SEL=(-k "test_ab" --quantbench-ab old,new) ;;  # A/B runs store nothing: their verdicts are in the logs
  *) echo "usage: $0 [stored|ab] [N] [DIR]" >&2; exit 2 ;;
esac
if [ "${HOG:-0}" = 1 ]; then
  "$PY" -c "
import numpy as np
a = np.ones(64 << 20, np.float32); b = np.empty_like(a)
while True: np.copyto(b, a)" &
  HOG_PID=$!
  trap 'kill $HOG_PID' EXIT
fi
date > started.txt
if [ "$MODE" = stored ]; then
  for b in $(seq 1 "${BASE_RUNS:-5}"); do
    "$PY" -m pytest "${COMMON[@]}" "${SEL[@]}" --quantbench-save base --quantbench-keep "${BASE_RUNS:-5}" \
      > "base_$b.log" 2>&1
  done
fi
for i in $(seq 1 "$N"); do
  for slow in 0 0.10 0.05; do
    name="run_${slow}_$i"
    args=(--quantbench-fail-on "$PCT")
    [ "$MODE" = stored ] && args+=(--quantbench-compare base --quantbench-save "$name" --quantbench-keep 1)
    SLOWDOWN=$slow "$PY" -m pytest "${COMMON[@]}" "${SEL[@]}" "${args[@]}" > "$name.log" 2>&1
    echo "$slow $i rc=$?" >> results.txt
  done
done
date > finished.txt
"$PY" "$HERE/analyse.py" "$DIR" | tee summary.md
