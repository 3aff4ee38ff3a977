-- wrk script for benches/probe_vs_wrk.sh: the same non-streaming chat request the probe sends
-- (same prompt, model, max_tokens and temperature), so both tools ask the mock for equal work.
-- No `response` hook: it would slow wrk down, and wrk already counts non-2xx answers.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("PROBE_BENCH_BODY")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("wrk_summary requests=%d failed=%d p50_us=%d cpu_hint=0\n",
    summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50)))
end
