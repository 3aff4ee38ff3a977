#!/usr/bin/env bash
# Benchmark: llmdeck's probe against wrk, both driving `llmdeck mock-llm` (no added latency,
# non-streaming, concurrency 32) in the same run. Prints requests/s of each, their ratio
# (goal: probe >= 0.7x wrk) and the probe's per-request overhead (CPU time per request and
# median latency, next to wrk's).
#
#   benches/probe_vs_wrk.sh                # builds the release binary first
#   LLMDECK_BIN=target/release/llmdeck SECONDS_PER_RUN=5 ROUNDS=1 benches/probe_vs_wrk.sh
#
# Each round runs both tools back to back (alternating which goes first), SECONDS_PER_RUN each
# (default 3); ROUNDS (default 5) rounds after a short warm-up take about 35 s. The ratio is the
# median of the per-round ratios, so a burst of load from something else on the machine skews
# one round, not the result. Installs wrk with apt-get if missing. Not part of `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
CONCURRENCY=32
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
ROUNDS=${ROUNDS:-5}
MODEL=bench-model
PROMPT="What is 2 + 2? Answer with just the number."
MAX_TOKENS=16
WRK_THREADS=${WRK_THREADS:-2}

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found; installing it with apt-get" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null
    fi
fi

if [ -z "${LLMDECK_BIN:-}" ]; then
    echo "building the release binary (cargo build --release)..." >&2
    cargo build --release --quiet --bin llmdeck
    LLMDECK_BIN=target/release/llmdeck
fi

work=$(mktemp -d)
mock_pid=""
cleanup() {
    if [ -n "$mock_pid" ]; then kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The mock: no latency, tokens as fast as possible; its readiness line carries the port.
"$LLMDECK_BIN" mock-llm --port 0 --model-name "$MODEL" >"$work/mock.out" 2>"$work/mock.err" &
mock_pid=$!
for _ in $(seq 1 100); do
    if grep -q "Uvicorn running on http://" "$work/mock.out" 2>/dev/null; then break; fi
    sleep 0.1
done
base=$(grep -o "Uvicorn running on http://[0-9.:]*" "$work/mock.out" | head -1 | sed 's/Uvicorn running on //')
if [ -z "$base" ]; then
    echo "mock-llm did not start:" >&2
    cat "$work/mock.err" >&2
    exit 1
fi

# The exact body the probe sends for this prompt (see src/probe/runner.rs, request_body).
export PROBE_BENCH_BODY="{\"max_tokens\":$MAX_TOKENS,\"messages\":[{\"content\":\"$PROMPT\",\"role\":\"user\"}],\"model\":\"$MODEL\",\"stream\":false,\"temperature\":0}"
printf '{"prompt": "%s", "expected": "4"}\n' "$PROMPT" >"$work/prompts.jsonl"

# CPU seconds (user+sys) of one command, written to $2; its stdout to $1.
timed() {
    local out=$1 cpu=$2; shift 2
    local TIMEFORMAT="%U %S"
    { time "$@" >"$out" 2>/dev/null; } 2>"$cpu"
}

run_wrk() {
    local secs=$1 n=$2
    timed "$work/wrk.$n" "$work/wrk.$n.cpu" \
        wrk -t"$WRK_THREADS" -c"$CONCURRENCY" -d"${secs}s" --latency \
        -s benches/probe_vs_wrk.lua "$base/v1/chat/completions"
}

run_probe() {
    local secs=$1 n=$2
    timed "$work/probe.$n" "$work/probe.$n.cpu" \
        "$LLMDECK_BIN" probe "$base" --json --no-stream --model "$MODEL" \
        --concurrency "$CONCURRENCY" --duration "$secs" --max-tokens "$MAX_TOKENS" \
        --prompt-file "$work/prompts.jsonl" || true
}

echo "mock-llm at $base; concurrency $CONCURRENCY, non-streaming, ${SECONDS_PER_RUN}s per run, $ROUNDS round(s)" >&2
run_wrk 1 warm
run_probe 1 warm

for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then
        run_wrk "$SECONDS_PER_RUN" "$round"; run_probe "$SECONDS_PER_RUN" "$round"
    else
        run_probe "$SECONDS_PER_RUN" "$round"; run_wrk "$SECONDS_PER_RUN" "$round"
    fi
done

python3 - "$work" "$ROUNDS" <<'PY'
import json, re, sys
work, rounds = sys.argv[1], int(sys.argv[2])

def cpu(path):
    user, system = open(path).read().split()[-2:]
    return float(user) + float(system)

wrk_rps, wrk_cpu_us, wrk_p50 = [], [], []
probe_rps, probe_cpu_us, probe_p50 = [], [], []
for n in range(1, rounds + 1):
    text = open(f"{work}/wrk.{n}").read()
    summary = dict(kv.split("=") for kv in re.search(r"wrk_summary (.*)", text).group(1).split())
    requests, failed = int(summary["requests"]), int(summary["failed"])
    if failed:
        sys.exit(f"wrk round {n}: {failed} failed requests")
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
    wrk_rps.append(rps)
    wrk_cpu_us.append(cpu(f"{work}/wrk.{n}.cpu") / requests * 1e6)
    wrk_p50.append(int(summary["p50_us"]) / 1000)

    report = json.load(open(f"{work}/probe.{n}"))
    if report["outcomes"]["success"] != report["requests"]:
        sys.exit(f"probe round {n}: not every request succeeded: {report['outcomes']}")
    probe_rps.append(report["requests_per_s"])
    probe_cpu_us.append(cpu(f"{work}/probe.{n}.cpu") / report["requests"] * 1e6)
    probe_p50.append(report["latency_ms"]["p50"])

mean = lambda xs: sum(xs) / len(xs)
median = lambda xs: sorted(xs)[len(xs) // 2] if len(xs) % 2 else mean(sorted(xs)[len(xs) // 2 - 1: len(xs) // 2 + 1])
ratios = [p / w for p, w in zip(probe_rps, wrk_rps)]
w, p = median(wrk_rps), median(probe_rps)
print(f"{'(median of rounds)':24}{'wrk':>12}{'llmdeck probe':>16}")
print(f"{'requests/s':24}{w:12.0f}{p:16.0f}")
print(f"{'CPU per request (us)':24}{median(wrk_cpu_us):12.1f}{median(probe_cpu_us):16.1f}")
print(f"{'p50 latency (ms)':24}{median(wrk_p50):12.3f}{median(probe_p50):16.3f}")
print("per round: " + ", ".join(f"wrk {w:.0f} / probe {p:.0f} = {p / w:.2f}x" for w, p in zip(wrk_rps, probe_rps)))
ratio = median(ratios)
print(f"ratio probe/wrk: {ratio:.3f}x (median of {len(ratios)} rounds; goal >= 0.70x) -> {'OK' if ratio >= 0.7 else 'BELOW GOAL'}")
print(f"probe overhead per request: {median(probe_cpu_us) - median(wrk_cpu_us):.1f} us CPU more than wrk "
      f"({median(probe_cpu_us):.1f} vs {median(wrk_cpu_us):.1f}), "
      f"{median(probe_p50) - median(wrk_p50):+.3f} ms at the median latency")
PY
