"""`make bench` (python -m bench): TPoT measured against the same load sent straight at nginx.

Everything runs on 127.0.0.1: nginx (generated config, temporary directory) serves a
6-byte page, a 100 KB file and a 16 MB file and accepts 16 MB uploads (WebDAV PUT, so the
whole body is received before nginx answers); our twistd server and a `tpot http` client
expose it as a tunnel. Each scenario is run directly and through the tunnel, alternately,
BENCH_REPEAT times (default 3) for BENCH_DURATION seconds (default 10); each figure is the
median with min-max. Then two memory measurements on fresh servers: RSS with
BENCH_TUNNELS (1000) idle tunnels, and with BENCH_VISITORS (5000) idle visitor connections.

Prints one table on stdout (progress goes to stderr) and writes the same as JSON to
bench/results/<UTC timestamp>.json (git-ignored). Nothing here asserts timings: a person judges.

BENCH_BULK_COUNT (4) is the number of 16 MB transfers per bulk figure; BENCH_KEEP_TMP=1
keeps the temporary directory (nginx, server and client logs); BENCH_REQUEST_LOG=1 lets
the client print its request log (it runs with --quiet otherwise).

Raw TCP tunnels get their own rows: a small source/sink/echo service (a separate Python
process on 127.0.0.1) exposed with `tpot tcp` and reached through `tpot connect --listen`,
against the same service reached directly. Per round: one stream uploading BENCH_TCP_MB
(64) MB to the sink, one downloading as much from the source (each timed from the first
byte sent to the last byte checked: count and sha256), and BENCH_TCP_CONNECTIONS (50)
sequential short connections (connect, send 1 KB, read its echo, close). BENCH_TCP=0 skips
this part, BENCH_TCP=only runs nothing else (no nginx or wrk needed). A failure here is one
line in the report, and the other figures are kept.

The cluster part (bench/scenarios/cluster.py; needs redis-server): visitors landing on the
tunnel's node against visitors landing on another node of a 2-node cluster, --workers 1
against --workers 2, and the registry with BENCH_REGISTRY_NAMES (100,000) names in one
Redis. BENCH_CLUSTER=0 skips it, BENCH_CLUSTER=only runs it alone (with nginx); a failure
is one line in the report.

The inspector part (bench/scenarios/inspector.py): keep-alive req/s and the client's CPU
per request with the inspector on against off, and the client's RSS holding 500 exchanges
with 1 MiB bodies, then after 500 small ones evicted them. BENCH_INSPECTOR=0 skips it,
BENCH_INSPECTOR=only runs it alone. The other figures are with --no-inspect.

The side-by-side part (bench/scenarios/reference.py), only with BENCH_REFERENCE=DIR (a
folder holding signal24/tpot-server and signal24/tpot-client at v0.2.0, each npm-installed;
node on PATH): our pair (--quiet --no-inspect, and with the inspector) against the reference
pair on the same nginx, keep-alive, new connections, 16 MB down and up, with each end's CPU
per request. BENCH_REFERENCE_ONLY=1 runs it alone.

Needs wrk, nginx and curl on PATH (the Makefile target installs them), and the project's
virtualenv (twistd and tpot next to this interpreter, or in .venv/bin). Run from the
repository's root (it imports tests.support.processes).
"""

import shutil
import signal
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench.common import BULK_SIZE, DOMAIN, HOST, BenchError, log, tail
from bench.load import Load
from bench.logscan import scan_logs
from bench.processes import Processes, find_tool, nginx_bin, venv_bin
from bench.procfs import machine_info
from bench.reference import check_reference
from bench.report import finish
from bench.scenarios.cluster import run_cluster
from bench.scenarios.http import run_throughput
from bench.scenarios.inspector import run_inspector
from bench.scenarios.memory import memory_idle_tunnels, memory_idle_visitors
from bench.scenarios.reference import run_reference
from bench.scenarios.tcp import TCP_ECHO_SIZE, run_tcp
from bench.services import Nginx, Tunnel
from bench.settings import Settings
from tests.support.processes import raise_nofile_limit


def tools(with_http, with_node):
    """The command lines that print the load tools' versions (none for a raw-TCP-only run)."""
    node = {"node": [find_tool("node"), "--version"]} if with_node else {}
    if not with_http:
        return {"nginx": None, "wrk": None, "curl": None}
    return {"nginx": [nginx_bin(), "-v"], "wrk": [find_tool("wrk"), "-v"], "curl": [find_tool("curl"), "--version"],
            **node}


def new_results(settings, timestamp):
    results = {
        "timestamp": timestamp,
        "machine": machine_info(tools(settings.tcp != "only", bool(settings.reference))),
        "config": {"duration_s": settings.duration, "repeat": settings.repeat, "idle_tunnels": settings.tunnels,
                   "idle_visitors": settings.visitors, "bulk_count": settings.bulk_count, "bulk_bytes": BULK_SIZE},
        "scenarios": {},
        "memory": {},
        "logs": {},
    }
    if settings.cluster != "0":
        results["cluster"] = {"nodes": {}, "workers": {}, "registry": None}
    if settings.inspector != "0":
        results["inspector"] = {}
    if settings.reference:
        results["reference"] = {}
    if settings.tcp != "0":
        results["tcp"] = {"config": {"repeat": settings.repeat, "bytes": settings.tcp_bytes,
                                     "connections": settings.tcp_connections, "echo_bytes": TCP_ECHO_SIZE},
                          "scenarios": {}}
    return results


class Run:
    """One benchmark run: its settings, the processes it started, its temporary folder, its results."""

    def __init__(self, settings, results, nofile, reference_root=None):
        self.settings = settings
        self.results = results
        self.nofile = nofile
        self.bin_dir = venv_bin()
        self.processes = Processes()
        self.reference_root = reference_root
        self.tmp = Path(tempfile.mkdtemp(prefix="tpot-bench-"))

    def raw_tcp(self):
        s = self.settings
        try:
            run_tcp(self.processes, self.tmp, self.bin_dir, s.repeat, s.tcp_bytes, s.tcp_connections,
                    self.results["tcp"], self.results["logs"])
        except BenchError as error:  # one line in the report; the other figures stand
            self.results["tcp"]["error"] = str(error)
            log(f"raw TCP part failed: {error}")

    def cluster(self, nginx, load):
        try:
            run_cluster(self.processes, self.tmp, self.bin_dir, nginx, load, self.settings, self.results["cluster"])
        except BenchError as error:  # one line in the report; the other figures stand
            self.results["cluster"]["error"] = str(error)
            log(f"cluster part failed: {error}")

    def inspector(self, nginx, load):
        try:
            run_inspector(self.processes, self.tmp, self.bin_dir, nginx, load, self.settings.repeat,
                          self.results["inspector"], self.results["logs"])
        except BenchError as error:  # one line in the report; the other figures stand
            self.results["inspector"]["error"] = str(error)
            log(f"inspector part failed: {error}")

    def reference(self, nginx, load):
        try:
            run_reference(self.processes, self.tmp, self.bin_dir, self.reference_root, nginx, load,
                          self.settings.repeat, self.results["reference"], self.results["logs"])
        except BenchError as error:  # one line in the report; the other figures stand
            self.results["reference"]["error"] = str(error)
            log(f"side-by-side part failed: {error}")

    def throughput(self, nginx, load):
        s, tmp = self.settings, self.tmp
        tunnel = Tunnel(self.processes, tmp, self.bin_dir, "throughput")
        tunnel.connect_client(nginx.port, s.request_log)
        log(f"tunnel {tunnel.name}.{DOMAIN}:{tunnel.port} -> nginx")
        try:
            run_throughput(load, nginx, tunnel, s.repeat, self.results["scenarios"])
        finally:
            self.results["logs"]["throughput"] = scan_logs(tunnel.log_processes())
            tunnel.stop()

    def http(self):
        """The HTTP figures, the raw TCP part (unless BENCH_TCP=0), then the memory measurements."""
        s, tmp, r = self.settings, self.tmp, self.results
        nginx = Nginx(self.processes, tmp, self.nofile)
        log(f"nginx on {HOST}:{nginx.port} (temporary files in {tmp})")
        load = Load(s.duration, nginx.bulk_file, s.bulk_count)
        if s.cluster == "only":
            self.cluster(nginx, load)
            return
        if s.inspector == "only":
            self.inspector(nginx, load)
            return
        if s.reference_only:
            self.reference(nginx, load)
            return
        self.throughput(nginx, load)
        if s.reference:
            self.reference(nginx, load)
        if s.inspector == "1":
            self.inspector(nginx, load)
        if s.cluster == "1":
            self.cluster(nginx, load)
        if s.tcp == "1":
            self.raw_tcp()
        memory_idle_tunnels(self.processes, tmp, self.bin_dir, s.tunnels, r["memory"], r["logs"])
        memory_idle_visitors(self.processes, tmp, self.bin_dir, nginx, s.visitors, r["memory"], r["logs"],
                             s.request_log)
        nginx_errors = tail(tmp / "nginx-error.log", 3)
        if nginx_errors not in ("", "(no log)"):
            r["nginx_error_log_tail"] = nginx_errors

    def run(self):
        try:
            if self.settings.tcp == "only":
                self.raw_tcp()
            else:
                self.http()
        finally:
            self.processes.stop_all()
            if self.settings.keep_tmp:
                log(f"logs and configuration kept in {self.tmp}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    # Ctrl-C and SIGTERM both unwind through the `finally` that stops every process started
    # here (even when SIGINT was ignored by whoever started us in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings = Settings.from_env()
    # Checked before anything starts: a missing reference costs no minutes.
    reference_root = check_reference(settings.reference) if settings.reference else None
    nofile = raise_nofile_limit()
    if nofile < settings.visitors * 2 + 1000:
        log(f"warning: open-file limit {nofile} is low for {settings.visitors} visitor connections")
    timestamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = new_results(settings, timestamp)
    Run(settings, results, nofile, reference_root).run()
    return finish(results, timestamp)
