#!/usr/bin/env bash
# Benchmark: the probe streaming at scale. `llmdeck mock-llm --stamp-chunks` streams TOKENS_PER_S
# tokens a second to each of CONCURRENCY (default 256) streams and stamps every chunk with its
# send time (and the request's receipt); `llmdeck probe` reads them for DURATION_S seconds (default 20).
# Prints the client's CPU per million tokens received, and the TTFT and ITL error the client
# itself adds, from the stamps (one clock: both run on this machine).
#
#   benches/stream_scale.sh                 # builds the release binary first
#   LLMDECK_BIN=target/release/llmdeck CONCURRENCY=64 TOKENS_PER_S=200 benches/stream_scale.sh
#
# The error figures include the loopback and the kernel's scheduling of both processes on a
# 2-core machine: an upper bound of what the probe adds. Not part of `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-256}
TOKENS_PER_S=${TOKENS_PER_S:-100}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-200}
SECONDS_TO_RUN=${DURATION_S:-20}
MODEL=bench-model

# shellcheck source=benches/mock_llm.sh
. benches/mock_llm.sh
start_mock_llm --model-name "$MODEL" --stamp-chunks --tokens-per-s "$TOKENS_PER_S" --output-tokens "$OUTPUT_TOKENS"

# A question the mock has no short answer for: it streams OUTPUT_TOKENS tokens of filler.
printf '{"prompt": "Describe how a model server schedules requests."}\n' >"$work/prompts.jsonl"

echo "mock-llm at $base; $CONCURRENCY streams of $OUTPUT_TOKENS tokens at $TOKENS_PER_S tokens/s each, ${SECONDS_TO_RUN}s" >&2
mock_cpu_before=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$mock_pid/stat")
TIMEFORMAT="%U %S"
{ time "$LLMDECK_BIN" probe "$base" --json --model "$MODEL" --concurrency "$CONCURRENCY" \
    --duration "$SECONDS_TO_RUN" --max-tokens "$OUTPUT_TOKENS" --prompt-file "$work/prompts.jsonl" >"$work/probe.json" 2>"$work/probe.err"; } 2>"$work/probe.cpu" || {
    echo "the probe failed:" >&2; cat "$work/probe.err" >&2; exit 1; }
mock_cpu_after=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$mock_pid/stat")

python3 - "$work" "$(getconf CLK_TCK)" "$mock_cpu_before" "$mock_cpu_after" "$TOKENS_PER_S" <<'PY'
import json, sys
work, hz, before, after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
pace_ms = 1000 / float(sys.argv[5])
report = json.load(open(f"{work}/probe.json"))
user, system = (float(x) for x in open(f"{work}/probe.cpu").read().split()[-2:])
cpu = user + system
ok = report["outcomes"]["success"]
if ok != report["requests"]:
    sys.exit(f"not every stream succeeded: {report['outcomes']} {report['errors']}")
delay = report.get("client_delay")
if not delay:
    sys.exit("the report has no client_delay: the mock did not stamp its chunks")
# Every content chunk is one token here, and each carries a stamp.
tokens = report["output_tokens_per_s"] * report["duration_s"]
secs = report["duration_s"]
print(f"streams finished        {ok} ({report['requests_per_s']:.1f}/s), {tokens:,.0f} tokens in {secs:.1f} s ({tokens / secs:,.0f} tokens/s)")
print(f"client CPU              {cpu:.2f} s ({100 * cpu / secs:.1f}% of one core); per million tokens: {cpu / tokens * 1e6:.2f} s")
print(f"mock-llm CPU            {(after - before) / hz:.2f} s (for comparison)")
ms = lambda v: "-" if v is None else f"{v:.3f}"
fmt = lambda p: f"p50 {ms(p.get('p50'))} ms   p90 {ms(p.get('p90'))}   p99 {ms(p.get('p99'))}   max {ms(p.get('max'))}"
print(f"TTFT error (client)     {fmt(delay['ttft_error_ms'])}")
print(f"ITL error (client)      {fmt(delay['itl_error_ms'])}")
print(f"chunk delivery delay    {fmt(delay['delivery_ms'])}")
print(f"measured TTFT           {fmt(report['ttft_ms'])}")
print(f"measured ITL            {fmt(report['itl_ms'])}   (the server paces {pace_ms:.1f} ms)")
PY
