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
# Used by bench/published.sh (defaults: the built-in body, a rate limit as the only policy):
#              BODY_FILE=(request body) PLATFORM_POLICY_FILE= TENANT_POLICY_FILE= (YAML; the
#              tenant file replaces the rate-limit-only policy) TENANT_JSON= KEY_JSON=
#              JSONL=(append one JSON line per measurement to this file)
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

BODY_FILE=${BODY_FILE:-}
PLATFORM_POLICY_FILE=${PLATFORM_POLICY_FILE:-}
TENANT_POLICY_FILE=${TENANT_POLICY_FILE:-}
TENANT_JSON=${TENANT_JSON:-'{"id":"bench","name":"Bench"}'}
KEY_JSON=${KEY_JSON:-'{}'}
JSONL=${JSONL:-}

BENCH_NAME=replicas
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v psql >/dev/null || die "psql is needed to create the benchmark database"
build_release

DBS=()
drop_dbs() {
    local db
    for db in "${DBS[@]}"; do psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
}
CLEANUP_HOOKS+=(drop_dbs)

start_mock

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
            bg_start "$TMP/pal-$n-$round-$i.log" env \
                PALISADE_LISTEN=127.0.0.1:$p PALISADE_STORAGE_URL=$url \
                PALISADE_ANTHROPIC_BASE_URL=http://127.0.0.1:$MOCK_PORT \
                PALISADE_SECRETS_MASTER_KEY=$(python3 -c 'import base64; print(base64.b64encode(bytes.fromhex("'"$MASTER"'")).decode())') \
                PALISADE_AUDIT_CHECKPOINT_KEY=$(python3 -c 'print("55"*32)') \
                PALISADE_ADMIN_TOKEN=$ADMIN_TOKEN PALISADE_LIMITS_BACKEND=redis \
                PALISADE_REDIS_URL=$REDIS_URL PALISADE_LIMITS_KEY_PREFIX="bench:$db:" \
                ANTHROPIC_API_KEY=dummy "$BIN/palisade" serve
            started+=("$BG_PID")
            wait_http "http://127.0.0.1:$p/readyz" "replica $i"
        done
        base=http://127.0.0.1:${ports[0]}
        if [ -n "$PLATFORM_POLICY_FILE" ]; then
            pal_admin "$base" POST '/admin/v1/platform/policy?activate=true' application/yaml \
                "$(cat "$PLATFORM_POLICY_FILE")" >/dev/null || die "platform policy refused"
        fi
        pal_admin "$base" POST /admin/v1/tenants application/json "$TENANT_JSON" >/dev/null
        tenant=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$TENANT_JSON")
        if [ -n "$TENANT_POLICY_FILE" ]; then
            policy=$(cat "$TENANT_POLICY_FILE")
        else
            # A limit high enough never to bite: the point is the Redis round trip on every call.
            policy=$'limits:\n  - id: rpm\n    requests: 100000000\n    per: minute\n'
        fi
        pal_admin "$base" POST "/admin/v1/tenants/$tenant/policy?activate=true" application/yaml \
            "$policy" >/dev/null || die "tenant policy refused"
        KEY=$(pal_admin "$base" POST "/admin/v1/tenants/$tenant/keys" application/json "$KEY_JSON" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
        # Policies are cached per replica for up to a second (POLICY_CACHE_TTL).
        [ "$n" -gt 1 ] && sleep 1.1
        also=()
        for p in "${ports[@]:1}"; do also+=(--also "127.0.0.1:$p"); done
        body=(--prompt-bytes "$PROMPT_BYTES")
        [ -n "$BODY_FILE" ] && body=(--body-file "$BODY_FILE")
        line=$("$BIN/palisade-load" --url "$base/v1/messages" "${also[@]}" --api-key "$KEY" \
            "${body[@]}" -c "$CONCURRENCY" -d "$DURATION" --warmup "$WARMUP" \
            --label "replicas=$n")
        if [ -n "$JSONL" ]; then
            python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(replicas=int(sys.argv[2]), round=int(sys.argv[3]), loadavg=sys.argv[4]); print(json.dumps(d))' \
                "$line" "$n" "$round" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$JSONL"
        fi
        python3 - "$n" "$round" "$line" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, sys
n, rnd, raw, load = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
ms = lambda k: f"{raw[k] / 1000:.2f}"
print(f"| {n} | {rnd} | {raw['rps']:.0f} | {ms('p50_us')} | {ms('p99_us')} | {raw['errors']} | {load} |")
PY
        bg_stop "${started[@]}"
    done
done
