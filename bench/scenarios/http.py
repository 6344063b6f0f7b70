"""HTTP through the tunnel against nginx directly: wrk and curl figures."""

import time

from bench.common import log
from bench.scenarios import Scenario, alternate, measure


def http_scenarios(load):
    """The HTTP scenarios; run(url_fn, headers) -> result dict."""
    n = load.bulk_count
    return [
        Scenario("keepalive", "keep-alive 6 B, wrk -t1 -c50",
                 lambda url, h: load.wrk(url("/small"), 1, 50, h), "req"),
        Scenario("keepalive_paths", "keep-alive 6 B, a new path per request, wrk -t1 -c50",
                 lambda url, h: load.wrk(url("/small"), 1, 50, h, script="paths.lua"), "req"),
        Scenario("keepalive_100k", "keep-alive 100 KB, wrk -t1 -c50",
                 lambda url, h: load.wrk(url("/100k"), 1, 50, h), "req"),
        Scenario("close", "new connection per request (Connection: close), wrk -t1 -c50",
                 lambda url, h: load.wrk(url("/small"), 1, 50, [*h, "Connection: close"]), "req"),
        Scenario("download", f"16 MB download, curl x{n}",
                 lambda url, h: load.curl([url("/16m")] * n, h, upload=False), "transfer"),
        Scenario("upload", f"16 MB upload (PUT), curl x{n}",
                 lambda url, h: load.curl([url(f"/upload/sink{i}") for i in range(n)], h, upload=True), "transfer"),
        Scenario("c500", "500 connections, wrk -t2 -c500",
                 lambda url, h: load.wrk(url("/small"), 2, 500, h), "req"),
    ]


def through(tunnel, nginx, sc):
    """One figure of `sc` through `tunnel`, with the CPU seconds of its ends and of nginx."""
    pids = {"server": [tunnel.server.pid], "client": [tunnel.client.pid], "nginx": nginx.pids()}
    return measure(lambda: sc.run(tunnel.url, [tunnel.host_header]), pids)


def run_throughput(load, nginx, tunnel, repeat, out):
    headers = [tunnel.host_header]

    def direct(sc):
        return measure(lambda: sc.run(nginx.url, []), {"nginx": nginx.pids()})

    def between():
        tunnel.check_alive()
        time.sleep(0.5)

    log("warm-up (1 s direct, 1 s through the tunnel)")
    load.wrk(nginx.url("/small"), 1, 50, duration=1)
    load.wrk(tunnel.url("/small"), 1, 50, headers, duration=1)
    tunnel.check_alive()
    alternate(http_scenarios(load), repeat, (("direct", direct), ("tunnel", lambda sc: through(tunnel, nginx, sc))),
              out, between)
