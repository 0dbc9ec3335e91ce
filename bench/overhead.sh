#!/usr/bin/env bash
# Palisade overhead benchmark, one command: bash bench/overhead.sh
#
# Lanes, all in front of the same palisade-mock upstream, in the same run:
#   direct   — palisade-load → mock
#   nginx    — palisade-load → nginx (bare reverse proxy, one hop) → mock
#   palisade — palisade-load → palisade serve (SQLite, receipt committed per call) → mock
# Interleaved (direct nginx palisade direct nginx palisade …) and repeated ROUNDS times at
# each concurrency; raw JSON goes to bench/out/<run>/, a markdown table to stdout and
# bench/out/<run>/table.md. Only the processes started here are stopped (by recorded process
# group, see bench/lib.sh).
#
# Knobs (env): ROUNDS=3 DURATION=10 WARMUP=2 CONCURRENCY="1 32" PROMPT_BYTES=4096
#              NGINX_WORKERS=auto LOAD_THREADS=1 SKIP_BUILD=0 MOCK_WORKERS=(mock default)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-"1 32"}
PROMPT_BYTES=${PROMPT_BYTES:-4096}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
LOAD_THREADS=${LOAD_THREADS:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
MOCK_WORKERS=${MOCK_WORKERS:-}

BENCH_NAME=overhead
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- tools -----------------------------------------------------------------------------
ensure_apt nginx curl python3
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_release

# --- processes (stopped by lib.sh's EXIT trap, by recorded process group) ---------------
start_mock
start_nginx
start_palisade palisade
KEY=$(pal_tenant_key "http://127.0.0.1:$PAL_PORT" '{"id":"bench","name":"Bench"}' '{}')

# --- run -------------------------------------------------------------------------------
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/out/$RUN_ID
mkdir -p "$OUT"
RAW=$OUT/results.jsonl
: >"$RAW"

declare -A URL=(
    [direct]="http://127.0.0.1:$MOCK_PORT/v1/messages"
    [nginx]="http://127.0.0.1:$NGINX_PORT/v1/messages"
    [palisade]="http://127.0.0.1:$PAL_PORT/v1/messages"
)
LANES=(direct nginx palisade)
# Every lane gets the same headers; the mock accepts any key, Palisade needs its own.
load() { # lane, extra args...
    local lane=$1
    shift
    "$BIN/palisade-load" --url "${URL[$lane]}" --api-key "$KEY" \
        --prompt-bytes "$PROMPT_BYTES" --threads "$LOAD_THREADS" "$@"
}

log "smoke test: 20 requests per lane, errors abort"
for lane in "${LANES[@]}"; do
    load "$lane" -c 2 -n 20 --warmup 0 --fail-on-errors >/dev/null ||
        die "lane $lane fails (logs in $TMP)"
done

{
    echo "{\"run\":\"$RUN_ID\",\"rounds\":$ROUNDS,\"duration_s\":$DURATION,\"warmup_s\":$WARMUP,"
    echo "\"prompt_bytes\":$PROMPT_BYTES,\"nginx_workers\":\"$NGINX_WORKERS\",\"load_threads\":$LOAD_THREADS,"
    echo "\"nproc\":$(nproc),\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\","
    echo "\"kernel\":\"$(uname -r)\",\"mem\":\"$(free -h | awk '/^Mem:/{print $2}')\","
    echo "\"nginx\":\"$("$NGINX" -v 2>&1 | cut -d/ -f2)\",\"loadavg_start\":\"$(cut -d' ' -f1-3 /proc/loadavg)\","
    echo "\"git\":\"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo -dirty)\"}"
} >"$OUT/meta.json"

# CPU time (user+sys, in clock ticks) of a lane's proxy processes, read around each
# measurement: nginx = master + workers, palisade = its one process, direct = none. It covers
# warm-up too, so it is divided by all requests sent, in table.py.
CLK_TCK=$(getconf CLK_TCK)
declare -A PROXY_PIDS=([direct]="" [nginx]="$NGINX_PID $(pgrep -P "$NGINX_PID" | xargs)" [palisade]="$PAL_PID")
cpu_ticks() { # pids...
    local t=0 pid f
    for pid in $1; do
        if read -r -a f <"/proc/$pid/stat"; then t=$((t + f[13] + f[14])); fi
    done
    echo "$t"
}

total=$((ROUNDS * $(wc -w <<<"$CONCURRENCY") * ${#LANES[@]}))
log "running $total measurements of ${DURATION}s (+${WARMUP}s warm-up); load avg $(cut -d' ' -f1-3 /proc/loadavg)"
i=0
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONCURRENCY; do
        for lane in "${LANES[@]}"; do
            i=$((i + 1))
            cpu0=$(cpu_ticks "${PROXY_PIDS[$lane]}")
            mock0=$(cpu_ticks "$MOCK_PID")
            line=$(load "$lane" -c "$c" -d "$DURATION" --warmup "$WARMUP" \
                --label "$lane c=$c round=$round") || die "palisade-load failed on $lane"
            cpu1=$(cpu_ticks "${PROXY_PIDS[$lane]}")
            mock1=$(cpu_ticks "$MOCK_PID")
            python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(lane=sys.argv[2], c=int(sys.argv[3]), round=int(sys.argv[4]), proxy_cpu_ticks=int(sys.argv[5]), mock_cpu_ticks=int(sys.argv[6]), clk_tck=int(sys.argv[7]), loadavg=sys.argv[8]); print(json.dumps(d))' \
                "$line" "$lane" "$c" "$round" "$((cpu1 - cpu0))" "$((mock1 - mock0))" "$CLK_TCK" \
                "$(cut -d' ' -f1 /proc/loadavg)" >>"$RAW"
            python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("  [%s] %s: %.0f rps, p50 %s us, p99 %s us, errors %s" % (sys.argv[2], d["label"], d["rps"], d["p50_us"], d["p99_us"], d["errors"]))' \
                "$line" "$i/$total" >&2
        done
    done
done
sed -i "s/}\$/,\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}/" "$OUT/meta.json"
cp "$TMP/nginx.conf" "$OUT/nginx.conf"
grep -E '^Vm(HWM|RSS)' "/proc/$PAL_PID/status" | tr -s ' \t' ' ' >"$OUT/palisade-memory.txt" || true

python3 "$ROOT/bench/table.py" "$OUT" | tee "$OUT/table.md"
log "raw results: $OUT"
