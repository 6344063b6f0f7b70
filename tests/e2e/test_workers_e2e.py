"""`--workers 2` end to end: two twistd processes on one listening socket, one real Redis,
a real client and visitors; both workers take visitors, and either serves the tunnel."""

import hashlib
import http.client
import json
import os
import re
import signal
import time

import pytest

from tests.e2e.conftest import DOMAIN, HOST, IO_TIMEOUT, Server, expected_bytes, raw, spread, start_client
from tests.support.processes import pick_free_ports_in_a_row
from tests.support.redis import RedisServer

SECRET = "workers-e2e-secret-0123456789abcdefghij"


class Workers(Server):
    def __init__(self, workdir, redis_url):
        super().__init__(workdir)
        self.peer_port = pick_free_ports_in_a_row(2)
        self.extra_args = [
            "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--workers", "2",
            "--redis", redis_url, "--cluster-secret", SECRET, "--node-id", "box", "--node-ttl", "3",
            "--peer-listen", f"tcp:{self.peer_port}:interface=127.0.0.1", "--advertise", f"{HOST}:{self.peer_port}",
        ]

    def status(self):
        """/api/status of whichever worker takes this connection."""
        answer = raw(self.port, f"GET /api/status HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
        return json.loads(answer.partition(b"\r\n\r\n")[2])

    def statuses(self, count=40):
        """The latest /api/status of each worker, by node id, over `count` new connections."""
        return {report["node"]: report for report in (self.status() for _ in range(count))}

    def wait_for(self, check, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reports = self.statuses()
            if check(reports):
                return reports
            time.sleep(0.2)
        raise AssertionError(f"{reports}\n{self.log()}")

    def worker_pid(self, index):
        return int(re.findall(rf"worker {index} started \(pid ([0-9]+)\)", self.log())[-1])


def keep_alive_requests(port, seed):
    connection = http.client.HTTPConnection(HOST, port, timeout=IO_TIMEOUT)
    headers = {"Host": f"demo.{DOMAIN}:{port}"}
    try:
        for n in range(3):
            connection.request("GET", f"/bytes/300000?seed={seed * 10 + n}", headers=headers)
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, expected_bytes(300_000, seed * 10 + n))
        upload = expected_bytes(2_000_000, seed)
        connection.request("POST", "/sha256", body=upload, headers=headers)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, f"{hashlib.sha256(upload).hexdigest()} 2000000".encode())
    finally:
        connection.close()


@pytest.fixture
def workers(tmp_path_factory):
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    server = Workers(tmp_path_factory.mktemp("workers"), redis.url)
    server.start()
    yield server
    server.stop()
    redis.stop()


def both_alive(reports):
    return set(reports) == {"box-w0", "box-w1"} and all(report["nodes"] == 2 for report in reports.values())


def test_both_workers_take_visitors_and_either_serves_the_tunnel(workers, target, tmp_path):
    workers.wait_for(both_alive)
    client = start_client(workers, target.address, tmp_path, name="demo")
    try:
        assert spread(workers.port, "demo", [target], 200) == [200]
        for i in range(10):  # keep-alive connections, on either worker, both directions checked
            keep_alive_requests(workers.port, i)
        reports = workers.wait_for(both_alive)
        holder = next(node for node, report in reports.items() if report["tunnels"] == 1)
        other = next(node for node in reports if node != holder)
        # The visitors that the other worker accepted, it handed whole to the holder (their
        # file descriptors, tpot.server.cluster.siblings), not through the peer port.
        assert reports[other]["forwarded"]["out"] > 20, reports
        assert reports[holder]["forwarded"]["in"] == reports[other]["forwarded"]["out"], reports
        assert reports[other]["forwarded"]["workers_out"] == reports[other]["forwarded"]["out"], reports
        assert "cannot reach worker" not in workers.log()
        for index in (0, 1):
            assert (f"serving {DOMAIN} on port {workers.port} on {HOST} (IPv4), auth off, worker {index} of 2,"
                    f" node box-w{index} of the cluster in ") in workers.log()
            assert f"peer port {workers.peer_port + index} on {HOST} (IPv4) reached at" in workers.log()
    finally:
        client.stop()


def test_a_worker_that_dies_is_started_again_and_all_stop_together(workers):
    workers.wait_for(both_alive)
    first = workers.worker_pid(1)
    os.kill(first, signal.SIGKILL)
    workers.wait_for(lambda reports: both_alive(reports) and workers.worker_pid(1) != first)
    assert "worker 1 exited (signal 9); starting it again in 1 s" in workers.log()
    second = workers.worker_pid(1)
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(20) == 0
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{second}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{second}"), "worker 1 outlived worker 0"


def test_workers_whose_first_is_killed_stop_by_themselves(workers):
    workers.wait_for(both_alive)
    worker = workers.worker_pid(1)
    with open(f"/proc/{worker}/cmdline", "rb") as cmdline:
        args = cmdline.read().decode().split("\0")
    directory = args[args.index("--worker-dir") + 1]
    workers.proc.send_signal(signal.SIGKILL)
    workers.proc.wait(5)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{worker}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{worker}"), "worker 1 kept running without worker 0"
    assert "worker 0 (pid" in workers.log() and "is gone; this worker stops" in workers.log()
    assert not os.path.exists(directory), "the workers' directory outlived them"


def test_workers_without_redis_stop_with_one_sentence(server_factory, tmp_path):
    with pytest.raises(RuntimeError) as error:
        server_factory("--workers", "2")
    assert "--workers 2 needs --redis URL (or REDIS_URL)" in str(error.value)
    assert "Traceback" not in str(error.value)
