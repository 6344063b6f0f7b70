"""The inspector's cost: keep-alive through a client with it on against one with it off,
and the client's memory holding its 500 exchanges with 1 MiB bodies, then after newer
small exchanges have evicted them.

Two tunnels on one server (`insp-off` with --no-inspect, `insp-on` with the inspector on a
free port), measured in alternation like the other scenarios; CPU is the client's.
"""

import json
import time
import urllib.request

from bench.common import log
from bench.logscan import scan_logs
from bench.procfs import cpu_seconds, rss_kb, settle_rss
from bench.services import Tunnel

EXCHANGES = 500  # what the inspector keeps by default
BIG = "/1m"


def run_inspector(processes, tmp, bin_dir, nginx, load, repeat, out, logs):
    off = Tunnel(processes, tmp, bin_dir, "inspector-off")
    on = Tunnel(processes, tmp, bin_dir, "inspector-on")
    try:
        off.connect_client(nginx.port, name="inspoff")
        on.connect_client(nginx.port, name="inspon", inspect=True)
        for tunnel in (off, on):
            load.wrk(tunnel.url("/small"), 1, 50, [tunnel.host_header], duration=1)  # warm-up
        out["keepalive"] = {"off": [], "on": []}
        for rep in range(repeat):
            for side, tunnel in (("off", off), ("on", on)):
                log(f"round {rep + 1}/{repeat}: inspector {side}: keep-alive 6 B")
                out["keepalive"][side].append(_keepalive(load, tunnel))
        out["memory"] = _memory(load, on)
    finally:
        logs["inspector"] = scan_logs([(f"{what} ({side})", proc) for side, tunnel in (("off", off), ("on", on))
                                       for what, proc in tunnel.log_processes()])
        for tunnel in (off, on):
            tunnel.stop()


def _keepalive(load, tunnel):
    before = cpu_seconds(tunnel.client.pid)
    figures = load.wrk(tunnel.url("/small"), 1, 50, [tunnel.host_header])
    spent = cpu_seconds(tunnel.client.pid) - before
    figures["client_us_per_req"] = spent / figures["requests"] * 1e6 if figures["requests"] else None
    return figures


def _memory(load, tunnel):
    """Client RSS: before, with EXCHANGES big exchanges kept, after small ones evicted them."""
    pid = tunnel.client.pid
    load.curl([tunnel.url("/small")] * 50, [tunnel.host_header], upload=False)
    before = settle_rss(pid)
    started = time.monotonic()
    load.curl([tunnel.url(BIG)] * EXCHANGES, [tunnel.host_header], upload=False)
    big = _kept(tunnel, BIG)
    log(f"inspector memory: {big} x 1 MiB kept in {time.monotonic() - started:.1f} s")
    peak = settle_rss(pid)
    load.curl([tunnel.url("/small")] * EXCHANGES, [tunnel.host_header], upload=False)
    evicted = settle_rss(pid, 3.0)
    return {"rss_kb_before": before, "rss_kb_with_big": peak, "rss_kb_after_eviction": evicted,
            "big_transfers": big, "small_transfers": _kept(tunnel, "/small"), "big_left": _kept(tunnel, BIG),
            "rss_kb_now": rss_kb(pid)}


def _kept(tunnel, path):
    """How many exchanges for `path` the inspector holds, as its API says."""
    url = f"{tunnel.inspector_url}/api/requests?limit={EXCHANGES}&path={path}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return sum(1 for summary in json.load(answer)["requests"] if summary["path"] == path)
