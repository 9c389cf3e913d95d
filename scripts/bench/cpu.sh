# shellcheck shell=bash
# Sourced by the gateway benchmarks: CPU time of running processes.

# Clock ticks per second, the unit of cpu_ticks (read by the scripts that
# source this file).
# shellcheck disable=SC2034
ticks=$(getconf CLK_TCK)

# CPU time (user and system, every thread) the processes have used, in
# clock ticks: fields 14 and 15 of /proc/PID/stat.
cpu_ticks() { # pids...
  local pid total=0
  for pid in "$@"; do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/${pid}/stat")))
  done
  echo "${total}"
}
