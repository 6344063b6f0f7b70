"""A cluster end to end: a real redis-server, three twistd nodes and HAProxy round-robin in
front, with real clients and visitors; every byte checked.

HAProxy sends a PROXY v2 header, so every node knows the visitor, who connects from
127.0.0.2: X-Forwarded-For at the target says 127.0.0.2 whether the visitor landed on the
tunnel's node or on another one (about two thirds of them, forwarded over the peer port).
"""

import hashlib
import http.client
import json
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import (
    DOMAIN,
    HOST,
    IO_TIMEOUT,
    Server,
    Target,
    clean_env,
    expected_bytes,
    pick_free_port,
    raw,
    serving,
    spread,
    start_connected,
    status_of,
    stop_process,
    stream_sha256,
    wait_for_port,
)
from tests.support.memory import upgrade_request
from tests.support.processes import default_sigint
from tests.support.redis import RedisServer
from tests.support.tools import require_tool
from tpot.server.cluster import hop

SECRET = "cluster-e2e-secret-0123456789abcdefghij"
NODE_TTL = 3
VISITOR = "127.0.0.2"

HAPROXY = """global
    maxconn 4000
defaults
    mode tcp
    balance roundrobin
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend visitors
    bind 127.0.0.1:{front}
    default_backend nodes
backend nodes
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host {domain}
{servers}
"""


class Node(Server):
    """A twistd node listening for HAProxy (PROXY headers) and, for direct requests, on `port`."""

    def __init__(self, workdir, redis_url, index, secret=SECRET):
        super().__init__(workdir)
        self.peer_port = pick_free_port()
        self.node_id = f"node-{index}"
        self.proxied = pick_free_port()
        self.extra_args = [
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--listen", f"haproxy:tcp:{self.proxied}:interface=127.0.0.1",
            "--redis", redis_url, "--cluster-secret", secret, "--node-id", self.node_id,
            "--peer-listen", f"tcp:{self.peer_port}:interface=127.0.0.1", "--advertise", f"{HOST}:{self.peer_port}",
            "--node-ttl", str(NODE_TTL),
        ]

    def status(self):
        answer = raw(self.port, f"GET /api/status HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
        return json.loads(answer.partition(b"\r\n\r\n")[2])

    def metric(self, line_start):
        answer = raw(self.port, f"GET /metrics HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode()).decode()
        return sum(float(line.split()[-1]) for line in answer.splitlines() if line.startswith(line_start))


class Cluster:
    def __init__(self, tmp_path_factory, nodes=3):
        self.tmp = tmp_path_factory
        self.redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
        self.nodes = []
        for index in range(nodes):
            node = Node(tmp_path_factory.mktemp(f"node{index}"), self.redis.url, index)
            node.start()
            self.nodes.append(node)
        self.front = pick_free_port()
        self.haproxy = self._start_haproxy()
        self.clients = []
        self._wait_for_nodes(nodes)

    def _start_haproxy(self):
        binary = require_tool("haproxy", "haproxy")
        servers = "\n".join(f"    server {node.node_id} {HOST}:{node.proxied} send-proxy-v2 check port {node.port}"
                            " inter 500ms fall 2 rise 1" for node in self.nodes)
        config = self.tmp.mktemp("haproxy") / "haproxy.cfg"
        config.write_text(HAPROXY.format(front=self.front, domain=DOMAIN, servers=servers), encoding="utf-8")
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=default_sigint)
        assert wait_for_port(self.front, proc), proc.stderr.read() if proc.poll() is not None else "no haproxy"
        return proc

    def _wait_for_nodes(self, count):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(node.status()["nodes"] == count for node in self.nodes):
                return
            time.sleep(0.2)
        raise AssertionError([node.status() for node in self.nodes])

    @property
    def url(self):
        return f"http://{DOMAIN}:{self.front}"

    def client(self, target, name, extra=()):
        client = start_connected(["http", target.address, "-t", self.url, "-s", name, *extra],
                                 self.tmp.mktemp("client"))
        self.clients.append(client)
        return client

    def holder(self):
        """The node the tunnel is open on."""
        [node] = [node for node in self.nodes if node.proc.poll() is None and node.status()["tunnels"]]
        return node

    def stop(self):
        for client in self.clients:
            client.stop()
        stop_process(self.haproxy)
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    def logs(self):
        return "\n".join(f"--- {node.node_id}\n{node.log()}" for node in self.nodes)


@pytest.fixture
def cluster(tmp_path_factory):
    made = Cluster(tmp_path_factory)
    yield made
    made.stop()


def visit(port, name, method="GET", path="/", body=None, timeout=IO_TIMEOUT):
    """(status, body) of one request from 127.0.0.2 on a new connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(VISITOR, 0))
    try:
        connection.request(method, path, body=body, headers={"Host": f"{name}.{DOMAIN}:{port}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def create(port, name):
    """The head of the answer to a /create-tpot for `name` (the connection closed after it)."""
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(upgrade_request(f"/create-tpot?subdomain={name}", host=f"{DOMAIN}:{port}"))
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return answer


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
