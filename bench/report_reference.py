"""The side-by-side part of the report (bench/scenarios/reference.py): our pair, with the
inspector off and on, against the reference pair, figure by figure, and ours/reference."""

from bench.reference import CONVERSATION_LIMIT
from bench.scenarios.reference import SIDES
from bench.tables import aligned, column_widths, figure, stats_of

HEADER = ("side by side", "ours", "ours, inspector on", "reference", "ours/ref", "insp./ref")


def field(name):
    return lambda sample: sample[name]


def cpu_us_per_request(proc):
    return lambda sample: sample["cpu_s"][proc] / sample["requests"] * 1e6 if sample["requests"] else None


def cpu_ms_per_transfer(proc):
    return lambda sample: sample["cpu_s"][proc] / sample["transfers"] * 1e3 if sample["transfers"] else None


def request_rows(key, what):
    return [
        (key, f"{what}: req/s", "{:,.0f}", field("req_s")),
        (key, f"{what}: p50 ms", "{:.2f}", field("p50_ms")),
        (key, f"{what}: p99 ms", "{:.2f}", field("p99_ms")),
        (key, f"{what}: server CPU µs/req", "{:.1f}", cpu_us_per_request("server")),
        (key, f"{what}: client CPU µs/req", "{:.1f}", cpu_us_per_request("client")),
    ]


def transfer_rows(key, what):
    return [
        (key, f"{what}: MB/s", "{:,.1f}", field("mb_s")),
        (key, f"{what}: server CPU ms/16 MB", "{:.1f}", cpu_ms_per_transfer("server")),
        (key, f"{what}: client CPU ms/16 MB", "{:.1f}", cpu_ms_per_transfer("client")),
    ]


ROWS = [*request_rows("keepalive", "keep-alive 6 B"), *request_rows("keepalive_paths", "keep-alive, new paths"),
        *request_rows("close", "new connection"),
        *transfer_rows("download", "16 MB down"), *transfer_rows("upload", "16 MB up")]


def row_stats(samples, value):
    values = [v for v in map(value, samples) if v is not None]
    return stats_of(values) if values else None


def ratio(mine, theirs):
    if not mine or not theirs or not theirs["median"]:
        return "—"
    return f"{mine['median'] / theirs['median']:.2f}"


def summary(scenarios):
    """{label: {side: stats, ...}} in the order of ROWS, for the figures that were measured."""
    rows = {}
    for key, label, fmt, value in ROWS:
        sc = scenarios.get(key)
        if sc:
            rows[label] = {"format": fmt, **{side: row_stats(sc[side], value) for side in SIDES}}
    return rows


def cells(label, row):
    shown = [figure(row[side], row["format"]) if row[side] else "—" for side in SIDES]
    return (label, *shown, ratio(row["ours"], row["reference"]), ratio(row["ours_inspector"], row["reference"]))


def reference_lines(reference, machine):
    if reference is None:
        return []
    if "error" in reference:
        return ["", f"side-by-side part failed: {reference['error']}"]
    rows = summary(reference.get("scenarios", {}))
    reference["summary"] = rows
    table = [HEADER, *(cells(label, row) for label, row in rows.items())]
    return ["", f"side by side with the reference (signal24 tpot-server + tpot-client v0.2.0, node "
                f"{machine.get('node') or '?'}), the same nginx, alternating; ours: --quiet, forwarded headers on;",
            f"  the reference client restarted (and warmed up 1 s) before each of its figures "
            f"({reference.get('reference_clients_started', '?')} started): it exits at {CONVERSATION_LIMIT:,} "
            f"connections; ratios of medians, CPU is the figure to trust on a shared machine",
            *aligned(table, column_widths([table]))]


def reference_problems(reference):
    problems = []
    for key, sc in (reference or {}).get("scenarios", {}).items():
        for n, sample in enumerate(sc.get("reference", []), 1):
            if sample.get("client_exit") is not None:
                problems.append(f"side by side: the reference client exited (status {sample['client_exit']}) "
                                f"during {key}, round {n}: that figure is not comparable")
    return problems
