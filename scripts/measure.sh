#!/usr/bin/env bash
# Measurements quoted in closing notes, reproducible by anyone:
#   scripts/measure.sh tui       time from start to first frame, and CPU of the idle demo TUI over 30 s
#   scripts/measure.sh daemon    CPU of the daemon supervising 10 idle mock-llm models for 60 s
#   scripts/measure.sh side-by-side [SECS]
#                                htop (1 s refresh), the demo TUI (3 mock models logging, Logs
#                                pane following) and a quiet llmdeck (no models, 2 simulated
#                                GPUs sampled every second), each in a 160x50 tmux pane, measured
#                                in the same run after an 8 s warm-up (default 60 s): CPU and RSS,
#                                and llmdeck's ratios to htop
# Uses the release build (built if missing) and tmux. Prints numbers; changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN="$PWD/target/release/llmdeck"
TICKS=$(getconf CLK_TCK)

cpu_ticks() { # utime + stime of one process
  awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

measure_cpu() { # pid seconds -> percent of one core
  local pid=$1 secs=$2 t0 t1
  t0=$(cpu_ticks "$pid"); sleep "$secs"; t1=$(cpu_ticks "$pid")
  awk -v d=$((t1 - t0)) -v s="$secs" -v hz="$TICKS" 'BEGIN { printf "%.2f%% of one core (%d ticks in %d s)\n", 100 * d / hz / s, d, s }'
}

tui() {
  local dir sock
  dir=$(mktemp -d); sock="$dir/tmux.sock"
  trap 'tmux -S "$sock" kill-server 2>/dev/null || true; rm -rf "$dir"' RETURN
  local start end
  start=$(date +%s%N)
  tmux -S "$sock" -f /dev/null new-session -d -s m -x 120 -y 40 -e HOME="$dir" -e XDG_STATE_HOME="$dir/state" "exec '$BIN' demo"
  until tmux -S "$sock" capture-pane -p -t m 2>/dev/null | grep -q "4 Logs"; do sleep 0.005; done
  end=$(date +%s%N)
  echo "first frame: $(( (end - start) / 1000000 )) ms after launch (tmux polling every 5 ms)"
  local pid; pid=$(tmux -S "$sock" display-message -p -t m '#{pane_pid}')
  sleep 5 # let the mock models start
  echo -n "idle demo TUI (llmdeck process only, 30 s): "; measure_cpu "$pid" 30
  tmux -S "$sock" send-keys -t m q; sleep 0.3; tmux -S "$sock" send-keys -t m y
}

daemon() {
  local dir; dir=$(mktemp -d)
  trap 'kill "$dpid" 2>/dev/null || true; rm -rf "$dir"' RETURN
  {
    echo "gpu: { backend: none }"
    echo "logs: { dir: $dir/logs }"
    echo "models:"
    for i in $(seq 1 10); do
      port=$((20000 + RANDOM % 20000))
      echo "  - { id: m$i, command: $BIN, args: [mock-llm, --port, \"$port\"], port: $port, health: { interval_s: 10 } }"
    done
  } > "$dir/config.yaml"
  HOME="$dir" XDG_STATE_HOME="$dir/state" "$BIN" daemon --config "$dir/config.yaml" > "$dir/events.jsonl" 2>/dev/null &
  dpid=$!
  until [ "$(grep -c '"state":"ready"' "$dir/events.jsonl" 2>/dev/null || true)" -ge 10 ]; do sleep 0.1; done
  echo "10 models ready"
  echo -n "daemon supervising 10 idle models (60 s): "; measure_cpu "$dpid" 60
  kill -TERM "$dpid"; wait "$dpid" || true
}

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

side_by_side() {
  local secs=${1:-60} dir sock
  if ! command -v htop >/dev/null 2>&1; then
    echo "installing htop for the comparison" >&2
    apt-get update -qq && apt-get install -y -qq htop >/dev/null
  fi
  dir=$(mktemp -d); sock="$dir/tmux.sock"
  trap 'tmux -S "$sock" kill-server 2>/dev/null || true; rm -rf "$dir"' RETURN
  printf 'gpu: { backend: simulated, simulated_count: 2, sample_ms: 1000 }\nmodels: []\n' > "$dir/quiet.yaml"
  local env=(-e HOME="$dir" -e XDG_STATE_HOME="$dir/state" -e XDG_DATA_HOME="$dir/data" -e TERM=xterm-256color)
  tmux -S "$sock" -f /dev/null new-session -d -s htop -x 160 -y 50 "${env[@]}" "exec htop -d 10"
  tmux -S "$sock" new-session -d -s demo -x 160 -y 50 "${env[@]}" "exec '$BIN' demo"
  tmux -S "$sock" new-session -d -s quiet -x 160 -y 50 "${env[@]}" -e XDG_STATE_HOME="$dir/quiet" "exec '$BIN' --config '$dir/quiet.yaml'"
  sleep 2
  tmux -S "$sock" send-keys -t demo 4 # the Logs pane, following
  sleep 6 # warm-up: 8 s in all
  local names=(htop demo quiet) pids=() t0=() t1=()
  for n in "${names[@]}"; do pids+=("$(tmux -S "$sock" display-message -p -t "$n" '#{pane_pid}')"); done
  for p in "${pids[@]}"; do t0+=("$(cpu_ticks "$p")"); done
  sleep "$secs"
  for p in "${pids[@]}"; do t1+=("$(cpu_ticks "$p")"); done
  local cpu=()
  echo "same run, ${secs} s after an 8 s warm-up, 160x50 panes:"
  printf '  %-44s %8s %8s\n' program CPU RSS
  for i in 0 1 2; do
    cpu+=("$(awk -v d=$((t1[i] - t0[i])) -v s="$secs" -v hz="$TICKS" 'BEGIN { printf "%.2f", 100 * d / hz / s }')")
    local label
    case ${names[i]} in
      htop) label="htop, 1 s refresh" ;;
      demo) label="llmdeck demo (3 mock models logging)" ;;
      quiet) label="llmdeck, no models, 2 simulated GPUs" ;;
    esac
    printf '  %-44s %7s%% %5s MB\n' "$label" "${cpu[i]}" "$(rss_mib "${pids[i]}")"
  done
  awk -v h="${cpu[0]}" -v d="${cpu[1]}" -v q="${cpu[2]}" 'BEGIN {
    if (h == 0) h = 0.0001
    printf "  demo / htop: %.2fx   quiet / htop: %.2fx\n", d / h, q / h }'
  tmux -S "$sock" send-keys -t demo q; sleep 0.3; tmux -S "$sock" send-keys -t demo y
  tmux -S "$sock" send-keys -t quiet q
  sleep 2
}

case "${1:-}" in
  tui) tui ;;
  daemon) daemon ;;
  side-by-side) side_by_side "${2:-60}" ;;
  *) echo "usage: $0 tui|daemon|side-by-side [SECS]" >&2; exit 2 ;;
esac
