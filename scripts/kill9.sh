#!/usr/bin/env bash
# Durability under SIGKILL: every response that reached a client has its receipt, and
# every chain still verifies.
#
#   scripts/kill9.sh            # 2 gateways on one SQLite file, 16 curl workers, kill after 3 s
#   GATEWAYS=1 WORKERS=32 LOAD_SECONDS=5 scripts/kill9.sh
#
# It starts palisade-mock and GATEWAYS `palisade serve` processes on one SQLite file,
# fires concurrent requests with curl (recording every x-palisade-receipt-id header a
# client received), kills every gateway with SIGKILL mid-load, then:
#   1. `palisade audit verify` on the store (chains, anchors, signed checkpoints);
#   2. checks every recorded receipt id is in `palisade audit export`;
#   3. verifies that export with the public key alone (`audit verify --file --public-key`);
#   4. restarts a gateway, makes one more call, stops it cleanly and verifies again.
# Binaries: $PALISADE_BIN / $PALISADE_MOCK_BIN, else target/release, else target/debug
# (built with `cargo build -p palisade -p palisade-mock` when neither exists).
# Exit status 0 = durable and verified; anything else = a finding (printed).
set -euo pipefail

cd "$(dirname "$0")/.."
GATEWAYS=${GATEWAYS:-2}
WORKERS=${WORKERS:-16}
LOAD_SECONDS=${LOAD_SECONDS:-3}

pick() { # pick NAME: the binary to use
    local var=$1 name=$2
    if [[ -n "${!var:-}" ]]; then echo "${!var}"; return; fi
    local best="" dir
    for dir in target/release target/debug; do # the newest build wins
        if [[ -x "$dir/$name" && ( -z "$best" || "$dir/$name" -nt "$best" ) ]]; then
            best="$dir/$name"
        fi
    done
    echo "$best"
}
BIN=$(pick PALISADE_BIN palisade)
MOCK=$(pick PALISADE_MOCK_BIN palisade-mock)
if [[ -z "$BIN" || -z "$MOCK" ]]; then
    echo "building palisade and palisade-mock (debug)…" >&2
    cargo build -q -p palisade -p palisade-mock
    BIN=target/debug/palisade
    MOCK=target/debug/palisade-mock
fi
command -v curl >/dev/null || { echo "curl is required" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/palisade-kill9.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ "${KEEP:-}" == "1" ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PLATFORM_KEY=sk-ant-kill9-platform
"$MOCK" --listen 127.0.0.1:0 --api-key "$PLATFORM_KEY" --no-record >"$WORK/mock.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening on" "$WORK/mock.out" && break; sleep 0.05; done
MOCK_URL=$(sed -n 's/^palisade-mock listening on //p' "$WORK/mock.out")
[[ -n "$MOCK_URL" ]] || { echo "mock did not start" >&2; cat "$WORK/mock.out" >&2; exit 2; }

export PALISADE_STORAGE_URL="sqlite://$WORK/palisade.db"
export PALISADE_SECRETS_MASTER_KEY=$(printf '42%.0s' $(seq 32))
export PALISADE_ADMIN_TOKEN=kill9-admin-token-0123456789
export PALISADE_ANTHROPIC_BASE_URL="$MOCK_URL"
export ANTHROPIC_API_KEY="$PLATFORM_KEY"
export PALISADE_LISTEN=127.0.0.1:0
export PALISADE_AUDIT_CHECKPOINT_INTERVAL_MS=200
export PALISADE_RETRY_MAX_RETRIES=0
export PALISADE_LOG_FORMAT=json
unset PALISADE_CONFIG

# serve LOG: starts a gateway, sets GW_PID and GW_URL.
serve() {
    local log=$1
    "$BIN" serve 2>"$log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    GW_URL=""
    for _ in $(seq 200); do
        GW_URL=$(grep '"palisade listening"' "$log" | sed -n 's/.*"addr":"\([^"]*\)".*/http:\/\/\1/p' | head -1 || true)
        [[ -n "$GW_URL" ]] && return 0
        sleep 0.05
    done
    echo "gateway did not start:" >&2
    cat "$log" >&2
    exit 2
}

KEYS=()
for t in acme beta; do
    "$BIN" tenant create --id "$t" --name "$t" >/dev/null
    KEYS+=("$("$BIN" key create --tenant "$t" 2>/dev/null | sed -n 's/.*"secret": "\([^"]*\)".*/\1/p')")
done

URLS=()
GW_PIDS=()
for g in $(seq "$GATEWAYS"); do
    serve "$WORK/gw$g.log"
    URLS+=("$GW_URL")
    GW_PIDS+=("$GW_PID")
done
echo "mock $MOCK_URL; gateways ${URLS[*]} on $PALISADE_STORAGE_URL"

worker() { # worker N: requests until killed; appends received receipt ids to ids.N
    local n=$1 i=0 url key
    while :; do
        i=$((i + 1))
        url=${URLS[$(( (n + i) % ${#URLS[@]} ))]}
        key=${KEYS[$(( n % 2 ))]}
        curl -s -o /dev/null -D - --max-time 10 -X POST "$url/v1/messages" \
            -H "x-api-key: $key" -H "anthropic-version: 2023-06-01" \
            -H "content-type: application/json" \
            -d "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"kill9 $n/$i\"}]}" \
            2>/dev/null | tr -d '\r' | sed -n 's/^[xX]-[pP]alisade-[rR]eceipt-[iI]d: //p' >>"$WORK/ids.$n" || true
    done
}
LOAD=()
for n in $(seq "$WORKERS"); do
    worker "$n" &
    LOAD+=($!)
    PIDS+=($!)
done

sleep "$LOAD_SECONDS"
for pid in "${GW_PIDS[@]}"; do kill -9 "$pid"; done
echo "SIGKILLed ${#GW_PIDS[@]} gateway(s) under load"
sleep 0.5
for pid in "${LOAD[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${LOAD[@]}"; do wait "$pid" 2>/dev/null || true; done
wait "${GW_PIDS[@]}" 2>/dev/null || true

cat "$WORK"/ids.* 2>/dev/null | sort -u >"$WORK/received"
RECEIVED=$(wc -l <"$WORK/received")
echo "clients received $RECEIVED receipt id(s)"
[[ "$RECEIVED" -gt 0 ]] || { echo "FAIL: no request succeeded" >&2; exit 1; }

check() { # check LABEL: verify the store, the ids and the export
    local label=$1
    echo "== $label: palisade audit verify"
    if ! "$BIN" audit verify; then echo "FAIL: chain verification ($label)" >&2; exit 1; fi
    "$BIN" audit export -o "$WORK/export.ndjson"
    sed -n 's/^{"id":"\([^"]*\)".*/\1/p' "$WORK/export.ndjson" | sort -u >"$WORK/stored"
    comm -23 "$WORK/received" "$WORK/stored" >"$WORK/missing"
    if [[ -s "$WORK/missing" ]]; then
        echo "FAIL: $(wc -l <"$WORK/missing") receipt(s) a client received are not in the store:" >&2
        head "$WORK/missing" >&2
        exit 1
    fi
    echo "all $RECEIVED received receipt ids are in the store ($(wc -l <"$WORK/stored") stored)"
    "$BIN" audit public-key >"$WORK/public-key.json"
    echo "== $label: palisade audit verify --file export.ndjson --public-key public-key.json"
    if ! "$BIN" audit verify --file "$WORK/export.ndjson" --public-key "$WORK/public-key.json"; then
        echo "FAIL: export verification ($label)" >&2
        exit 1
    fi
}
check "after SIGKILL"

serve "$WORK/restart.log"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$GW_URL/v1/messages" \
    -H "x-api-key: ${KEYS[0]}" -H "anthropic-version: 2023-06-01" -H "content-type: application/json" \
    -d '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"after restart"}]}')
[[ "$code" == 200 ]] || { echo "FAIL: restarted gateway answered $code" >&2; exit 1; }
kill -TERM "$GW_PID"
wait "$GW_PID"
check "after restart and clean stop"
echo "PASS: durable under SIGKILL with $GATEWAYS gateway(s); every chain verifies"
