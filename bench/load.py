"""The HTTP load generators: wrk (requests for a while) and curl (16 MB transfers)."""

import json
import subprocess

from bench.common import BULK_SIZE, TARGETS, BenchError
from bench.processes import find_tool

WRK_ERRORS = ("connect", "read", "write", "status", "timeout")
CURL_RECORD = "%{http_code} %{size_download} %{size_upload} %{time_total}\\n"


def run_tool(args, timeout, what):
    try:
        return subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish within {timeout} s") from None


def with_headers(args, headers):
    for header in headers:
        args += ["-H", header]
    return args


def wrk_figures(r):
    """The figures of one BENCHJSON line (bench/targets/report.lua)."""
    seconds = r["duration_us"] / 1e6
    errors = {k: int(r[k]) for k in WRK_ERRORS}
    return {
        "requests": int(r["requests"]),
        "req_s": r["requests"] / seconds if seconds else 0.0,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "mb_s": r["bytes"] / seconds / 1e6 if seconds else 0.0,
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


class Load:
    def __init__(self, duration, bulk_file, bulk_count):
        self.wrk_bin = find_tool("wrk")
        self.curl_bin = find_tool("curl")
        self.duration = duration
        self.bulk_file = bulk_file
        self.bulk_count = bulk_count

    def wrk(self, url, threads, connections, headers=(), duration=None, script="report.lua"):
        """`script`: report.lua (the same request each time) or paths.lua (a new path each time)."""
        duration = duration or self.duration
        args = [self.wrk_bin, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(TARGETS / script)]
        out = run_tool([*with_headers(args, headers), url], duration + 60, "wrk")
        for line in out.stdout.splitlines():
            if line.startswith("BENCHJSON "):
                return wrk_figures(json.loads(line[len("BENCHJSON "):]))
        raise BenchError(f"wrk failed: {(out.stderr or out.stdout).strip()[:300]}")

    def curl(self, transfers, headers, upload):
        """`transfers` URLs in one curl run (one connection); MB/s over the sum of their times."""
        args = with_headers([self.curl_bin, "-s", "--max-time", "120", "-H", "Expect:", "-w", CURL_RECORD], headers)
        for url in transfers:
            if upload:
                args += ["-T", str(self.bulk_file)]
            args += [url, "-o", "/dev/null"]
        out = run_tool(args, 150, "curl")
        fields = out.stdout.split()
        records = [fields[i:i + 4] for i in range(0, len(fields) - 3, 4)]
        done = [c for c in (complete(r, upload) for r in records) if c[0]]
        total_bytes, total_time = sum(m for m, _ in done), sum(s for _, s in done)
        return {
            "mb_s": total_bytes / total_time / 1e6 if total_time else 0.0,
            "transfers": len(done),
            "per_transfer_mb_s": [round(m / s / 1e6, 1) for m, s in done],
            "errors": len(transfers) - len(done),
            "curl_exit": out.returncode,
        }


def complete(record, upload):
    """(bytes, seconds) of one curl record if it moved the whole 16 MB with a good status, else (0, 0)."""
    code, down, up, seconds = record
    moved, seconds = int(float(up if upload else down)), float(seconds)
    if code in (("201", "204") if upload else ("200",)) and moved == BULK_SIZE and seconds > 0:
        return moved, seconds
    return 0, 0.0
