#!/usr/bin/env bash
# Runs every loadgen scenario on both backends RUNS times (1M-order scenarios once) and appends
# each run's JSON summary to bench/results/RESULTS.jsonl; bench/medians.py prints the medians.
#   bash bench/run-all.sh            # RUNS=3 by default
#   RUNS=1 SCENARIOS="place callback" bash bench/run-all.sh
set -u
cd "$(dirname "$0")/.."
cargo build --release --bins
RUNS=${RUNS:-3}
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%S).jsonl}
SCENARIOS=${SCENARIOS:-"place callback expiry burst memory recovery"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
mkdir -p "$(dirname "$OUT")"
for scenario in $SCENARIOS; do
  for backend in $BACKENDS; do
    runs=$RUNS
    case $scenario in recovery) runs=1 ;; esac
    for i in $(seq 1 "$runs"); do
      extra=()
      case $scenario in memory) extra=(--orders "${MEMORY_ORDERS:-100000}") ;; esac
      echo "== $scenario $backend run $i ${extra[*]}" >&2
      target/release/loadgen "$scenario" --backend "$backend" --json "${extra[@]}" >> "$OUT"
    done
  done
done
echo "results in $OUT" >&2
python3 bench/medians.py "$OUT"
