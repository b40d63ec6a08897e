#!/usr/bin/env bash
# Once a second until killed: UTC time, 1-minute load average and the number of compiler
# processes on the machine (other engineers' builds), to tell whether a run overlapped a compile:
#   bash bench/machine-sampler.sh > bench/results/NAME.machine.log & sampler=$!
#   ... runs ...; kill $sampler
while true; do
  n=$(ps -eo comm= | grep -cE '^(rustc|cc1|cc1plus|rust-lld|ld|lto|cargo|clippy-driver)$')
  echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) compilers $n"
  sleep 1
done
