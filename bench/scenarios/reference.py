"""Side by side with the reference (BENCH_REFERENCE): our server and client (--quiet
--no-inspect, then with the inspector on) and the reference Node.js pair, exposing the
same nginx, measured in alternation with the same load: keep-alive requests (the same
one, and a new path each), new-connection requests, 16 MB down and up; CPU seconds of
each server and client.

The reference client is started afresh (and warmed up for 1 s) before each of its
figures: it exits at its 32,768th visitor connection (bench/reference.py).
"""

import time

from bench.common import log
from bench.logscan import scan_logs
from bench.reference import ReferenceTunnel
from bench.scenarios import alternate
from bench.scenarios.http import http_scenarios, through
from bench.services import Tunnel

KEYS = ("keepalive", "keepalive_paths", "close", "download", "upload")
SIDES = ("ours", "ours_inspector", "reference")


def warm_up(load, tunnel):
    load.wrk(tunnel.url("/small"), 1, 50, [tunnel.host_header], duration=1)


def run_reference(processes, tmp, bin_dir, root, nginx, load, repeat, out, logs):
    ours = Tunnel(processes, tmp, bin_dir, "reference-ours")
    inspected = Tunnel(processes, tmp, bin_dir, "reference-ours-inspector")
    theirs = ReferenceTunnel(processes, tmp, root, "reference-theirs")
    ends = (("ours", ours), ("ours_inspector", inspected), ("reference", theirs))
    try:
        ours.connect_client(nginx.port, name="ours")
        inspected.connect_client(nginx.port, name="oursinsp", inspect=True)
        for tunnel in (ours, inspected):
            warm_up(load, tunnel)

        def fresh_reference(sc):
            theirs.connect_client(nginx.port)
            warm_up(load, theirs)
            figures = through(theirs, nginx, sc)
            figures["client_exit"] = theirs.client.poll()  # None: it was still running
            return figures

        def between():
            for _, tunnel in ends:
                tunnel.check_alive()
            time.sleep(0.5)

        log(f"side by side with the reference in {root}")
        scenarios = [sc for sc in http_scenarios(load) if sc.key in KEYS]
        sides = (("ours", lambda sc: through(ours, nginx, sc)),
                 ("ours_inspector", lambda sc: through(inspected, nginx, sc)), ("reference", fresh_reference))
        out["scenarios"] = {}
        alternate(scenarios, repeat, sides, out["scenarios"], between)
        out["reference_clients_started"] = theirs.started
    finally:
        for side, tunnel in ends[:2]:  # the reference's debug lines are not ours to judge
            logs[f"reference-{side}"] = scan_logs(tunnel.log_processes())
        for _, tunnel in ends:
            tunnel.stop()
