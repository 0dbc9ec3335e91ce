#!/usr/bin/env bash
# Installs the official Anthropic SDKs that crates/cli/tests/sdk.rs drives against Palisade:
#   Python: a venv at target/sdk/venv with tests/sdk/python/requirements.txt (exact pins)
#   Node:   `npm ci` in tests/sdk/node (exact pins in package-lock.json)
# Idempotent: each half is skipped while its pin file is unchanged since the last install.
# Needs python3 (with venv) and node/npm; from Debian: python3-venv nodejs npm.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
sdk="$root/tests/sdk"
venv="$root/target/sdk/venv"

digest() { sha256sum "$1" | cut -d' ' -f1; }

# ---- Python
req="$sdk/python/requirements.txt"
stamp="$venv/.palisade-requirements.sha256"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$(digest "$req")" ]]; then
    echo "sdk: python venv up to date ($venv)"
else
    echo "sdk: installing the Python SDK into $venv"
    mkdir -p "$(dirname "$venv")"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
    digest "$req" > "$stamp"
fi

# ---- Node
if ! command -v npm >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "sdk: installing nodejs and npm from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
lock="$sdk/node/package-lock.json"
nstamp="$sdk/node/node_modules/.palisade-lock.sha256"
if [[ -f "$nstamp" && "$(cat "$nstamp")" == "$(digest "$lock")" ]]; then
    echo "sdk: node_modules up to date ($sdk/node/node_modules)"
else
    echo "sdk: installing the Node SDK into $sdk/node/node_modules"
    (cd "$sdk/node" && npm ci --no-audit --no-fund --loglevel=error)
    digest "$lock" > "$nstamp"
fi

echo "sdk: python anthropic $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("anthropic"))'), node @anthropic-ai/sdk $(cd "$sdk/node" && node -p 'require("./node_modules/@anthropic-ai/sdk/package.json").version')"
