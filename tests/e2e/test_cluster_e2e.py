"""A cluster end to end: a real redis-server, three twistd nodes and HAProxy round-robin in
front, with real clients and visitors; every byte checked.

HAProxy sends a PROXY v2 header, so every node knows the visitor, who connects from
127.0.0.2: X-Forwarded-For at the target says 127.0.0.2 whether the visitor landed on the
tunnel's node or on another one (about two thirds of them, forwarded over the peer port).
"""

import hashlib
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.cluster import VISITOR, Cluster, Node, create, visit
from tests.e2e.conftest import (
    DOMAIN,
    HOST,
    IO_TIMEOUT,
    clean_env,
    expected_bytes,
    pick_free_port,
    raw,
    spread,
    start_connected,
    status_of,
    stream_sha256,
)
from tests.support.memory import upgrade_request
from tests.support.processes import default_sigint
from tpot.server.cluster import hop


@pytest.fixture
def cluster(tmp_path_factory):
    made = Cluster(tmp_path_factory)
    yield made
    made.stop()


def one_visitor(front, i):
    """What visitor `i` checks: who the target saw, and a 5 MB download or 3 MB upload for some."""
    status, body = visit(front, "demo", path="/xff")
    assert (status, body) == (200, VISITOR.encode()), (i, status, body[:200])
    if i % 10 == 0:
        status, body = visit(front, "demo", path=f"/bytes/{5_000_000}?seed={i}")
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(expected_bytes(5_000_000, i)).digest()
    elif i % 10 == 5:
        upload = expected_bytes(3_000_000, i)
        status, body = visit(front, "demo", "POST", "/sha256", upload)
        assert (status, body) == (200, f"{hashlib.sha256(upload).hexdigest()} 3000000".encode())
    return i


def test_visitors_through_haproxy_reach_the_tunnel_from_every_node(cluster, target):
    cluster.client(target, "demo")
    with ThreadPoolExecutor(12) as pool:
        done = list(pool.map(lambda i: one_visitor(cluster.front, i), range(300)))
    assert done == list(range(300))
    holder = cluster.holder()
    others = [node for node in cluster.nodes if node is not holder]
    forwarded_out = [node.metric('tpot_forwarded_conversations_total{direction="out"}') for node in others]
    forwarded_in = holder.metric('tpot_forwarded_conversations_total{direction="in"}')
    # Round-robin: every visitor request is a new connection, two of three land elsewhere.
    assert all(count >= 100 for count in forwarded_out), forwarded_out
    assert forwarded_in == sum(forwarded_out)
    # Each node sent its ~100 visitor connections over one link to the tunnel's node.
    links_out = [node.metric('tpot_peer_links_total{direction="out"}') for node in others]
    assert links_out == [1, 1] and holder.metric('tpot_peer_links_total{direction="in"}') == 2
    assert all(node.status()["cluster_tunnels"] == 1 for node in cluster.nodes)


def test_a_name_held_on_one_node_is_taken_on_every_other(cluster, target):
    cluster.client(target, "demo")
    holder = cluster.holder()
    for node in cluster.nodes:
        answer = raw(node.port, upgrade_request("/create-tpot?subdomain=demo", host=f"{DOMAIN}:{node.port}"))
        assert status_of(answer) == 409, (node.node_id, answer[:200])
    assert holder.status()["tunnels"] == 1


def test_the_peer_port_refuses_visitors_and_wrong_secrets(cluster, target):
    node = cluster.nodes[0]
    # Refused with a reset, which may discard the challenge already sent: never an HTTP answer.
    answer = raw(node.peer_port, b"GET / HTTP/1.1\r\nHost: demo.localhost\r\n\r\n", tolerate_reset=True)
    assert b"HTTP" not in answer
    with socket.create_connection((HOST, node.peer_port), timeout=IO_TIMEOUT) as sock:
        nonce = hop.read_challenge(sock.recv(100).rstrip(b"\r\n"))
        wrong = hop.hop_line("w" * 40, nonce, hop.Hop("intruder", VISITOR, 1, hop.new_nonce()))
        sock.sendall(wrong + b"GET / HTTP/1.1\r\nHost: demo.localhost\r\n\r\n")
        rest = b""
        try:
            while chunk := sock.recv(4096):
                rest += chunk
        except ConnectionResetError:
            pass
    assert rest == b""
    deadline = time.monotonic() + 5
    while node.log().count("refused a connection to the peer port") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "wrong proof of the cluster secret from 'intruder'" in node.log()
    assert node.log().count("refused a connection to the peer port") == 2


def test_a_killed_nodes_tunnel_comes_back_on_another_within_15_s(cluster, target):
    client = cluster.client(target, "demo")
    holder = cluster.holder()
    holder.proc.send_signal(signal.SIGKILL)
    started = time.monotonic()
    line = None
    while time.monotonic() - started < 15:
        line = client.next_line(15 - (time.monotonic() - started))
        if line is None or line.startswith("tpot reconnected"):
            break
    assert line == f"tpot reconnected: http://demo.{DOMAIN}:{cluster.front}", (client.describe(), cluster.logs())
    assert time.monotonic() - started < 15
    for i in range(20):
        assert visit(cluster.front, "demo", path="/xff") == (200, VISITOR.encode()), i


def test_a_node_stopped_during_a_download_through_it_finishes_it(cluster, target):
    cluster.client(target, "demo")
    holder = cluster.holder()
    through = next(node for node in cluster.nodes if node is not holder)
    size = 20_000_000
    with socket.create_connection((HOST, through.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(f"GET /stream/{size}?seed=3 HTTP/1.1\r\nHost: demo.{DOMAIN}\r\nConnection: close\r\n\r\n".encode())
        first = sock.recv(65536)
        through.proc.send_signal(signal.SIGTERM)  # drains: the forwarded download is waited for
        time.sleep(0.5)
        answer = first
        while chunk := sock.recv(1 << 20):
            answer += chunk
            time.sleep(0.001)  # a visitor that reads at its own pace
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(head) == 200
    assert (len(body), hashlib.sha256(body).hexdigest()) == (size, stream_sha256(size, 3))
    assert through.proc.wait(15) == 0


def test_with_redis_away_local_visitors_keep_working_and_new_tunnels_get_503(cluster, target):
    cluster.client(target, "demo")
    holder = cluster.holder()
    other = next(node for node in cluster.nodes if node is not holder)
    cluster.redis.stop()
    assert visit(holder.port, "demo", path="/xff") == (200, VISITOR.encode())
    assert visit(other.port, "demo", path="/xff")[0] == 503  # it cannot know where demo is
    started = time.monotonic()
    answer = raw(other.port, upgrade_request("/create-tpot?subdomain=fresh", host=f"{DOMAIN}:{other.port}"))
    assert status_of(answer) == 503 and b"registry is unavailable" in answer, answer
    assert time.monotonic() - started < 1
    deadline = time.monotonic() + 5
    while holder.metric("tpot_registry_up") != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert holder.metric("tpot_registry_up") == 0
    cluster.redis.start()  # a new, empty Redis on the same port: what it held is lost
    started = time.monotonic()
    while time.monotonic() - started < 10:
        answer = create(other.port, "fresh")
        if status_of(answer) == 101:
            break
        time.sleep(0.5)
    assert status_of(answer) == 101, (answer[:300], cluster.logs())
    # The tunnel's node wrote it back: visitors on every node reach it again.
    deadline = time.monotonic() + 10
    while visit(other.port, "demo", path="/xff")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert visit(other.port, "demo", path="/xff") == (200, VISITOR.encode())
    assert holder.log().count("is unreachable") == 1 and holder.log().count("is back") == 1


def test_a_pool_with_members_on_two_nodes_shares_visitors_from_every_node(cluster, two_targets):
    pool = ["--pool", "cluster-e2e-pool-secret-0123456789abcdef"]
    members = []
    for node, target in zip(cluster.nodes, two_targets):  # one member on node 0, one on node 1
        member = start_connected(["http", target.address, "-t", f"http://{DOMAIN}:{node.port}", "-s", "shared", *pool],
                                 cluster.tmp.mktemp("client"))
        cluster.clients.append(member)
        members.append(member)
    assert [node.status()["tunnels"] for node in cluster.nodes] == [1, 1, 0]
    counts = spread(cluster.front, "shared", two_targets, 200, source=VISITOR)
    assert sum(counts) == 200 and min(counts) >= 60, counts
    # Non-members are refused on every node, whichever holds members.
    for node in cluster.nodes:
        assert status_of(create(node.port, "shared")) == 409
    members[0].stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sum(node.status()["tunnels"] for node in cluster.nodes) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spread(cluster.front, "shared", two_targets, 50, source=VISITOR) == [0, 50]


def test_a_node_whose_redis_is_unreachable_stops_with_one_sentence(tmp_path):
    node = Node(tmp_path, f"redis://127.0.0.1:{pick_free_port()}/0", 9)
    with open(node.log_path, "wb") as log:
        proc = subprocess.run(node.args(), cwd=tmp_path, env=clean_env(tmp_path), stdout=log,
                              stderr=subprocess.STDOUT, timeout=30, preexec_fn=default_sigint)
    assert proc.returncode == 1
    assert "cannot use Redis at redis://127.0.0.1:" in node.log()
    assert "Connection refused; check --redis (or REDIS_URL) and that Redis runs there." in node.log()
    assert "Traceback" not in node.log()
