"""The cluster part: a real redis-server, and our server as nodes of a cluster.

- Nodes: two nodes (node A holds the tunnel to nginx); the same wrk load sent at node A
  ("local": visitors land on the tunnel's node) and at node B ("cross": node B finds the
  tunnel in Redis and hands every visitor connection to node A's peer port), alternately;
  CPU seconds of every process, and the Redis commands each figure cost.
- Workers: one server with --workers 1 against one with --workers 2 (each its own
  cluster), the same load; the server's CPU is summed over its workers.
- Registry: BENCH_REGISTRY_NAMES names claimed in one Redis, then looked up from another
  node (bench/registry.py, a process of its own).
"""

import json
import subprocess
import sys
import time

from bench.common import DOMAIN, HOST, REPO, BenchError, log
from bench.scenarios import Scenario, alternate, measure
from bench.services import Tunnel
from tests.support.processes import pick_free_port, pick_free_ports_in_a_row
from tests.support.redis import RedisServer

SECRET = "bench-cluster-secret-0123456789abcdefgh"
REGISTRY_SECONDS = 5
REGISTRY_CONCURRENCY = 50


def cluster_scenarios(load):
    return [
        Scenario("cluster_keepalive", "keep-alive 6 B, wrk -t1 -c50",
                 lambda url, h: load.wrk(url("/small"), 1, 50, h), "req"),
        Scenario("cluster_close", "new connection per request (Connection: close), wrk -t1 -c50",
                 lambda url, h: load.wrk(url("/small"), 1, 50, [*h, "Connection: close"]), "req"),
    ]


def node_args(redis, db, node_id, workers=1):
    peer = pick_free_ports_in_a_row(workers) if workers > 1 else pick_free_port()
    return ["--redis", f"redis://{HOST}:{redis.port}/{db}", "--cluster-secret", SECRET, "--node-id", node_id,
            "--peer-listen", f"tcp:{peer}:interface={HOST}", "--advertise", f"{HOST}:{peer}",
            "--workers", str(workers)]


def redis_round_trips(redis):
    """Scripts Redis has run since it started (INFO commandstats: EVAL and EVALSHA calls):
    the nodes' round trips, since every one is a script (the commands a script runs inside
    count separately there)."""
    out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(redis.port), "INFO", "commandstats"],
                         capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise BenchError(f"redis-cli INFO commandstats failed: {(out.stderr or out.stdout)[:200]}")
    calls = 0
    for line in out.stdout.splitlines():
        if line.startswith(("cmdstat_eval:", "cmdstat_evalsha:")):
            calls += int(line.split("calls=")[1].split(",")[0])
    return calls


def measure_with_redis(fn, pids, redis):
    """measure(), with the Redis round trips made meanwhile (heartbeats: a few per second)."""
    before = redis_round_trips(redis)
    result = measure(fn, pids)
    result["redis_round_trips"] = redis_round_trips(redis) - before
    return result


def wait_for_nodes(tunnel, count, timeout=20):
    """Until /api/status of `tunnel`'s server says `count` nodes are alive."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(tunnel.url("/api/status"), headers={"Host": DOMAIN})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                if json.loads(answer.read())["nodes"] >= count:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchError(f"the cluster did not reach {count} nodes in {timeout} s")


def compare(load, redis, repeat, out, sides, between):
    """`alternate` over the cluster scenarios; sides: (side, tunnel to send the load at,
    {name: pids}) — the Host header is always the tunnel's own."""
    def on(tunnel, pids, host):
        return lambda sc: measure_with_redis(lambda: sc.run(tunnel.url, [host]), pids, redis)

    runs = [(side, on(tunnel, pids, host)) for side, tunnel, pids, host in sides]
    for _, tunnel, _, host in sides:
        load.wrk(tunnel.url("/small"), 1, 50, [host], duration=1)  # warm-up
    alternate(cluster_scenarios(load), repeat, runs, out, between)


def run_nodes(processes, tmp, bin_dir, nginx, load, redis, repeat, out):
    a = Tunnel(processes, tmp, bin_dir, "node-a", node_args(redis, 1, "bench-a"))
    b = Tunnel(processes, tmp, bin_dir, "node-b", node_args(redis, 1, "bench-b"))
    wait_for_nodes(b, 2)
    a.connect_client(nginx.port)
    log(f"cluster: tunnel on node A ({a.port}), node B on {b.port}")
    pids = {"node_a": a.server_pids(), "node_b": b.server_pids(), "client": [a.client.pid], "nginx": nginx.pids()}
    try:
        compare(load, redis, repeat, out, (("local", a, pids, a.host_header), ("cross", b, pids, a.host_header)),
                lambda: (a.check_alive(), b.check_alive(), time.sleep(0.5)))
    finally:
        a.stop()
        b.stop()


def run_workers(processes, tmp, bin_dir, nginx, load, redis, repeat, out):
    servers = {}
    for count in (1, 2):
        server = Tunnel(processes, tmp, bin_dir, f"workers-{count}", node_args(redis, 1 + count, f"bench-w{count}", count))
        wait_for_nodes(server, count)
        server.connect_client(nginx.port)
        servers[count] = server
    sides = [(f"workers{count}", server,
              {"server": server.server_pids(), "client": [server.client.pid], "nginx": nginx.pids()}, server.host_header)
             for count, server in servers.items()]
    log(f"workers: --workers 1 on {servers[1].port}, --workers 2 on {servers[2].port}")
    try:
        compare(load, redis, repeat, out, sides,
                lambda: ([server.check_alive() for server in servers.values()], time.sleep(0.5)))
    finally:
        for server in servers.values():
            server.stop()


def run_registry(redis, names):
    log(f"registry: {names} names in one Redis, then lookups")
    args = [sys.executable, "-m", "bench.registry", f"redis://{HOST}:{redis.port}/9", str(redis.proc.pid), str(names),
            str(REGISTRY_SECONDS), str(REGISTRY_CONCURRENCY)]
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    if out.returncode != 0 or not out.stdout.strip():
        raise BenchError(f"the registry measurement failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cluster(processes, tmp, bin_dir, nginx, load, settings, out):
    """Every part above, into `out` (results["cluster"]); Redis stopped at the end."""
    directory = tmp / "redis"
    directory.mkdir()
    redis = RedisServer(directory).start()
    try:
        run_nodes(processes, tmp, bin_dir, nginx, load, redis, settings.repeat, out["nodes"])
        run_workers(processes, tmp, bin_dir, nginx, load, redis, settings.repeat, out["workers"])
        out["registry"] = run_registry(redis, settings.registry_names)
    finally:
        redis.stop()
