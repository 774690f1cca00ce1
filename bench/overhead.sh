#!/usr/bin/env bash
# Gateway overhead: Seawall next to the bare Python floor (python-hop) and
# LiteLLM, in one run of the shared harness (../shared/bench/gateway).
#
#   bash bench/overhead.sh                 # direct python-hop litellm seawall
#   bash bench/overhead.sh direct seawall  # any targets the harness knows, plus "seawall"
#
# Seawall runs as `seawall serve` with auth (master key), trace records
# (content stored, SQLite), Prometheus metrics and OpenTelemetry span export
# (to a local OTLP sink) all ON: the configuration a production user runs.
# Needs: bash scripts/setup.sh (the .venv) and ../shared/bench/gateway/setup.sh litellm.
# Knobs: the harness's (DURATION, CONNS, PHASES, ...), plus OTLP=0 to turn span export off.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
HARNESS=${HARNESS:-$ROOT/../shared/bench/gateway}
OTLP=${OTLP:-1}
OTLP_PORT=${OTLP_PORT:-18300}
[ -x "$ROOT/.venv/bin/seawall" ] || { echo "run: bash scripts/setup.sh" >&2; exit 1; }

SINK_PID=""
if [ "$OTLP" = 1 ]; then
  taskset -c 0 python3 "$HERE/otlp_sink.py" "$OTLP_PORT" & SINK_PID=$!
fi
trap '[ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true' EXIT

# The gateway command the harness runs (GW_PORT, UPSTREAM_BASE, RUN_DIR, API_KEY from it).
SEAWALL_CMD="OTLP=$OTLP OTLP_PORT=$OTLP_PORT exec bash $HERE/seawall_gateway.sh"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(direct python-hop litellm seawall)
ARGS=()
for t in "${TARGETS[@]}"; do
  if [ "$t" = seawall ]; then ARGS+=("seawall|$SEAWALL_CMD"); else ARGS+=("$t"); fi
done
RUN_DIR=${RUN_DIR:-/tmp/gwbench/seawall-$(date +%Y%m%d-%H%M%S)}
export RUN_DIR
bash "$HARNESS/run.sh" "${ARGS[@]}"
mkdir -p "$HERE/results"
cp "$RUN_DIR/report.md" "$HERE/results/overhead-$(date +%Y-%m-%d-%H%M).md"
echo "report copied to bench/results/" >&2
