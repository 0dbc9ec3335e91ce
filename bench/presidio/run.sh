#!/usr/bin/env bash
# Presidio comparison for BENCHMARKS.md ("Content scanning (issue 4)").
# Creates a venv under target/ with presidio-analyzer from PyPI (pinned), writes the exact
# texts the criterion bench scans (first 4 KB / 64 KB of the generated prose), and times
# Presidio's predefined pattern recognizers on them, pinned to one core.
# Usage: bench/presidio/run.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
PRESIDIO_VERSION=2.2.358
VENV=target/presidio-venv
TEXTS=target/bench-texts
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import presidio_analyzer" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet "presidio-analyzer==$PRESIDIO_VERSION"
fi
cargo run --quiet --release -p palisade-scan --example bench_texts -- "$TEXTS"
PIN=()
if command -v taskset >/dev/null; then PIN=(taskset -c 0); fi
"${PIN[@]}" "$VENV/bin/python" bench/presidio/presidio_bench.py "$TEXTS/prose_4KB.txt" "$TEXTS/prose_64KB.txt"
