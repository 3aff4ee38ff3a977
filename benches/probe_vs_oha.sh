#!/usr/bin/env bash
# Benchmark: llmdeck's probe against wrk and oha, all driving `llmdeck mock-llm` (no added
# latency, non-streaming, the same request, concurrency 32) in the same run. Prints requests/s
# of each, the ratios (goal: probe >= 0.95x oha) and the probe's per-request overhead (CPU time
# per request and median latency, next to wrk's and oha's).
#
#   benches/probe_vs_oha.sh                # builds the release binary first
#   LLMDECK_BIN=target/release/llmdeck SECONDS_PER_RUN=5 ROUNDS=1 benches/probe_vs_oha.sh
#
# Each round runs both tools back to back (alternating which goes first), SECONDS_PER_RUN each
# (default 3); ROUNDS (default 5) rounds after a short warm-up take about 50 s. The ratios are
# medians of the per-round ratios, so a burst of load from something else on the machine skews
# one round, not the result. Installs wrk with apt-get and oha with `cargo install` (into
# ~/.cache/llmdeck/oha, a few minutes the first time) if missing. Not part of `cargo test`.
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

OHA=${OHA:-$(command -v oha || echo "$HOME/.cache/llmdeck/oha/bin/oha")}
if [ ! -x "$OHA" ]; then
    echo "oha not found; installing it with cargo install (first time only)" >&2
    cargo install oha --locked --quiet --root "$HOME/.cache/llmdeck/oha"
    OHA="$HOME/.cache/llmdeck/oha/bin/oha"
fi

# shellcheck source=benches/mock_llm.sh
. benches/mock_llm.sh
# The mock: no latency, tokens as fast as possible.
start_mock_llm --model-name "$MODEL"

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

run_oha() {
    local secs=$1 n=$2
    timed "$work/oha.$n" "$work/oha.$n.cpu" \
        "$OHA" --no-tui --output-format json -z "${secs}s" -c "$CONCURRENCY" -m POST \
        -H "content-type: application/json" -d "$PROBE_BENCH_BODY" "$base/v1/chat/completions"
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
run_oha 1 warm
run_probe 1 warm

# Rotate who goes first, so a slow spell of the machine falls on each tool in turn.
for round in $(seq 1 "$ROUNDS"); do
    case $((round % 3)) in
        1) run_wrk "$SECONDS_PER_RUN" "$round"; run_oha "$SECONDS_PER_RUN" "$round"; run_probe "$SECONDS_PER_RUN" "$round" ;;
        2) run_oha "$SECONDS_PER_RUN" "$round"; run_probe "$SECONDS_PER_RUN" "$round"; run_wrk "$SECONDS_PER_RUN" "$round" ;;
        0) run_probe "$SECONDS_PER_RUN" "$round"; run_wrk "$SECONDS_PER_RUN" "$round"; run_oha "$SECONDS_PER_RUN" "$round" ;;
    esac
done

python3 - "$work" "$ROUNDS" <<'PY'
import json, re, sys
work, rounds = sys.argv[1], int(sys.argv[2])

def cpu(path):
    user, system = open(path).read().split()[-2:]
    return float(user) + float(system)

rows = {"wrk": ([], [], []), "oha": ([], [], []), "llmdeck probe": ([], [], [])}
for n in range(1, rounds + 1):
    text = open(f"{work}/wrk.{n}").read()
    summary = dict(kv.split("=") for kv in re.search(r"wrk_summary (.*)", text).group(1).split())
    requests, failed = int(summary["requests"]), int(summary["failed"])
    if failed:
        sys.exit(f"wrk round {n}: {failed} failed requests")
    rps, cpu_us, p50 = rows["wrk"]
    rps.append(float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1)))
    cpu_us.append(cpu(f"{work}/wrk.{n}.cpu") / requests * 1e6)
    p50.append(int(summary["p50_us"]) / 1000)

    oha = json.load(open(f"{work}/oha.{n}"))
    codes = oha.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    # Requests still in flight at the deadline are "aborted due to deadline": not failures.
    errors = {k: v for k, v in oha.get("errorDistribution", {}).items() if "deadline" not in k}
    if ok != sum(codes.values()) or errors:
        sys.exit(f"oha round {n}: not every request succeeded: {codes} {errors}")
    rps, cpu_us, p50 = rows["oha"]
    rps.append(ok / oha["summary"]["total"])
    cpu_us.append(cpu(f"{work}/oha.{n}.cpu") / ok * 1e6)
    p50.append(oha["latencyPercentiles"]["p50"] * 1000)

    report = json.load(open(f"{work}/probe.{n}"))
    if report["outcomes"]["success"] != report["requests"]:
        sys.exit(f"probe round {n}: not every request succeeded: {report['outcomes']}")
    rps, cpu_us, p50 = rows["llmdeck probe"]
    rps.append(report["requests_per_s"])
    cpu_us.append(cpu(f"{work}/probe.{n}.cpu") / report["requests"] * 1e6)
    p50.append(report["latency_ms"]["p50"])

mean = lambda xs: sum(xs) / len(xs)
median = lambda xs: sorted(xs)[len(xs) // 2] if len(xs) % 2 else mean(sorted(xs)[len(xs) // 2 - 1: len(xs) // 2 + 1])
names = list(rows)
print(f"{'(median of rounds)':24}" + "".join(f"{name:>16}" for name in names))
print(f"{'requests/s':24}" + "".join(f"{median(rows[name][0]):16.0f}" for name in names))
print(f"{'CPU per request (us)':24}" + "".join(f"{median(rows[name][1]):16.1f}" for name in names))
print(f"{'p50 latency (ms)':24}" + "".join(f"{median(rows[name][2]):16.3f}" for name in names))
probe = rows["llmdeck probe"][0]
print("per round: " + "; ".join(
    f"wrk {w:.0f} oha {o:.0f} probe {p:.0f}" for w, o, p in zip(rows["wrk"][0], rows["oha"][0], probe)))
vs_oha = median([p / o for p, o in zip(probe, rows["oha"][0])])
vs_wrk = median([p / w for p, w in zip(probe, rows["wrk"][0])])
print(f"ratio probe/oha: {vs_oha:.3f}x (median of {rounds} rounds; goal >= 0.95x) -> {'OK' if vs_oha >= 0.95 else 'BELOW GOAL'}")
print(f"ratio probe/wrk: {vs_wrk:.3f}x")
for other in ("wrk", "oha"):
    extra = median(rows["llmdeck probe"][1]) - median(rows[other][1])
    print(f"probe CPU per request beyond {other}: {extra:+.1f} us")
PY
