#!/usr/bin/env bash
# Runs the scenarios of BENCHMARKS.md on both backends and appends each run's JSON summary to
# $OUT; bench/medians.py prints the medians. Every scenario runs RUNS times (default 3).
#   bash bench/run-all.sh
#   RUNS=1 SCENARIOS="place callback" BACKENDS=postgres bash bench/run-all.sh
set -u
cd "$(dirname "$0")/.."
cargo build --release -p order-engine -p loadgen   # both binaries, into target/release/
RUNS=${RUNS:-3}
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%S).jsonl}
SCENARIOS=${SCENARIOS:-"place callback mixed memory burst expiry"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
mkdir -p "$(dirname "$OUT")"
run() {
  echo "== $(date -u +%T) loadgen $*" >&2
  target/release/loadgen "$@" --json >> "$OUT"
}
for scenario in $SCENARIOS; do
  for backend in $BACKENDS; do
    for i in $(seq 1 "$RUNS"); do
      case $scenario in
        place) run place --backend "$backend" ;;
        callback) run callback --backend "$backend" --orders 10000 ;;
        mixed) run mixed --backend "$backend" --orders 12000 --payment-timeout-secs 10 ;;
        memory)
          run memory --backend "$backend" --orders 100000
          run memory --backend "$backend" --orders 1000000 ;;  # also the 1M recovery figure
        recovery) run recovery --backend "$backend" ;;
        burst | expiry) run "$scenario" --backend "$backend" --orders 100000 --settle-secs 240 ;;
      esac
    done
  done
done
echo "results in $OUT" >&2
python3 bench/medians.py "$OUT"
