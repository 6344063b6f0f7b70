"""The results: summary rows and CPU figures, the printed table, what looked wrong, and
the JSON file under bench/results/."""

import json
import signal

from bench.common import REPO, RESULTS
from bench.report_cluster import cluster_lines, cluster_problems
from bench.report_inspector import inspector_lines
from bench.report_reference import reference_lines, reference_problems
from bench.scenarios.tcp import TCP_ROUND_LIMIT
from bench.tables import aligned, column_widths, figure, spread, stats_of

ROWS = [
    # (scenario, field, label, format)
    ("keepalive", "req_s", "keep-alive 6 B (wrk -t1 -c50): req/s", "{:,.0f}"),
    ("keepalive", "p50_ms", "keep-alive 6 B: p50 latency ms", "{:.2f}"),
    ("keepalive", "p99_ms", "keep-alive 6 B: p99 latency ms", "{:.2f}"),
    ("keepalive_paths", "req_s", "keep-alive, a new path per request: req/s", "{:,.0f}"),
    ("keepalive_100k", "req_s", "keep-alive 100 KB (wrk -t1 -c50): req/s", "{:,.0f}"),
    ("keepalive_100k", "p99_ms", "keep-alive 100 KB: p99 latency ms", "{:,.2f}"),
    ("close", "req_s", "new connection per request: req/s", "{:,.0f}"),
    ("download", "mb_s", "16 MB download: MB/s", "{:,.1f}"),
    ("upload", "mb_s", "16 MB upload: MB/s", "{:,.1f}"),
    ("c500", "req_s", "500 connections (wrk -t2 -c500): req/s", "{:,.0f}"),
    ("c500", "errors", "500 connections: errors", "{:,.0f}"),
]

# CPU tables: the processes measured on each side, and the printed columns (key, title, width).
HTTP_CPU_SIDES = (("tunnel", ("server", "client", "nginx")), ("direct", ("nginx",)))
TCP_CPU_SIDES = (("tunnel", ("server", "tcp_client", "connect_client", "service")), ("direct", ("service",)))
HTTP_CPU_COLUMNS = ("CPU seconds (median)", (
    ("tunnel_server", "tunnel server", 14), ("tunnel_client", "tunnel client", 15),
    ("tunnel_nginx", "nginx (tunnel)", 16), ("direct_nginx", "nginx (direct)", 16)))
TCP_CPU_COLUMNS = ("CPU seconds (median), raw TCP", (
    ("tunnel_server", "tunnel server", 13), ("tunnel_tcp_client", "tcp client", 12),
    ("tunnel_connect_client", "connect client", 16), ("tunnel_service", "service (tunnel)", 18),
    ("direct_service", "service (direct)", 18)))
LABEL_WIDTH = 38
TABLE_HEADS = {
    "http": ("metric", "direct (nginx)", "through tunnel", "tunnel/direct"),
    "tcp": ("raw TCP tunnel", "direct (service)", "through tunnel", "tunnel/direct"),
}


def is_tcp(entry):
    return entry["scenario"].startswith("tcp_")


def tcp_rows(cfg):
    """The raw TCP rows, labelled with this run's sizes (see ROWS)."""
    mb, n = cfg["bytes"] // 2**20, cfg["connections"]
    return [
        ("tcp_upload", "mb_s", f"{mb} MB upload, one stream: MB/s", "{:,.1f}"),
        ("tcp_download", "mb_s", f"{mb} MB download, one stream: MB/s", "{:,.1f}"),
        ("tcp_setup", "conn_s", f"{n} sequential connections: conn/s", "{:,.1f}"),
        ("tcp_setup", "p50_ms", "connect + 1 KB echo: p50 latency ms", "{:,.2f}"),
        ("tcp_setup", "p99_ms", "connect + 1 KB echo: p99 latency ms", "{:,.2f}"),
    ]


def summarise(samples, field):
    return stats_of([s[field] for s in samples])


def summary_rows(scenarios, spec):
    """One row per (scenario, field) of `spec` that has figures on both sides."""
    rows = []
    for key, field, label, fmt in spec:
        sc = scenarios.get(key)
        if not sc or not sc["direct"] or not sc["tunnel"]:
            continue
        direct, tunnel = summarise(sc["direct"], field), summarise(sc["tunnel"], field)
        ratio = tunnel["median"] / direct["median"] if direct["median"] else None
        rows.append({"scenario": key, "metric": field, "label": label, "format": fmt,
                     "direct": direct, "tunnel": tunnel, "ratio": ratio})
    return rows


def cpu_entries(scenarios, sides, units):
    """CPU seconds per unit of work, median [min-max] over the rounds, per scenario and process.

    units: {cpu_unit: (the sample's count of that work, scale, label)}.
    """
    entries = []
    for key, sc in scenarios.items():
        count, scale, unit = units[sc["cpu_unit"]]
        entry = {"scenario": key, "title": sc["title"], "unit": unit}
        for side, procs in sides:
            for proc in procs:
                values = [s["cpu_s"][proc] / s[count] * scale for s in sc[side] if s[count]]
                if values:
                    entry[f"{side}_{proc}"] = spread(values)
        if len(entry) > 3:  # some figures
            entries.append(entry)
    return entries


def build_summary(results):
    rows = summary_rows(results["scenarios"], ROWS)
    cpu = cpu_entries(results["scenarios"], HTTP_CPU_SIDES, {
        "req": ("requests", 1000, "per 1000 requests"), "transfer": ("transfers", 1, "per 16 MB")})
    tcp = results.get("tcp")
    if tcp:
        rows += summary_rows(tcp["scenarios"], tcp_rows(tcp["config"]))
        cpu += cpu_entries(tcp["scenarios"], TCP_CPU_SIDES, {
            "transfer": ("transfers", 1, f"per {tcp['config']['bytes'] // 2**20} MB"),
            "connection": ("connections", 1, "per connection")})
    return rows, cpu


# ---------------------------------------------------------------------------------------
# the printed table


def cells(r):
    ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
    return (r["label"], figure(r["direct"], r["format"]), figure(r["tunnel"], r["format"]), ratio)


def heading(results):
    m, cfg = results["machine"], results["config"]
    lines = [f"TPoT benchmark {results['timestamp']} — {m['nproc']} CPU ({m['cpu_model']}), "
             f"Linux {m['kernel']}, Python {m['python']}"]
    if results["scenarios"]:
        lines.append(f"{cfg['repeat']} round(s) of {cfg['duration_s']} s per wrk figure, alternating direct/tunnel; "
                     f"median [min–max]; bulk = {cfg['bulk_count']} x 16 MB per figure; MB = 10^6 bytes")
    return lines


def tcp_intro(tc):
    return [f"raw TCP: {tc['repeat']} round(s), alternating; direct = a Python source/sink/echo service, "
            f"through = tpot connect --listen -> server -> tpot tcp -> it;",
            f"  one stream each way of {tc['bytes'] // 2**20} MiB, timed first byte to last, count + "
            f"sha256 checked; a connection = connect, send 1 KB, read its echo, close"]


def figure_tables(results):
    """The HTTP and the raw TCP tables of figures, in one set of column widths."""
    rows = results["summary"]
    tables = [(kind, [TABLE_HEADS[kind], *map(cells, part)])
              for kind, part in (("http", [r for r in rows if not is_tcp(r)]), ("tcp", [r for r in rows if is_tcp(r)]))
              if part]
    widths = column_widths([table for _, table in tables])
    lines = []
    for n, (kind, table) in enumerate(tables):
        if n:
            lines.append("")
        if kind == "tcp":
            lines += tcp_intro(results["tcp"]["config"])
        lines += aligned(table, widths)
    return lines


def other_errors(results):
    errors = [
        f"{key}: direct {sum(s['errors'] for s in sc['direct'])}, tunnel {sum(s['errors'] for s in sc['tunnel'])}"
        for key, sc in results["scenarios"].items()
        if key != "c500" and sum(s["errors"] for s in sc["direct"] + sc["tunnel"])
    ]
    if not errors:
        return []
    return ["wrk errors (connect/read/write, > 2 s timeouts, non-2xx) in other scenarios, all rounds: "
            + "; ".join(errors)]


def cpu_table(entries, columns):
    if not entries:
        return []
    label, cols = columns
    lines = ["", label.ljust(LABEL_WIDTH) + "  ".join(title for _, title, _ in cols)]
    for c in entries:
        values = (f"{c[key]['median']:.4f}" if key in c else "—" for key, _, _ in cols)
        lines.append(f"{c['scenario']} {c['unit']}".ljust(LABEL_WIDTH)
                     + "".join(v.rjust(w) for v, (_, _, w) in zip(values, cols)))
    return lines


def per(value, text, fmt="{:.1f} "):
    return "n/a" if value is None else fmt.format(value) + text


def memory_lines(mem):
    lines = []
    t = mem.get("idle_tunnels")
    if t:
        lines.append(f"server RSS, {t['opened']}/{t['requested']} idle tunnels: {t['server_rss_kb_before'] / 1024:.1f} MiB -> "
                     f"{t['server_rss_kb_after'] / 1024:.1f} MiB = {per(t['kb_per_tunnel'], 'KB per tunnel')} "
                     f"(failed {t['failures']}, dropped {t['dropped_while_idle']})")
    v = mem.get("idle_visitors")
    if v:
        lines.append(f"server RSS, {v['opened']}/{v['requested']} idle visitor connections: "
                     f"{v['server_rss_kb_before'] / 1024:.1f} MiB -> {v['server_rss_kb_after'] / 1024:.1f} MiB = "
                     f"{per(v['kb_per_connection'], 'KB per connection')} "
                     f"(client {per(v['client_kb_per_connection'], '', '{:.1f}')} KB per connection; "
                     f"failed {v['failures']}, dropped {v['dropped_while_idle']}, reused {v['sample_reused_ok']})")
    return lines


def render(results):
    cpu = results["cpu"]
    lines = [*heading(results), "", *figure_tables(results), *other_errors(results),
             *cpu_table([c for c in cpu if not is_tcp(c)], HTTP_CPU_COLUMNS),
             *cpu_table([c for c in cpu if is_tcp(c)], TCP_CPU_COLUMNS),
             *cluster_lines(results.get("cluster")),
             *inspector_lines(results.get("inspector")),
             *reference_lines(results.get("reference"), results["machine"]),
             "", *memory_lines(results.get("memory", {}))]
    problems = results.get("problems", [])
    if problems:
        lines += ["", "looked wrong:"] + [f"  {p}" for p in problems]
    # No double blank lines where a part is missing (a raw-TCP-only run, a failed part).
    lines = [line for i, line in enumerate(lines) if line or (i and lines[i - 1])]
    return "\n".join(lines).rstrip("\n")


# ---------------------------------------------------------------------------------------
# what looked wrong


def log_problems(where, what, r):
    problems = []
    if r["exit_status"] not in (None, 0) and r["exit_status"] != -signal.SIGTERM:
        problems.append(f"{where} {what} exited with status {r['exit_status']}")
    if r.get("log_lines_by_level", {}).get("debug"):
        problems.append(f"{where} {what} log recorded {r['log_lines_by_level']['debug']} debug-level lines "
                        f"(of {r['log_lines']})")
    if r["refusals_by_status"]:
        problems.append(f"{where} {what} refusals by status: {r['refusals_by_status']}")
    return problems + [f"{where} {what} log x{n['count']}: {n['line'][:150]}" for n in r["notable_lines"][:3]]


def tcp_problems(tcp):
    problems = [f"raw TCP part failed: {tcp['error']}"] if tcp.get("error") else []
    for s in tcp.get("scenarios", {}).get("tcp_setup", {}).get("tunnel", []):
        if s["connections"] < s["requested"]:
            problems.append(f"raw TCP: only {s['connections']} of {s['requested']} connections "
                            f"within {TCP_ROUND_LIMIT:.0f} s")
    return problems


def collect_problems(results):
    problems = [p for where, report in results.get("logs", {}).items()
                for what, r in report.items() for p in log_problems(where, what, r)]
    problems += tcp_problems(results.get("tcp") or {})
    problems += cluster_problems(results.get("cluster"))
    problems += reference_problems(results.get("reference"))
    for key in ("idle_tunnels", "idle_visitors"):
        m = results.get("memory", {}).get(key)
        if m and (m["failures"] or m["dropped_while_idle"]):
            problems.append(f"{key}: {m['failures']} failed to open ({m['first_error']}), "
                            f"{m['dropped_while_idle']} dropped while idle")
    return problems


# ---------------------------------------------------------------------------------------
# output


def write_json(results, timestamp):
    """bench/results/<timestamp>.json, written whole or not at all; its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{timestamp}.json"
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(path)
    return path


def finish(results, timestamp):
    """Summarise, print and write the results; 1 if the raw TCP part failed."""
    results["summary"], results["cpu"] = build_summary(results)
    results["problems"] = collect_problems(results)
    text = render(results)
    results["table"] = text
    path = write_json(results, timestamp)
    print(text)
    print(f"\n(written to {path.relative_to(REPO)})")
    return 1 if results.get("tcp", {}).get("error") or (results.get("cluster") or {}).get("error") else 0
