"""A/B of our pair's CPU per request: `python -m bench.ab [DIR ...]`.

Each DIR is a checkout of this project (default: this one) whose tpot package the server
and client import (PYTHONPATH, ahead of the virtualenv's editable install).  Every DIR gets
its own server and `tpot http --quiet --no-inspect` client on one nginx; then
BENCH_REPEAT rounds (3) of keep-alive (the same request, and a new path each) and
new-connection requests (wrk -t1 -c50,
BENCH_DURATION seconds, 5) through each in turn print each end's CPU microseconds per
request and req/s, and the medians at the end.  Loopback only; nothing asserted.
"""

import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import log
from bench.load import Load
from bench.processes import Processes, venv_bin
from bench.scenarios.http import http_scenarios, through
from bench.services import Nginx, Tunnel
from bench.settings import env_int
from tests.support.processes import raise_nofile_limit


KEYS = ("keepalive", "keepalive_paths", "close")


def scenarios(load):
    return [sc for sc in http_scenarios(load) if sc.key in KEYS]


def per_request(figures):
    n = figures["requests"] or 1
    return {end: figures["cpu_s"][end] / n * 1e6 for end in ("server", "client")}


def main():
    dirs = [str(Path(d).resolve()) for d in sys.argv[1:]] or [str(Path.cwd())]
    duration, repeat = env_int("BENCH_DURATION", 5, 1, 600), env_int("BENCH_REPEAT", 3, 1, 20)
    processes, tmp = Processes(), Path(tempfile.mkdtemp(prefix="tpot-ab-"))
    results = {}
    try:
        nginx = Nginx(processes, tmp, raise_nofile_limit())
        load = Load(duration, nginx.bulk_file, 1)
        tunnels = []
        for i, d in enumerate(dirs):
            os.environ["PYTHONPATH"] = d
            tunnel = Tunnel(processes, tmp, venv_bin(), f"ab{i}")
            tunnel.connect_client(nginx.port, name=f"ab{i}")
            load.wrk(tunnel.url("/small"), 1, 50, [tunnel.host_header], duration=1)
            tunnels.append(tunnel)
        os.environ.pop("PYTHONPATH", None)
        for rep in range(repeat):  # bounded: BENCH_REPEAT rounds
            for sc in scenarios(load):
                for d, tunnel in zip(dirs, tunnels):
                    figures = through(tunnel, nginx, sc)
                    cpu = per_request(figures)
                    results.setdefault((sc.key, d), []).append((cpu["server"], cpu["client"], figures["req_s"]))
                    log(f"round {rep + 1} {sc.key:15} {d}: server {cpu['server']:.1f} µs, "
                        f"client {cpu['client']:.1f} µs, {figures['req_s']:.0f} req/s, errors {figures['errors']}")
        for (key, d), rows in results.items():
            med = [statistics.median(col) for col in zip(*rows)]
            print(f"{key:10} {d}: server {med[0]:.1f} µs/req, client {med[1]:.1f} µs/req, {med[2]:.0f} req/s")
    finally:
        processes.stop_all()


if __name__ == "__main__":
    main()
