#!/usr/bin/env bash
# Gateway CPU per request with one setting changed: Seawall started with each
# configuration variant in turn (interleaved rounds), the shared harness's
# nginx mock and request body (../shared/bench/gateway), wrk at 16
# connections, plain answers; CPU from /proc of the gateway process.
#
#   bash bench/overhead_ab.sh                      # default vs redact_traces off vs console off
#   ROUNDS=5 SECS=10 bash bench/overhead_ab.sh
#
# Prints one line per round and variant, then the median per variant. Needs
# wrk and nginx (../shared/bench/gateway/setup.sh) and the .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${HARNESS:-$ROOT/../shared/bench/gateway}
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-8}; PORT=${PORT:-18600}
MOCK_PORT=${MOCK_PORT:-18101}; MOCK_STREAM_PORT=${MOCK_STREAM_PORT:-18102}
WORK=$(mktemp -d /tmp/seawall-ab.XXXXXX)
export BODY_FILE=$HARNESS/lib/request.json API_KEY=sk-bench-1234
declare -A VARIANTS=(
  [default]=""
  [no-trace-redaction]="guardrails: {redact_traces: false}"
  [no-console]="console: {enabled: false}"
)
mkdir -p "$WORK/mock/mock-tmp"
python3 "$HARNESS/lib/mock_conf.py" "$WORK/mock" "$MOCK_PORT" "$MOCK_STREAM_PORT" > "$WORK/mock/mock.conf"
taskset -c 0 nginx -p "$WORK/mock" -c "$WORK/mock/mock.conf" -e stderr -g 'daemon off;' \
  > "$WORK/mock.log" 2>&1 &
MOCK=$!
trap 'kill $MOCK 2>/dev/null || true' EXIT
sleep 1

one() {  # one variant, one round: prints "name cpu_us_per_req"
  local name=$1 extra=$2 d=$WORK/$1
  rm -rf "$d"; mkdir -p "$d"
  cat > "$d/c.yaml" <<YAML
data_dir: $d/data
server: {host: 127.0.0.1, port: $PORT, log_level: warning}
auth: {master_key: "$API_KEY"}
observe:
  json_logs: true
  traces: {store_content: true}
providers:
  mock: {type: openai, base_url: "http://127.0.0.1:$MOCK_PORT/v1", api_key: unused}
models:
  mock-gpt: {provider: mock, price: {input_per_mtok: 2.5, output_per_mtok: 10}}
$extra
YAML
  taskset -c 1 "$ROOT/.venv/bin/seawall" serve --config "$d/c.yaml" > "$d/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done
  local url=http://127.0.0.1:$PORT/v1/chat/completions lua=$HARNESS/lib/post.lua
  taskset -c 0 wrk -t2 -c16 -d3s -s "$lua" "$url" > /dev/null  # warm-up
  local u0 s0 u1 s1 out n
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(taskset -c 0 wrk -t2 -c16 -d"${SECS}"s -s "$lua" "$url")
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q '"circuit"' "$d/log"; then echo "$name: upstream errors (see $d/log)" >&2; return 1; fi
  echo "$name $(( ((u1 - u0) + (s1 - s0)) * 1000000 / $(getconf CLK_TCK) / n ))"
}

for r in $(seq 1 "$ROUNDS"); do
  for name in default no-trace-redaction no-console; do
    line=$(one "$name" "${VARIANTS[$name]}"); echo "round $r: $line µs/req"; echo "$line" >> "$WORK/all"
  done
done
echo; echo "| variant | gateway CPU µs per plain request, median of $ROUNDS |"; echo "|---|---:|"
for name in default no-trace-redaction no-console; do
  echo "| $name | $(awk -v n="$name" '$1 == n {print $2}' "$WORK/all" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') |"
done
