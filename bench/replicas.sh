#!/usr/bin/env bash
# Scale-out benchmark, one command: bash bench/replicas.sh
#
# Throughput of 1, 2 and 3 `palisade serve` replicas sharing one PostgreSQL database (and
# Redis for the rate-limit counters), in front of one palisade-mock, at concurrency C. The
# load generator spreads its connections round-robin over the replicas, as a load balancer
# would. Each request is authenticated, checked against a tenant rate limit in Redis,
# proxied, and its receipt committed to PostgreSQL before the response completes, so the
# "req/s" column is also committed receipts per second on PostgreSQL.
#
# On a small machine the replicas, PostgreSQL, Redis, the mock and the load generator all
# share the same cores: the numbers show the cost of coordination, not the scaling a
# deployment with a machine per replica would get.
#
# Knobs (env): REPLICAS="1 2 3" CONCURRENCY=32 DURATION=10 WARMUP=2 ROUNDS=2
#              PROMPT_BYTES=4096 SKIP_BUILD=0
#              PG_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379
set -euo pipefail

REPLICAS=${REPLICAS:-"1 2 3"}
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
PROMPT_BYTES=${PROMPT_BYTES:-4096}
SKIP_BUILD=${SKIP_BUILD:-0}
PG_URL=${PG_URL:-${PALISADE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
REDIS_URL=${REDIS_URL:-${PALISADE_TEST_REDIS_URL:-redis://127.0.0.1:6379}}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
log() { printf '[replicas] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
command -v psql >/dev/null || die "psql is needed to create the benchmark database"
if [ "$SKIP_BUILD" != 1 ]; then
    log "building release binaries"
    cargo build --release -p palisade -p palisade-mock -p palisade-loadgen >&2
fi

TMP=$(mktemp -d /tmp/palisade-replicas.XXXXXX)
PIDS=()
DBS=()
cleanup() {
    local pid db
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for db in "${DBS[@]}"; do psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_http() {
    local i
    for i in $(seq 1 400); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.05
    done
    die "$2 did not come up at $1"
}

MOCK_PORT=$(free_port)
"$BIN/palisade-mock" --listen "127.0.0.1:$MOCK_PORT" --no-record >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/" "palisade-mock"

ADMIN_TOKEN=bench-admin-token-0123456789abcdef
MASTER=$(python3 -c 'print("44"*32)')
echo "| replicas | round | req/s (= receipts/s committed) | p50 ms | p99 ms | errors | load avg |"
echo "|---|---|---|---|---|---|---|"
for n in $REPLICAS; do
    for round in $(seq 1 "$ROUNDS"); do
        db="palisade_bench_$(date +%s)_$RANDOM"
        DBS+=("$db")
        psql -q "$PG_URL" -c "CREATE DATABASE $db" >/dev/null
        url="${PG_URL%/*}/$db"
        ports=()
        started=()
        for i in $(seq 1 "$n"); do
            p=$(free_port)
            ports+=("$p")
            PALISADE_LISTEN=127.0.0.1:$p PALISADE_STORAGE_URL=$url \
                PALISADE_ANTHROPIC_BASE_URL=http://127.0.0.1:$MOCK_PORT \
                PALISADE_SECRETS_MASTER_KEY=$(python3 -c 'import base64; print(base64.b64encode(bytes.fromhex("'"$MASTER"'")).decode())') \
                PALISADE_AUDIT_CHECKPOINT_KEY=$(python3 -c 'print("55"*32)') \
                PALISADE_ADMIN_TOKEN=$ADMIN_TOKEN PALISADE_LIMITS_BACKEND=redis \
                PALISADE_REDIS_URL=$REDIS_URL PALISADE_LIMITS_KEY_PREFIX="bench:$db:" \
                ANTHROPIC_API_KEY=dummy "$BIN/palisade" serve >"$TMP/pal-$n-$i.log" 2>&1 &
            PIDS+=($!)
            started+=($!)
            wait_http "http://127.0.0.1:$p/readyz" "replica $i"
        done
        base=http://127.0.0.1:${ports[0]}
        admin() {
            curl -fsS -X "$1" "$base$2" -H "authorization: Bearer $ADMIN_TOKEN" \
                -H "content-type: $3" --data-binary "$4"
        }
        admin POST /admin/v1/tenants application/json '{"id":"bench","name":"Bench"}' >/dev/null
        # A limit high enough never to bite: the point is the Redis round trip on every call.
        admin POST '/admin/v1/tenants/bench/policy?activate=true' application/yaml \
            $'limits:\n  - id: rpm\n    requests: 100000000\n    per: minute\n' >/dev/null
        KEY=$(admin POST /admin/v1/tenants/bench/keys application/json '{}' |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
        also=()
        for p in "${ports[@]:1}"; do also+=(--also "127.0.0.1:$p"); done
        line=$("$BIN/palisade-load" --url "$base/v1/messages" "${also[@]}" --api-key "$KEY" \
            --prompt-bytes "$PROMPT_BYTES" -c "$CONCURRENCY" -d "$DURATION" --warmup "$WARMUP" \
            --label "replicas=$n")
        python3 - "$n" "$round" "$line" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, sys
n, rnd, raw, load = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
ms = lambda k: f"{raw[k] / 1000:.2f}"
print(f"| {n} | {rnd} | {raw['rps']:.0f} | {ms('p50_us')} | {ms('p99_us')} | {raw['errors']} | {load} |")
PY
        for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
    done
done
