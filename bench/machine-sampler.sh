#!/usr/bin/env bash
# Once a second until killed: UTC time, 1-minute load average, the number of compiler processes
# on the machine (other engineers' builds) and of order-engine processes not started from this
# checkout (other engineers' benchmarks and tests), to tell whether a run overlapped them:
#   bash bench/machine-sampler.sh > bench/results/NAME.machine.log & sampler=$!
#   ... runs ...; kill $sampler
mine=$(cd "$(dirname "$0")/.." && pwd)/target
while true; do
  compilers=$(ps -eo comm= | grep -cE '^(rustc|cc1|cc1plus|rust-lld|ld|lto|cargo|clippy-driver)$')
  engines=0
  for pid in $(pgrep -x order-engine); do
    case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in "$mine"/*) ;; *) engines=$((engines + 1)) ;; esac
  done
  echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) compilers $compilers foreign-engines $engines"
  sleep 1
done
