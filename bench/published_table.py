#!/usr/bin/env python3
"""Markdown tables of a bench/published.sh run, and their place in BENCHMARKS.md.

Usage: python3 bench/published_table.py bench/out/<run>                 # print
       python3 bench/published_table.py bench/out/<run> --write BENCHMARKS.md

Each cell is the median over rounds. Differences to `direct` and ratios to `nginx` are
computed within a round (lanes of one round, workload and concurrency ran back to back) and
the median of those is shown, so slow drifts of the shared machine cancel out. A lane that
could not start, failed its smoke test or failed a measurement is shown as such, with the
reason. Targets are computed from the data, never written by hand.
"""
import json
import re
import statistics
import sys
from pathlib import Path

LANES = ["direct", "nginx", "pal-off", "pal-on", "litellm", "litellm-guard", "portkey", "portkey-guard"]
WORKLOADS = {
    "chat": "Chat: 4 KB prompt with a little PII, non-streaming",
    "agent": "Agent turn: 6 tools, a prior tool_use and a 16 KB tool_result; the answer is a tool_use",
    "stream": "Streamed answer: 1,000 tokens (1,000 text deltas), `stream: true`",
}
BEGIN, END = "<!-- published:begin -->", "<!-- published:end -->"
med = statistics.median


def load(out):
    meta = json.loads((out / "meta.json").read_text())
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()]
    status = json.loads((out / "status.json").read_text()) if (out / "status.json").exists() else {"lanes": {}, "pairs": {}}
    memory = json.loads((out / "memory.json").read_text()) if (out / "memory.json").exists() else {}
    stages = [json.loads(l) for l in (out / "stages.jsonl").read_text().splitlines() if l.strip()] if (out / "stages.jsonl").exists() else []
    repl = [json.loads(l) for l in (out / "replicas.jsonl").read_text().splitlines() if l.strip()] if (out / "replicas.jsonl").exists() else []
    return meta, rows, status, memory, stages, repl


def short(s, n=160):
    s = re.sub(r"\s+", " ", str(s)).replace("|", "\\|")
    return s if len(s) <= n else s[: n - 1] + "…"


def fmt(x, spec, dash="—"):
    return dash if x is None else format(x, spec)


class Data:
    def __init__(self, rows, status):
        self.by = {}
        self.failed = {}
        for r in rows:
            k = (r["workload"], r["c"], r["lane"], r["round"])
            if "failed" in r:
                self.failed.setdefault((r["workload"], r["c"], r["lane"]), []).append(r["failed"])
            else:
                self.by[k] = r
        self.rounds = sorted({r["round"] for r in rows})
        self.status = status

    def runs(self, w, c, lane):
        return [self.by[(w, c, lane, rd)] for rd in self.rounds if (w, c, lane, rd) in self.by]

    def med(self, w, c, lane, f):
        vals = [f(r) for r in self.runs(w, c, lane)]
        vals = [v for v in vals if v is not None]
        return med(vals) if vals else None

    def paired(self, w, c, lane, ref, f):
        vals = []
        for rd in self.rounds:
            a, b = self.by.get((w, c, lane, rd)), self.by.get((w, c, ref, rd))
            if a and b:
                v = f(a, b)
                if v is not None:
                    vals.append(v)
        return med(vals) if vals else None

    def why_missing(self, w, c, lane):
        if lane in self.status["lanes"]:
            return "lane did not run: " + self.status["lanes"][lane]
        if f"{lane}/{w}" in self.status["pairs"]:
            return "smoke test failed: " + self.status["pairs"][f"{lane}/{w}"]
        if (w, c, lane) in self.failed:
            return "measurement failed: " + "; ".join(self.failed[(w, c, lane)])
        return None


def cpu_per_req(r, key):
    sent = r["count"] + r["errors"] + r.get("warmup_requests", 0)
    if key not in r or not sent:
        return None
    return r[key] * 1e6 / r["clk_tck"] / sent


def ft(r, p):
    s = r.get("streaming")
    if not s or not s["first_token"]["count"]:
        return None
    return s["first_token"][p]


def gap(r, p):
    s = r.get("streaming")
    return s["max_event_gap"][p] if s and s["max_event_gap"]["count"] else None


def workload_table(d, w, concs, lanes, out):
    stream = w == "stream"
    if stream:
        out.append("| c | lane | req/s | first token p50 µs | first token p99 µs | added first token p50 vs direct "
                   "| added first token p99 vs direct | largest gap between events p50 / p99 µs | whole stream p50 µs "
                   "| req/s ÷ nginx | proxy CPU µs/req | errors |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        out.append("| c | lane | req/s | p50 µs | p99 µs | added p50 vs direct | added p99 vs direct "
                   "| req/s ÷ nginx | proxy CPU µs/req | errors |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    cols = 12 if stream else 10
    for c in concs:
        for lane in lanes:
            rs = d.runs(w, c, lane)
            why = d.why_missing(w, c, lane)
            if not rs:
                reason = why or "not measured"
                out.append(f"| {c} | {lane} | **error** | {short(reason)} |" + " |" * (cols - 4))
                continue
            rps = d.med(w, c, lane, lambda r: r["rps"])
            errors = sum(r["errors"] for r in rs)
            err = f"{errors:,}"
            if errors:
                samples = sorted({s for r in rs for s in r.get("error_samples", [])})
                err = f"**{errors:,}** ({short('; '.join(samples), 100)})"
            if why:
                err += f" · {short(why, 80)}"
            cpu = d.med(w, c, lane, lambda r: cpu_per_req(r, "proxy_cpu_ticks"))
            cpu_s = "—" if lane == "direct" else fmt(cpu, ",.0f")
            vs_nginx = None if lane in ("direct", "nginx") else d.paired(w, c, lane, "nginx", lambda a, b: a["rps"] / b["rps"] if b["rps"] else None)
            if stream:
                f50 = d.med(w, c, lane, lambda r: ft(r, "p50_us"))
                f99 = d.med(w, c, lane, lambda r: ft(r, "p99_us"))
                a50 = None if lane == "direct" else d.paired(w, c, lane, "direct", lambda a, b: None if ft(a, "p50_us") is None or ft(b, "p50_us") is None else ft(a, "p50_us") - ft(b, "p50_us"))
                a99 = None if lane == "direct" else d.paired(w, c, lane, "direct", lambda a, b: None if ft(a, "p99_us") is None or ft(b, "p99_us") is None else ft(a, "p99_us") - ft(b, "p99_us"))
                g50 = d.med(w, c, lane, lambda r: gap(r, "p50_us"))
                g99 = d.med(w, c, lane, lambda r: gap(r, "p99_us"))
                p50 = d.med(w, c, lane, lambda r: r["p50_us"])
                out.append(f"| {c} | {lane} | {rps:,.0f} | {fmt(f50, ',.0f')} | {fmt(f99, ',.0f')} | {fmt(a50, '+,.0f')} "
                           f"| {fmt(a99, '+,.0f')} | {fmt(g50, ',.0f')} / {fmt(g99, ',.0f')} | {fmt(p50, ',.0f')} "
                           f"| {fmt(vs_nginx, '.2f')} | {cpu_s} | {err} |")
            else:
                p50 = d.med(w, c, lane, lambda r: r["p50_us"])
                p99 = d.med(w, c, lane, lambda r: r["p99_us"])
                a50 = None if lane == "direct" else d.paired(w, c, lane, "direct", lambda a, b: a["p50_us"] - b["p50_us"])
                a99 = None if lane == "direct" else d.paired(w, c, lane, "direct", lambda a, b: a["p99_us"] - b["p99_us"])
                out.append(f"| {c} | {lane} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {fmt(a50, '+,.0f')} | {fmt(a99, '+,.0f')} "
                           f"| {fmt(vs_nginx, '.2f')} | {cpu_s} | {err} |")


def targets(d, out):
    out.append("| target (issue 11) | measured | |")
    out.append("|---|---|---|")

    def row(name, value, ok, why=None):
        if value is None:
            out.append(f"| {name} | not measured ({short(why or 'no data', 120)}) | **not met** |")
        else:
            out.append(f"| {name} | {value} | {'**met**' if ok else '**not met**'} |")

    def ratio(w, c, a, b):
        r = d.paired(w, c, a, b, lambda x, y: x["rps"] / y["rps"] if y["rps"] and not x["errors"] else None)
        why = d.why_missing(w, c, a) or d.why_missing(w, c, b)
        return r, why

    def rps(w, c, lane):
        return d.med(w, c, lane, lambda r: r["rps"])

    for w in ("chat", "agent"):
        r, why = ratio(w, 16, "pal-on", "nginx")
        row(f"{w}, c=16: guardrails-on req/s ≥ 80 % of bare nginx",
            None if r is None else f"{r:.0%} ({rps(w, 16, 'pal-on'):,.0f} vs {rps(w, 16, 'nginx'):,.0f} req/s)", r is not None and r >= 0.8, why)
        for ll in ("litellm", "litellm-guard"):
            r, why = ratio(w, 16, "pal-on", ll)
            row(f"{w}, c=16: guardrails-on req/s ≥ 10 × {ll}",
                None if r is None else f"{r:.1f} × ({rps(w, 16, 'pal-on'):,.0f} vs {rps(w, 16, ll):,.0f} req/s)", r is not None and r >= 10, why)
        a = d.paired(w, 1, "pal-on", "direct", lambda x, y: x["p99_us"] - y["p99_us"])
        p50 = d.paired(w, 1, "pal-on", "direct", lambda x, y: x["p50_us"] - y["p50_us"])
        row(f"{w}, c=1: guardrails-on added p99 ≤ 250 µs",
            None if a is None else f"{a:+,.0f} µs (p50 {p50:+,.0f} µs)", a is not None and a <= 250, d.why_missing(w, 1, "pal-on"))
    for c in (1, 16):
        a = d.paired("stream", c, "pal-on", "direct", lambda x, y: None if ft(x, "p50_us") is None or ft(y, "p50_us") is None else ft(x, "p50_us") - ft(y, "p50_us"))
        a99 = d.paired("stream", c, "pal-on", "direct", lambda x, y: None if ft(x, "p99_us") is None or ft(y, "p99_us") is None else ft(x, "p99_us") - ft(y, "p99_us"))
        row(f"stream, c={c}: guardrails-on added time to first token ≤ 1 ms (p50)",
            None if a is None else f"{a:+,.0f} µs (p99 {fmt(a99, '+,.0f')} µs)", a is not None and a <= 1000, d.why_missing("stream", c, "pal-on"))


def guard_check(out_dir, lanes, status, out):
    out.append("| lane | the prompt's email in the answer | its phone number in the answer | answer |")
    out.append("|---|---|---|---|")
    for lane in lanes:
        f = out_dir / f"{lane}-chat-response.json"
        if lane in status["lanes"]:
            out.append(f"| {lane} | — | — | lane did not run |")
            continue
        if not f.exists():
            out.append(f"| {lane} | — | — | no answer recorded |")
            continue
        raw = f.read_text(errors="replace")
        try:
            v = json.loads(raw)
            text = " ".join(b.get("text", "") for b in v.get("content", []) if isinstance(b, dict)) if "content" in v else raw
            kind = "message" if "content" in v else short(v.get("error", v), 80)
        except Exception:
            text, kind = raw, "not JSON: " + short(raw, 60)
        e = "jane.doe@example.com" in text
        p = "415-555-0132" in text
        out.append(f"| {lane} | {'yes' if e else 'no (masked)'} | {'yes' if p else 'no (masked)'} | {kind} |")


def render(out_dir):
    meta, rows, status, memory, stages, repl = load(out_dir)
    d = Data(rows, status)
    lanes = [l for l in LANES if l in meta.get("lanes", " ".join(LANES)).split()]
    st = {s["stage"]: s["s"] for s in stages}
    out = []
    def secs(name):
        f = out_dir / name
        try:
            return float(f.read_text())
        except (OSError, ValueError):
            return None

    ll, pk = secs("litellm-install.seconds"), secs("portkey-install.seconds")
    installs = ", ".join(x for x in [
        f"LiteLLM install {ll:.0f} s" if ll is not None else "",
        f"Portkey install {pk:.0f} s" if pk is not None else "",
    ] if x)
    out.append(
        f"Run `{meta['run']}`: `bash bench/published.sh`, {meta['rounds']} rounds × {meta['duration_s']} s per "
        f"measurement (+{meta['warmup_s']} s warm-up), lanes interleaved within each round. Whole command "
        f"**{meta['total_s'] / 60:.1f} min**: apt {st.get('install_nginx', 0):.0f} s, build {st.get('build', 0):.0f} s "
        f"({installs or 'no installs'}, in parallel with the build; {st.get('wait_installs', 0):.0f} s waited after it), "
        f"start {st.get('start', 0):.0f} s, smoke tests {st.get('smoke', 0):.0f} s, measurements {st.get('measure', 0):.0f} s, "
        f"replicas {st.get('replicas', 0):.0f} s."
    )
    out.append("")
    out.append("### Machine")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    out.append(f"| CPU | {meta['nproc']} × `{meta['cpu']}` |")
    out.append(f"| memory | {meta['mem_gib']} GiB |")
    out.append(f"| kernel / OS | Linux {meta['kernel']}, {meta['os']} |")
    out.append(f"| load average (1/5/15 min) | {meta['loadavg_start'] if isinstance(meta['loadavg_start'], str) else ' '.join(meta['loadavg_start'])} at the start → {meta['loadavg_end']} at the end |")
    out.append(f"| Palisade | git `{meta['git']}`, `cargo build --release`, rustc {meta['rustc']} |")
    out.append(f"| nginx | {meta['nginx']} (Debian package), `worker_processes {meta['nginx_workers']}`, keep-alive upstream, `proxy_buffering {meta['nginx_proxy_buffering']}`, no access log |")
    out.append(f"| LiteLLM | `litellm[proxy]=={meta['litellm']}` from PyPI (Python {meta['python']}), `--num_workers {meta['litellm_workers']}{' --run_gunicorn' if meta['litellm_workers'] > 1 else ''}`, no database, telemetry off |")
    out.append(f"| Portkey | `@portkey-ai/gateway@{meta['portkey']}` from npm (Node {meta['node']}; `@hono/node-server` {meta.get('portkey_hono', '?')} as npm resolved it), one process (`build/start-server.js --headless`) |")
    out.append(f"| PostgreSQL / Redis | {meta.get('postgres', '?')} / {meta.get('redis', '?')} (replicas stage) |")
    out.append("")
    out.append("### Targets")
    out.append("")
    targets(d, out)
    for w in [w for w in WORKLOADS if w in meta["workloads"].split()]:
        out.append("")
        out.append(f"### {WORKLOADS[w]}")
        out.append("")
        concs = [int(c) for c in meta["conc"][w].split()]
        workload_table(d, w, concs, lanes, out)
    out.append("")
    out.append("### Peak memory")
    out.append("")
    out.append("| contestant | processes | peak RSS (VmHWM summed over its processes) | PSS at the end (shared pages counted once) |")
    out.append("|---|---:|---:|---:|")
    for lane in [l for l in lanes if l != "direct"] + ["mock"]:
        m = memory.get(lane)
        if lane in status["lanes"]:
            out.append(f"| {lane} | — | error: {short(status['lanes'][lane], 100)} | |")
        elif m:
            pss = f"{m['pss_kb'] / 1024:,.0f} MiB" if m.get("pss_kb") else "—"
            out.append(f"| {lane} | {m['processes']} | {m['hwm_kb'] / 1024:,.0f} MiB | {pss} |")
    out.append("")
    out.append("### What reached the client (chat workload, one request per lane)")
    out.append("")
    guard_check(out_dir, lanes, status, out)
    if any(l in lanes for l in status["lanes"]) or status["pairs"]:
        out.append("")
        out.append("### Lanes that erred")
        out.append("")
        out.append("| lane | workload | reason |")
        out.append("|---|---|---|")
        for lane, why in sorted((l, w) for l, w in status["lanes"].items() if l in lanes):
            out.append(f"| {lane} | all | {short(why, 300)} |")
        for pair, why in sorted(status["pairs"].items()):
            lane, w = pair.split("/")
            out.append(f"| {lane} | {w} | {short(why, 300)} |")
    out.append("")
    out.append(f"### Replicas on PostgreSQL + Redis (chat workload, guardrails on, c={meta['replica_concurrency']})")
    out.append("")
    if meta.get("replica_status", "ok") != "ok":
        out.append(f"Replicas stage: **{short(meta['replica_status'], 300)}**")
        out.append("")
    if repl:
        out.append("| replicas | round | req/s (= receipts committed/s) | p50 µs | p99 µs | errors | load avg |")
        out.append("|---:|---:|---:|---:|---:|---:|---|")
        for r in repl:
            err = f"{r['errors']:,}" if not r["errors"] else f"**{r['errors']:,}** ({short('; '.join(r.get('error_samples', [])), 100)})"
            out.append(f"| {r['replicas']} | {r['round']} | {r['rps']:,.0f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} | {err} | {r['loadavg']} |")
    return "\n".join(out) + "\n"


def write(path, text):
    p = Path(path)
    doc = p.read_text()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"{path}: markers {BEGIN} / {END} not found")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    p.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    text = render(Path(args[0]))
    if len(args) == 3 and args[1] == "--write":
        write(args[2], text)
    else:
        sys.stdout.write(text)
