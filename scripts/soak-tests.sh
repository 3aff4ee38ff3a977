#!/usr/bin/env bash
# Hunts flaky tests on purpose: runs the whole suite N times (default 20) on a fresh clone of
# HEAD, optionally beside a looping `cargo build --release` of a second clone (the load that
# provoked most flakes seen so far), then prints a table of the runs with the failing tests and
# their first message line.
#
#   scripts/soak-tests.sh [N] [--load] [--keep]
#
# Everything happens in a new temporary directory (printed first); --keep leaves it (and every
# run's full log) behind. The full log of each red run is also copied to target/soak-logs/.
# Exit 0 if every run was green, 1 otherwise.
set -euo pipefail

runs=20 load=0 keep=0
for arg in "$@"; do
  case "$arg" in
    --load) load=1 ;;
    --keep) keep=1 ;;
    '' | *[!0-9]*) echo "usage: $0 [N] [--load] [--keep]" >&2; exit 2 ;;
    *) runs=$arg ;;
  esac
done

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d "${TMPDIR:-/tmp}/llmdeck-soak.XXXXXX")
load_pid=
cleanup() {
  if [ -n "$load_pid" ]; then kill -- "-$load_pid" 2>/dev/null || true; fi
  if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

git clone -q --no-hardlinks "$repo" "$work/clone"
rev=$(git -C "$work/clone" rev-parse --short HEAD)
echo "soak: $runs runs of the suite at $rev$([ "$load" = 1 ] && echo ' beside a looping release build') in $work" >&2

cd "$work/clone"
export CARGO_TARGET_DIR="$work/target"
echo "soak: building the suite once" >&2
cargo test --locked --no-run -q >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }

if [ "$load" = 1 ]; then
  # A second clone, so the load's touches never make the suite rebuild; its own process
  # group, so it can be stopped whole.
  git clone -q --no-hardlinks "$repo" "$work/load-clone"
  setsid bash -c "cd '$work/load-clone' && while :; do touch src/lib.rs; cargo build --release --locked -q --target-dir '$work/load-target' >/dev/null 2>&1 || sleep 1; done" &
  load_pid=$!
fi

red=0
rows=()
for i in $(seq 1 "$runs"); do
  log="$work/run-$i.log"
  start=$(date +%s)
  if cargo test --locked --no-fail-fast >"$log" 2>&1; then
    result=green
  else
    result=red
    red=$((red + 1))
  fi
  secs=$(($(date +%s) - start))
  failing=$(grep -oE '^---- [^ ]+ stdout ----$' "$log" | sed -E 's/^---- (.*) stdout ----$/\1/' | paste -sd, - || true)
  # The line after the first "panicked at": the assertion's message.
  message=$(awk '/panicked at/ { getline; print; exit }' "$log" | cut -c1-110)
  rows+=("$(printf '%4s  %-5s  %4ss  %s' "$i" "$result" "$secs" "${failing:--}")")
  if [ "$result" = red ]; then
    rows+=("$(printf '%19s%s' '' "${message:-(see $log)}")")
    mkdir -p "$repo/target/soak-logs" && cp "$log" "$repo/target/soak-logs/$rev-run-$i.log" || true
  fi
  echo "soak: run $i/$runs $result in ${secs}s" >&2
done

echo
echo "suite at $rev, $runs runs$([ "$load" = 1 ] && echo ', beside a looping cargo build --release'): $((runs - red)) green, $red red"
printf '%4s  %-5s  %5s  %s\n' run result time "failing tests (first message line below)"
printf '%s\n' "${rows[@]}"
[ "$red" = 0 ]
