#!/usr/bin/env bash
# HTTP throughput: custosd's blind-index lookup (GET /v1/subjects?email=...,
# authenticated, purpose-checked, decrypted, audited) against two floors
# with the same wrk settings: a Boost.Beast hello-world with custosd's
# io-thread count (tests/bench/hello_beast.cpp, the library custosd serves
# with) and the old cpprestsdk listener (tests/bench/hello_listener.cpp).
# Also batchCreate over HTTP, and each server's CPU time per request (from
# /proc/PID/stat, user + system). Needs a built tree (scripts/build.sh), wrk,
# curl and python3.
#
#   scripts/bench_http.sh [SUBJECTS (default 10000)] [DURATION (default 10s)]
#   env: CUSTOS_BUILD_DIR (build), WRK_THREADS (2), WRK_CONNECTIONS (32),
#        CUSTOSD_THREADS (custosd's default: 2 per core, at least 4),
#        CUSTOSD_EXTRA_ARGS (more custosd flags, e.g. "--audit-fold-interval-ms 10000"),
#        LISTENER_THREADS (8: the cpprestsdk listener's pool, as custosd
#        had on 2 cores when it served with cpprestsdk), IO_THREADS (cores: custosd's
#        default io threads; also the Beast floor's), PERF_DATA (a file:
#        perf record --call-graph dwarf samples custosd through the lookup run into it;
#        read with perf report -i FILE --no-children),
#        CUSTOS_STORE (postgresql://…: the vault on PostgreSQL instead of SQLCipher; an
#        empty database, e.g. from scripts/pg_cluster.sh start DIR),
#        NODES (1: with CUSTOS_STORE, N custosd processes on that one database, each with
#        its own data directory copied from the first and its own --node-id; the lookups
#        are N wrk processes, one per node, each -t1 with CONNECTIONS/N connections, and
#        the figures are their sum, the worst p99 and the CPU of all nodes per request).
# One principal sends every request here, so custosd runs with its
# per-principal rate and in-flight quotas off (--principal-rate 0
# --principal-max-inflight 0); everything else is at its defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${CUSTOS_BUILD_DIR:-build}
SUBJECTS=${1:-10000}
DURATION=${2:-10s}
THREADS=${WRK_THREADS:-2}
CONNECTIONS=${WRK_CONNECTIONS:-32}
NODES=${NODES:-1}
POOL=${CUSTOSD_THREADS:-$(( $(nproc) * 2 > 4 ? $(nproc) * 2 : 4 ))}
LISTENER_POOL=${LISTENER_THREADS:-8}
IO=${IO_THREADS:-$(nproc)}
CUSTOS=$BUILD_DIR/src/custos
CUSTOSD=$BUILD_DIR/src/http/custosd
HELLO=$BUILD_DIR/tests/http/bench_hello_listener
BEAST=$BUILD_DIR/tests/http/bench_hello_beast

for bin in "$CUSTOS" "$CUSTOSD" "$HELLO" "$BEAST"; do
  [ -x "$bin" ] || { echo "bench_http: $bin is missing; build first (scripts/build.sh)" >&2; exit 1; }
done
for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "bench_http: $tool is not installed" >&2; exit 1; }
done

if [ "$NODES" -gt 1 ] && [[ "${CUSTOS_STORE:-}" != postgresql://* ]]; then
  echo "bench_http: NODES=$NODES needs CUSTOS_STORE=postgresql://… (nodes share one database)" >&2
  exit 1
fi

WORK=$(mktemp -d)
PID=""
NODE_PIDS=()
cleanup() {
  for p in "$PID" "${NODE_PIDS[@]}"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {  # URL PID: poll (bounded, ~10 s) until the server answers
  for _ in $(seq 1 200); do
    kill -0 "$2" 2>/dev/null || { echo "bench_http: server exited early" >&2; return 1; }
    curl -s -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "bench_http: server did not come up" >&2
  return 1
}

cpu_ticks() {  # PID: user + system clock ticks so far
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# wrk with the server's CPU time per request: NAME PID wrk-args...
measure() {
  local name=$1 pid=$2
  shift 2
  local before after
  before=$(cpu_ticks "$pid")
  wrk "$@" | tee "$WORK/wrk.out"
  after=$(cpu_ticks "$pid")
  local requests
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
  python3 -c "import os; t=os.sysconf('SC_CLK_TCK'); print(f'$name: server CPU {($after-$before)/t*1e6/max(1,$requests):.1f} us per request ({$requests} requests)')"
}

stop() {  # PID
  kill -TERM "$1"
  wait "$1" || true
  PID=""
}

echo "== vault with $SUBJECTS subjects (store: ${CUSTOS_STORE:-SQLCipher}; $NODES node(s))"
"$CUSTOS" --data-dir "$WORK/data" init --fast-kdf >/dev/null
TOKEN=$(cat "$WORK/data/admin.token")
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
"$CUSTOSD" --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --log-level "${CUSTOSD_LOG_LEVEL:-warn}" --threads "$POOL" \
  --io-threads "$IO" ${CUSTOSD_EXTRA_ARGS:-} --principal-rate 0 --principal-max-inflight 0 \
  >"$WORK/custosd.out" 2>"$WORK/custosd.err" &
PID=$!
wait_ready "$URL/healthz" "$PID"

python3 - "$SUBJECTS" "$WORK" <<'EOF'
import json, sys
n, work = int(sys.argv[1]), sys.argv[2]
for b, start in enumerate(range(0, n, 1000)):
    items = [{"fields": {"given_name": "Bench", "family_name": f"Subject{i}", "email": f"user{i}@example.com"}}
             for i in range(start, min(n, start + 1000))]
    with open(f"{work}/batch-{b:05d}.json", "w") as f:
        json.dump({"subjects": items}, f)
EOF
start=$(date +%s.%N)
for f in "$WORK"/batch-*.json; do
  created=$(curl -sS -f -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data-binary "@$f" "$URL/v1/subjects:batchCreate" | python3 -c 'import json,sys; print(json.load(sys.stdin)["created"])')
  [ "$created" -gt 0 ] || { echo "bench_http: batchCreate created nothing" >&2; exit 1; }
done
end=$(date +%s.%N)
python3 -c "print(f'loaded $SUBJECTS subjects in {$end - $start:.1f} s ({$SUBJECTS / ($end - $start):.0f}/s)')"

cat >"$WORK/lookup.lua" <<EOF
math.randomseed(os.time())
local n = $SUBJECTS
local headers = {["Authorization"] = "Bearer $TOKEN", ["Custos-Purpose"] = "customer_service"}
request = function()
  return wrk.format("GET", "/v1/subjects?email=user" .. math.random(0, n - 1) .. "%40example.com", headers)
end
EOF

echo
if [ "$NODES" -eq 1 ]; then
  echo "== custosd: GET /v1/subjects?email=... (wrk -t$THREADS -c$CONNECTIONS -d$DURATION)"
  PERF_PID=""
  if [ -n "${PERF_DATA:-}" ]; then
    perf record -F 299 --call-graph dwarf,16384 -p "$PID" -o "$PERF_DATA" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  measure custosd-lookup "$PID" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/lookup.lua" "$URL"
  if [ -n "$PERF_PID" ]; then wait "$PERF_PID" || true; fi
else
  # Nodes 2..N: the first node's data directory (key material, policies,
  # store.url) copied, as docs/postgresql.md deploys them.
  NODE_PIDS=("$PID")
  NODE_URLS=("$URL")
  for i in $(seq 2 "$NODES"); do
    cp -a "$WORK/data" "$WORK/data-$i"
    rm -rf "$WORK/data-$i/audit-journal"
    p=$(free_port)
    "$CUSTOSD" --data-dir "$WORK/data-$i" --node-id "node-$i" --listen "127.0.0.1:$p" \
      --log-level "${CUSTOSD_LOG_LEVEL:-warn}" --threads "$POOL" --io-threads "$IO" \
      --principal-rate 0 --principal-max-inflight 0 >"$WORK/custosd-$i.out" 2>"$WORK/custosd-$i.err" &
    NODE_PIDS+=("$!")
    NODE_URLS+=("http://127.0.0.1:$p")
    wait_ready "http://127.0.0.1:$p/healthz" "$!"
  done
  per_node=$(( CONNECTIONS / NODES > 0 ? CONNECTIONS / NODES : 1 ))
  echo "== $NODES custosd nodes: GET /v1/subjects?email=... (one wrk -t1 -c$per_node -d$DURATION per node)"
  before=0
  for p in "${NODE_PIDS[@]}"; do before=$(( before + $(cpu_ticks "$p") )); done
  wrk_pids=()
  for i in $(seq 0 $(( NODES - 1 ))); do
    wrk -t1 -c"$per_node" -d"$DURATION" --latency -s "$WORK/lookup.lua" "${NODE_URLS[$i]}" >"$WORK/wrk-$i.out" &
    wrk_pids+=("$!")
  done
  for w in "${wrk_pids[@]}"; do wait "$w"; done
  after=0
  for p in "${NODE_PIDS[@]}"; do after=$(( after + $(cpu_ticks "$p") )); done
  cat "$WORK"/wrk-*.out
  python3 - "$WORK" "$NODES" "$before" "$after" <<'EOF3'
import os, re, sys
work, nodes, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
total_rps, total_req, worst_p99 = 0.0, 0, 0.0
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
for i in range(nodes):
    text = open(f"{work}/wrk-{i}.out").read()
    total_rps += float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total_req += int(re.search(r"(\d+) requests in", text).group(1))
    v, u = re.search(r"99%\s+([\d.]+)(us|ms|s)", text).groups()
    worst_p99 = max(worst_p99, float(v) * unit[u])
t = os.sysconf("SC_CLK_TCK")
print(f"custosd-lookup x{nodes} nodes: {total_rps:.0f} requests/s in all, worst p99 {worst_p99:.2f} ms, "
      f"server CPU {(after - before) / t * 1e6 / max(1, total_req):.1f} us per request ({total_req} requests)")
EOF3
  for p in "${NODE_PIDS[@]:1}"; do kill -TERM "$p"; wait "$p" || true; done
  NODE_PIDS=()
fi

# Ingest over HTTP without curl start-up costs: wrk posting batches of
# 1,000 subjects (subjects/s = requests/s x 1,000). Every request carries new
# e-mail addresses: batchCreate rejects duplicates by default (identity
# resolution), so re-posting one batch would measure refusals, not ingest.
cat >"$WORK/batch.lua" <<EOF2
local counter = 0
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer $TOKEN"}
request = function()
  local parts = {}
  for i = 1, 1000 do
    counter = counter + 1
    parts[i] = '{"fields":{"given_name":"Bench","family_name":"Batch' .. counter ..
               '","email":"batch' .. counter .. '@example.com"}}'
  end
  return wrk.format("POST", nil, headers, '{"subjects":[' .. table.concat(parts, ",") .. ']}')
end
EOF2
echo
echo "== custosd: POST /v1/subjects:batchCreate, 1,000 subjects per request (wrk -t1 -c2 -d$DURATION)"
wrk -t1 -c2 -d"$DURATION" --latency -s "$WORK/batch.lua" "$URL/v1/subjects:batchCreate"
stop "$PID"

# A floor server answering "ok": NAME DESCRIPTION COMMAND... (the command
# takes the port as {port} and the URL as {url}).
floor() {
  local name=$1 description=$2
  shift 2
  PORT=$(free_port)
  URL="http://127.0.0.1:$PORT"
  "${@//\{port\}/$PORT}" >/dev/null &
  PID=$!
  wait_ready "$URL/" "$PID"
  echo
  echo "== $description: GET / -> 200 ok (wrk -t$THREADS -c$CONNECTIONS -d$DURATION)"
  measure "$name" "$PID" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$URL/"
  stop "$PID"
}
floor beast-hello "bench_hello_beast ($IO io threads)" "$BEAST" "{port}" "$IO"
floor cpprest-hello "bench_hello_listener (cpprestsdk, $LISTENER_POOL threads)" "$HELLO" "http://127.0.0.1:{port}" "$LISTENER_POOL"
