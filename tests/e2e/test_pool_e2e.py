"""Pools end to end on one server: real clients started with the same --pool secret share a
subdomain, visitors are spread over them, and one killed leaves the others serving."""

import json
import signal
import time

from tests.e2e.conftest import DOMAIN, raw, run_tpot, spread

POOL = "e2e-pool-secret-0123456789abcdefghijk"


def tunnels_open(port):
    answer = raw(port, f"GET /api/status HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
    return json.loads(answer.partition(b"\r\n\r\n")[2])["tunnels"]


def wait_for_tunnels(count, ports, timeout=10):
    deadline = time.monotonic() + timeout
    while sum(tunnels_open(port) for port in ports) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return sum(tunnels_open(port) for port in ports)


def test_a_pool_of_two_clients_shares_visitors_and_outlives_one_killed(server, two_targets, tpot_client):
    members = [tpot_client(server, target.address, name="shared", extra=["--pool", POOL]) for target in two_targets]
    assert all(member.url == f"http://shared.{DOMAIN}:{server.port}" for member in members)
    counts = spread(server.port, "shared", two_targets, 200)
    assert sum(counts) == 200 and min(counts) >= 60, counts
    members[0].stop(signal.SIGKILL)
    assert wait_for_tunnels(1, [server.port]) == 1
    assert spread(server.port, "shared", two_targets, 50) == [0, 50]


def test_a_client_without_the_pool_secret_is_refused_and_the_pool_unaffected(server, two_targets, tpot_client,
                                                                            tmp_path):
    first, second = two_targets
    tpot_client(server, first.address, name="shared", extra=["--pool", POOL])
    for extra in ([], ["--pool", POOL.upper()]):
        result = run_tpot(["http", second.address, "-t", server.url, "-s", "shared", *extra], tmp_path)
        assert result.returncode == 1 and "in use" in result.stderr, result.stderr
    assert spread(server.port, "shared", two_targets, 10) == [10, 0]


def test_the_last_member_leaving_frees_the_name(server, two_targets, tpot_client, tmp_path):
    member = tpot_client(server, two_targets[0].address, name="shared", extra=["--pool", POOL])
    member.stop()  # SIGTERM: closes its tunnel normally
    assert wait_for_tunnels(0, [server.port]) == 0
    tpot_client(server, two_targets[1].address, name="shared")
    assert spread(server.port, "shared", two_targets, 5) == [0, 5]
