#!/usr/bin/env bash
# Runs the scenarios of BENCHMARKS.md on each backend and appends each run's JSON summary to
# $OUT; bench/medians.py prints the medians. Every scenario runs RUNS times (default 3).
#   bash bench/run-all.sh
#   RUNS=1 SCENARIOS="place callback" BACKENDS=postgres bash bench/run-all.sh
#   BACKENDS="sqlite postgres mysql" bash bench/run-all.sh   # MariaDB too (needs libmariadb-dev)
set -u
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%S).jsonl}
SCENARIOS=${SCENARIOS:-"place callback mixed memory burst expiry"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
features=()
case " $BACKENDS " in *" mysql "*) features=(--features mysql) ;; esac
# Both binaries, into target/release/ (with the MySQL backend when it is asked for).
cargo build --release -p order-engine -p loadgen "${features[@]}"
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
