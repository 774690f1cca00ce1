#!/usr/bin/env bash
# Start Seawall for the gateway harness: model mock-gpt -> $UPSTREAM_BASE, the
# harness's API key as master key, trace records + metrics + spans ON.
# PG_STATE (a bench/pg_services.py state file): the shared deployment instead,
# store.kind postgres (a fresh database, `seawall migrate`d) and Redis.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONF=$RUN_DIR/seawall.yaml
DATA=$RUN_DIR/seawall-data
rm -rf "$DATA"
OTLP_LINE=""
[ "${OTLP:-1}" = 1 ] && OTLP_LINE="  otlp_endpoint: http://127.0.0.1:${OTLP_PORT:-18300}"
STORE_LINES=""
if [ -n "${PG_STATE:-}" ]; then
  DB_URL=$("$ROOT/.venv/bin/python" "$ROOT/bench/pg_services.py" createdb "$PG_STATE")
  REDIS_URL=$("$ROOT/.venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["redis_url"])' "$PG_STATE")
  STORE_LINES="store: {kind: postgres, url: \"$DB_URL\"}
redis: {url: \"$REDIS_URL\"}"
fi
cat > "$CONF" <<YAML
data_dir: $DATA
$STORE_LINES
server: {host: 127.0.0.1, port: $GW_PORT, log_level: warning}
auth: {master_key: "$API_KEY"}
observe:
$OTLP_LINE
  json_logs: true
  traces: {store_content: true}
providers:
  mock: {type: openai, base_url: "$UPSTREAM_BASE", api_key: unused}
models:
  mock-gpt: {provider: mock, price: {input_per_mtok: 2.5, output_per_mtok: 10}}
YAML
[ -z "${PG_STATE:-}" ] || "$ROOT/.venv/bin/seawall" migrate --config "$CONF" >&2
exec "$ROOT/.venv/bin/seawall" serve --config "$CONF" ${SERVE_ARGS:-}
