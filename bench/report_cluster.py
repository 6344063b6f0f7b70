"""The cluster part of the report (bench/scenarios/cluster.py): two tables of figures
(local against cross-node, --workers 1 against 2), CPU µs per request, Redis round trips
per request, and the registry at scale."""

import statistics

FIGURES = (
    ("cluster_keepalive", "req_s", "keep-alive 6 B: req/s", "{:,.0f}"),
    ("cluster_keepalive", "p50_ms", "keep-alive 6 B: p50 latency ms", "{:.2f}"),
    ("cluster_keepalive", "p99_ms", "keep-alive 6 B: p99 latency ms", "{:.2f}"),
    ("cluster_close", "req_s", "new connection per request: req/s", "{:,.0f}"),
    ("cluster_close", "p50_ms", "new connection: p50 latency ms", "{:.2f}"),
    ("cluster_close", "p99_ms", "new connection: p99 latency ms", "{:.2f}"),
)
PARTS = (
    # (results key, sides, column heads, processes whose CPU is shown, intro)
    ("nodes", ("local", "cross"), ("local (node A)", "cross (via node B)", "cross/local"),
     ("node_a", "node_b", "client", "nginx"),
     "cluster: 2 nodes + Redis here, the tunnel on node A; local = the load sent at node A, cross = at node B,"
     " which hands every connection to node A's peer port"),
    ("workers", ("workers1", "workers2"), ("--workers 1", "--workers 2", "2/1"), ("server", "client", "nginx"),
     "workers: one server with --workers 1, one with --workers 2 (its CPU summed over both workers)"),
)
TPOT_PROCESSES = ("node_a", "node_b", "server", "client")


def median(values):
    return statistics.median(values) if values else None


def fmt(value, pattern):
    return "—" if value is None else pattern.format(value)


def table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def figure_rows(scenarios, sides, heads):
    rows = [("metric", *heads)]
    for key, field, label, pattern in FIGURES:
        sc = scenarios.get(key)
        if not sc:
            continue
        first, second = (median([s[field] for s in sc[side]]) for side in sides)
        ratio = second / first if first and second is not None else None
        rows.append((label, fmt(first, pattern), fmt(second, pattern), fmt(ratio, "{:.3f}")))
    return rows


def cpu_us_per_request(sample, proc):
    return sample["cpu_s"][proc] / sample["requests"] * 1e6 if sample["requests"] else None


def cpu_rows(scenarios, sides, procs):
    present = [p for p in procs if any(p in s["cpu_s"] for sc in scenarios.values() for s in sc[sides[0]])]
    rows = [("CPU µs per request (median)", *present, "all tpot", "Redis trips/req")]
    for key, sc in scenarios.items():
        for side in sides:
            samples = [s for s in sc[side] if s["requests"]]
            per = [median([cpu_us_per_request(s, p) for s in samples]) for p in present]
            tpot = median([sum(cpu_us_per_request(s, p) for p in present if p in TPOT_PROCESSES) for s in samples])
            commands = median([s["redis_round_trips"] / s["requests"] for s in samples])
            rows.append((f"{key} {side}", *(fmt(v, "{:.1f}") for v in per), fmt(tpot, "{:.1f}"), fmt(commands, "{:.4f}")))
    return rows


def registry_lines(r):
    one, loaded = r["one_at_a_time"], r["loaded"]
    per_core = 1e6 / loaded["redis_cpu_us_per_lookup"] if loaded["redis_cpu_us_per_lookup"] else None
    return [
        f"registry: {r['names']:,} names claimed at {r['claims_per_s']:,.0f}/s (claim + attach, one node);"
        f" Redis memory {r['bytes_per_name']:,.0f} B per name ({r['redis_used_memory_mb']} MB in all)",
        f"  lookups one at a time: p50 {one['p50_ms']:.3f} ms, p99 {one['p99_ms']:.3f} ms ({one['lookups_per_s']:,.0f}/s)",
        f"  lookups {loaded['concurrency']} at a time from one node: {loaded['lookups_per_s']:,.0f}/s,"
        f" p50 {loaded['p50_ms']:.2f} ms, p99 {loaded['p99_ms']:.2f} ms (the node's Python is the limit);"
        f" Redis CPU {loaded['redis_cpu_us_per_lookup']:.1f} µs per lookup = {fmt(per_core, '{:,.0f}')} lookups/s per Redis core",
    ]


def cluster_lines(cluster):
    if not cluster:
        return []
    lines = []
    for key, sides, heads, procs, intro in PARTS:
        scenarios = cluster.get(key) or {}
        if not scenarios:
            continue
        lines += ["", intro, *table(figure_rows(scenarios, sides, heads)), "", *table(cpu_rows(scenarios, sides, procs))]
    if cluster.get("registry"):
        lines += ["", *registry_lines(cluster["registry"])]
    return lines


def cluster_problems(cluster):
    problems = [f"cluster part failed: {cluster['error']}"] if cluster and cluster.get("error") else []
    for key, sides, *_ in PARTS:
        for name, sc in ((cluster or {}).get(key) or {}).items():
            errors = sum(s["errors"] for side in sides for s in sc[side])
            if errors:
                problems.append(f"{key} {name}: {errors} wrk errors over all rounds")
    return problems
