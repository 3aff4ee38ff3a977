# Sourced by the benchmark scripts: the release binary, a work dir removed on exit, and
# `start_mock_llm ARGS...`, which starts `llmdeck mock-llm --port 0 ARGS...` and sets `base` to
# its URL (read from its readiness line) and `mock_pid`.

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

start_mock_llm() {
    "$LLMDECK_BIN" mock-llm --port 0 "$@" >"$work/mock.out" 2>"$work/mock.err" &
    mock_pid=$!
    local ready="Uvicorn running on http://"
    for _ in $(seq 1 100); do
        if grep -q "$ready" "$work/mock.out" 2>/dev/null || ! kill -0 "$mock_pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    base=$(grep -o "$ready[0-9.:]*" "$work/mock.out" | head -1 | sed 's/Uvicorn running on //' || true)
    if [ -z "$base" ]; then
        echo "mock-llm did not start (its stderr follows):" >&2
        cat "$work/mock.err" >&2
        exit 1
    fi
}
