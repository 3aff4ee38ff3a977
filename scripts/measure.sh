#!/usr/bin/env bash
# Measurements quoted in closing notes, reproducible by anyone:
#   scripts/measure.sh tui       time from start to first frame, and CPU of the idle demo TUI over 30 s
#   scripts/measure.sh daemon    CPU of the daemon supervising 10 idle mock-llm models for 60 s
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

case "${1:-}" in
  tui) tui ;;
  daemon) daemon ;;
  *) echo "usage: $0 tui|daemon" >&2; exit 2 ;;
esac
