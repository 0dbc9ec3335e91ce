#!/usr/bin/env python3
"""Markdown table from a bench/overhead.sh run: medians over rounds, paired ratios.

Usage: python3 bench/table.py bench/out/<run>

Differences and ratios are computed within a round (the lanes of one round ran back to back)
and the median of those is reported, so slow drifts of the shared machine cancel out.
"""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
meta = json.loads((out / "meta.json").read_text())
rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]

lanes = ["direct", "nginx", "palisade"]
by = {}
for r in rows:
    by[(r["c"], r["lane"], r["round"])] = r
concs = sorted({r["c"] for r in rows})
rounds = sorted({r["round"] for r in rows})
med = statistics.median


def cpu_per_req(r, key):
    """CPU µs per request of a process, warm-up included on both sides of the division."""
    sent = r["count"] + r["errors"] + r.get("warmup_requests", 0)
    if key not in r or not sent:
        return 0.0
    return r[key] * 1e6 / r["clk_tck"] / sent


def paired(c, lane, ref, f):
    vals = []
    for rd in rounds:
        a, b = by.get((c, lane, rd)), by.get((c, ref, rd))
        if a and b:
            vals.append(f(a, b))
    return med(vals) if vals else None


print(
    f"Run `{meta['run']}` · {meta['rounds']} rounds × {meta['duration_s']} s per lane "
    f"(+{meta['warmup_s']} s warm-up) · {meta['prompt_bytes']} B prompt, non-streaming · "
    f"{meta['nproc']} × {meta['cpu']}, load avg {meta['loadavg_start']} → "
    f"{meta.get('loadavg_end', '?')} · git {meta['git']}"
)
print()
print(
    "| c | lane | req/s | p50 µs | p99 µs | added p50 vs direct | added p99 vs direct "
    "| req/s ÷ direct | req/s ÷ nginx | proxy CPU µs/req | mock CPU µs/req | errors |"
)
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
summary = {}
for c in concs:
    for lane in lanes:
        rs = [by[(c, lane, rd)] for rd in rounds if (c, lane, rd) in by]
        if not rs:
            continue
        rps = med([r["rps"] for r in rs])
        p50 = med([r["p50_us"] for r in rs])
        p99 = med([r["p99_us"] for r in rs])
        errors = sum(r["errors"] for r in rs)
        cpu = med([cpu_per_req(r, "proxy_cpu_ticks") for r in rs])
        mock_cpu = med([cpu_per_req(r, "mock_cpu_ticks") for r in rs])
        add50 = paired(c, lane, "direct", lambda a, b: a["p50_us"] - b["p50_us"])
        add99 = paired(c, lane, "direct", lambda a, b: a["p99_us"] - b["p99_us"])
        vs_direct = paired(c, lane, "direct", lambda a, b: a["rps"] / b["rps"] if b["rps"] else 0)
        vs_nginx = paired(c, lane, "nginx", lambda a, b: a["rps"] / b["rps"] if b["rps"] else 0)
        summary[(c, lane)] = dict(add99=add99, vs_nginx=vs_nginx)

        def fmt(x, spec):
            return "—" if x is None or lane == "direct" else format(x, spec)

        print(
            f"| {c} | {lane} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {fmt(add50, '+,.0f')} "
            f"| {fmt(add99, '+,.0f')} | {fmt(vs_direct, '.2f')} "
            f"| {'—' if lane == 'nginx' else fmt(vs_nginx, '.2f')} "
            f"| {fmt(cpu, ',.0f')} | {mock_cpu:,.0f} | {errors} |"
        )

print()
t1 = summary.get((1, "palisade"), {}).get("add99")
t32 = summary.get((32, "palisade"), {}).get("vs_nginx")
if t1 is not None:
    print(f"- Target added p99 at c=1 < 250 µs: measured {t1:+.0f} µs → {'met' if t1 < 250 else 'NOT met'}")
if t32 is not None:
    print(f"- Target req/s at c=32 ≥ 80% of nginx: measured {t32:.0%} → {'met' if t32 >= 0.8 else 'NOT met'}")
