#!/usr/bin/env bash
# Schemathesis against /openapi.json: generated requests on every endpoint, as the platform
# admin and as a tenant key; fails on any 5xx or response that breaks the schema.
#   bash tests/schemathesis/run.sh [max-examples per operation, default 200]
# Installs schemathesis (pinned in requirements.txt) into target/sdk/schemathesis-venv on
# first use.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
n="${1:-200}"
venv="$root/target/sdk/schemathesis-venv"
st="${SCHEMATHESIS:-$venv/bin/schemathesis}"
if [ ! -x "$st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/schemathesis/requirements.txt"
fi
cargo build -q -p palisade -p palisade-mock
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
work="$(mktemp -d)"
cleanup() { kill "${mock_pid:-}" "${gw_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mport=$((20000 + RANDOM % 10000)); gport=$((mport + 1))
PALISADE_MOCK_API_KEY=sk-schemathesis "$bin/palisade-mock" --listen "127.0.0.1:$mport" >"$work/mock.log" 2>&1 &
mock_pid=$!
admin="schemathesis-admin-token-0123456789"
export PALISADE_LISTEN="127.0.0.1:$gport"
export PALISADE_STORAGE_URL="sqlite://$work/p.db"
export PALISADE_ANTHROPIC_BASE_URL="http://127.0.0.1:$mport"
export PALISADE_ANTHROPIC_API_KEY=sk-schemathesis
export PALISADE_ADMIN_TOKEN="$admin"
"$bin/palisade" serve >"$work/gw.log" 2>&1 &
gw_pid=$!
base="http://127.0.0.1:$gport"
for _ in $(seq 100); do curl -fs "$base/readyz" >/dev/null && break; sleep 0.1; done
curl -fs -X POST "$base/admin/v1/tenants" -H "authorization: Bearer $admin" \
  -H 'content-type: application/json' -d '{"id":"st","name":"st"}' >/dev/null
key="$(curl -fs -X POST "$base/admin/v1/tenants/st/keys" -H "authorization: Bearer $admin" \
  -H 'content-type: application/json' -d '{"role":"tenant_admin"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["secret"])')"

run() {
  # Generated requests (valid and invalid) on every operation: no 5xx, and every response
  # must match the documented schema for its status. --generation-deterministic makes a
  # CI failure reproducible.
  "$st" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$n" --generation-deterministic --phases examples,coverage,fuzzing \
    --suppress-health-check all --warnings off "$@"
}
# Platform admin on everything except deleting the tenant under test.
run -H "Authorization: Bearer $admin" --exclude-method DELETE
# A tenant admin key on the data plane and its own tenant's control plane.
run -H "Authorization: Bearer $key" --include-path-regex '^/v1/'
