#!/usr/bin/env bash
# Start Seawall for the gateway harness: model mock-gpt -> $UPSTREAM_BASE, the
# harness's API key as master key, trace records + metrics + spans ON.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONF=$RUN_DIR/seawall.yaml
DATA=$RUN_DIR/seawall-data
rm -rf "$DATA"
OTLP_LINE=""
[ "${OTLP:-1}" = 1 ] && OTLP_LINE="  otlp_endpoint: http://127.0.0.1:${OTLP_PORT:-18300}"
cat > "$CONF" <<YAML
data_dir: $DATA
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
exec "$ROOT/.venv/bin/seawall" serve --config "$CONF"
