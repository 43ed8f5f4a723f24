#!/bin/bash
# Calibrate the regression gate on this machine (the figures in README.md, "The gate").
#
# In a scratch project whose conftest.py registers one test kernel (slowed_kernel.py: the
# package's one-thread Q4_K dequantize, slowed by spinning for SLOWDOWN of its own time), store
# one baseline, then gate 20 runs each of unchanged code, 25 % slower and 10 % slower, interleaved
# so that the machine's drift hits all three alike. Every run is also stored, so that other
# thresholds can be evaluated on the same rounds afterwards.
#
# With CONFIRM=1 a failing run is confirmed in a fresh process (the same command again, as the
# README's CI example does): it counts as a failure only if that fails too.
#
# usage: [CONFIRM=1] tests/perf/gate_calibration/run.sh [PCT] [DIR]     (about 12-20 minutes)
set -u
PCT=${1:-5}
DIR=${2:-$(mktemp -d)}
CONFIRM=${CONFIRM:-0}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$HERE/../../../.venv/bin/python}
mkdir -p "$DIR" && cp "$HERE/slowed_kernel.py" "$DIR/conftest.py" && cd "$DIR" || exit 1
SEL=(--quantbench -k "throughput and (timed or probe)" --quantbench-sizes=16M -p no:cacheprovider -q)
"$PY" -m pytest "${SEL[@]}" --quantbench-save base > base.log 2>&1
gate() {  # gate NAME: one gated run at slowdown $slow, stored as NAME
  SLOWDOWN=$slow "$PY" -m pytest "${SEL[@]}" --quantbench-compare base --quantbench-fail-on "$PCT" \
    --quantbench-save "$1" > "$1.log" 2>&1
}
for i in $(seq 1 20); do
  for slow in 0 0.25 0.10; do
    gate "run_${slow}_$i"
    rc=$?
    if [ $rc -ne 0 ] && [ "$CONFIRM" = 1 ]; then
      gate "run_${slow}_${i}_confirm"
      rc=$?
    fi
    echo "$slow $i rc=$rc $(grep -h '^timed' "run_${slow}_$i.log" "run_${slow}_${i}_confirm.log" 2>/dev/null | tr -s ' \n' ' ')" \
      >> results.txt
  done
done
for slow in 0 0.25 0.10; do
  echo "slowdown $slow: $(awk -v s="$slow" '$1 == s && $3 != "rc=0"' results.txt | wc -l) of 20 runs failed the gate at $PCT %"
done
echo "rounds stored in $DIR/.quantbench"
