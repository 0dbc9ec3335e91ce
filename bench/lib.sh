# Shared helpers of the benchmark scripts (bench/overhead.sh, bench/replicas.sh,
# bench/published.sh). Source it after setting BENCH_NAME; it sets ROOT, BIN and TMP and
# installs an EXIT trap that stops every process started through bg_start (and only those).
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
BENCH_NAME=${BENCH_NAME:-bench}

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- processes we started --------------------------------------------------------------
# Each one runs in its own session (setsid), so its pid is also its process group id and a
# stop reaches the workers it forked (uvicorn workers, nginx workers) and nothing else.
TMP=$(mktemp -d "/tmp/palisade-$BENCH_NAME.XXXXXX")
chmod 755 "$TMP" # nginx workers run as an unprivileged user
BG_PIDS=()
CLEANUP_HOOKS=()

bg_start() { # logfile, command... ; sets BG_PID
    local logfile=$1
    shift
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

# Stops the process groups of the given pids: TERM, then KILL after a grace period.
bg_stop() { # pids...
    local pid i alive
    for pid in "$@"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for i in $(seq 1 50); do
        alive=0
        for pid in "$@"; do
            if kill -0 -- "-$pid" 2>/dev/null; then alive=1; fi
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "$@"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        wait "$pid" 2>/dev/null || true
    done
}

bench_cleanup() {
    local h
    if [ ${#BG_PIDS[@]} -gt 0 ]; then bg_stop "${BG_PIDS[@]}"; fi
    for h in "${CLEANUP_HOOKS[@]}"; do eval "$h" || true; done
    if [ "${KEEP_TMP:-0}" != 1 ]; then rm -rf "$TMP"; else log "kept $TMP"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until a URL answers at all (any status). Returns 1 instead of dying when
# WAIT_SOFT=1, so a contestant that does not come up can be reported as erroring.
wait_http() { # url, what, [tries of 50 ms]
    local i tries=${3:-400}
    for i in $(seq 1 "$tries"); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.05
    done
    if [ "${WAIT_SOFT:-0}" = 1 ]; then return 1; fi
    die "$2 did not come up at $1"
}

# --- build and tools -------------------------------------------------------------------
ensure_apt() { # commands... (command name = Debian package name)
    local need=() c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || need+=("$c")
    done
    if [ ${#need[@]} -gt 0 ]; then
        log "installing from Debian: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

build_release() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "building release binaries"
        cargo build --release -p palisade -p palisade-mock -p palisade-loadgen >&2
    fi
    local b
    for b in palisade palisade-mock palisade-load; do
        [ -x "$BIN/$b" ] || die "$BIN/$b missing (build failed?)"
    done
}

# --- /proc readings --------------------------------------------------------------------
# A pid and all its descendants.
tree_pids() { # pid
    local pid=$1 kids k
    [ -d "/proc/$pid" ] || return 0
    echo "$pid"
    kids=$(pgrep -P "$pid" 2>/dev/null || true)
    for k in $kids; do tree_pids "$k"; done
}

# user+sys CPU time in clock ticks, summed over pids.
cpu_ticks() { # "pids"
    local t=0 pid f
    for pid in $1; do
        if read -r -a f <"/proc/$pid/stat" 2>/dev/null; then t=$((t + f[13] + f[14])); fi
    done
    echo "$t"
}

# Sum of VmHWM (peak resident set, kB) over pids: the peak memory of a process tree, an
# upper bound when its processes peak at different moments.
hwm_kb() { # "pids"
    local t=0 pid v
    for pid in $1; do
        v=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# Sum of the current proportional set size (kB) over pids: shared pages (forked workers,
# shared libraries) counted once in total rather than once per process.
pss_kb() { # "pids"
    local t=0 pid v
    for pid in $1; do
        v=$(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# --- contestants -----------------------------------------------------------------------
start_mock() { # sets MOCK_PORT MOCK_PID
    MOCK_PORT=$(free_port)
    local args=(--listen "127.0.0.1:$MOCK_PORT" --no-record)
    [ -n "${MOCK_WORKERS:-}" ] && args+=(--workers "$MOCK_WORKERS")
    bg_start "$TMP/mock.log" "$BIN/palisade-mock" "${args[@]}"
    MOCK_PID=$BG_PID
    wait_http "http://127.0.0.1:$MOCK_PORT/" "palisade-mock"
    log "mock on :$MOCK_PORT (pid $MOCK_PID)"
}

# Bare one-hop reverse proxy to the mock: keep-alive both sides, no logging, bodies in memory.
start_nginx() { # sets NGINX_PORT NGINX_PID
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    NGINX_PORT=$(free_port)
    mkdir -p "$TMP/nginx-tmp"
    chmod 1777 "$TMP/nginx-tmp"
    cat >"$TMP/nginx.conf" <<EOF
# Bare one-hop reverse proxy: keep-alive both sides, no logging, no buffering to disk.
worker_processes ${NGINX_WORKERS:-auto};
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx-tmp/body;
    proxy_temp_path $TMP/nginx-tmp/proxy;
    fastcgi_temp_path $TMP/nginx-tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx-tmp/uwsgi;
    scgi_temp_path $TMP/nginx-tmp/scgi;
    client_max_body_size 32m;
    client_body_buffer_size 64k;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 128;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering ${NGINX_PROXY_BUFFERING:-on};
        }
    }
}
EOF
    bg_start "$TMP/nginx.out" "$NGINX" -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log"
    NGINX_PID=$BG_PID
    wait_http "http://127.0.0.1:$NGINX_PORT/" "nginx"
    log "nginx on :$NGINX_PORT (pid $NGINX_PID, worker_processes ${NGINX_WORKERS:-auto})"
}

ADMIN_TOKEN=bench-admin-token-0123456789abcdef

# One `palisade serve` on SQLite in front of the mock; extra VAR=value settings may follow.
start_palisade() { # name, [VAR=value...] ; sets PAL_PORT PAL_PID
    local name=$1
    shift
    PAL_PORT=$(free_port)
    bg_start "$TMP/$name.log" env \
        PALISADE_LISTEN="127.0.0.1:$PAL_PORT" \
        PALISADE_STORAGE_URL="sqlite://$TMP/$name.db" \
        PALISADE_ANTHROPIC_BASE_URL="http://127.0.0.1:$MOCK_PORT" \
        PALISADE_SECRETS_MASTER_KEY_FILE="$TMP/$name.master.key" \
        PALISADE_ADMIN_TOKEN="$ADMIN_TOKEN" \
        ANTHROPIC_API_KEY=dummy \
        "$@" "$BIN/palisade" serve
    PAL_PID=$BG_PID
    wait_http "http://127.0.0.1:$PAL_PORT/readyz" "palisade ($name)"
    log "palisade $name on :$PAL_PORT (pid $PAL_PID)"
}

# Admin API call on a palisade: prints the response body, fails on HTTP errors.
pal_admin() { # base-url, method, path, content-type, body
    curl -fsS -X "$2" "$1$3" -H "authorization: Bearer $ADMIN_TOKEN" \
        -H "content-type: $4" --data-binary "$5"
}

# Creates a tenant and a key; prints the key's secret.
pal_tenant_key() { # base-url, tenant json, key json
    local id
    id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$2")
    pal_admin "$1" POST /admin/v1/tenants application/json "$2" >/dev/null ||
        die "creating tenant $id at $1"
    pal_admin "$1" POST "/admin/v1/tenants/$id/keys" application/json "$3" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])' || die "creating a key for $id"
}

machine_json() { # extra "key":value pairs (already JSON), may be empty
    local nginx_v
    nginx_v=$("$(command -v nginx || echo /usr/sbin/nginx)" -v 2>&1 | cut -d/ -f2 || echo none)
    python3 - "$nginx_v" "$1" <<'PY'
import json, os, platform, subprocess, sys
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""
cpu = ""
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
mem_kb = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal:")))
os_name = ""
try:
    for l in open("/etc/os-release"):
        if l.startswith("PRETTY_NAME="):
            os_name = l.split("=", 1)[1].strip().strip('"')
except OSError:
    pass
d = {
    "nproc": os.cpu_count(),
    "cpu": cpu,
    "mem_gib": round(mem_kb / 1048576, 1),
    "kernel": platform.release(),
    "os": os_name,
    "nginx": sys.argv[1],
    "rustc": sh("rustc --version").replace("rustc ", ""),
    "python": platform.python_version(),
    "node": sh("node --version").lstrip("v"),
    "git": (sh("git rev-parse --short HEAD") or "unknown") + ("" if sh("git status --porcelain --untracked-files=no") == "" else "-dirty"),
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
}
extra = sys.argv[2]
if extra:
    d.update(json.loads("{" + extra + "}"))
print(json.dumps(d))
PY
}
