"""A cluster of real processes on loopback for the e2e tests: a redis-server, twistd nodes
and HAProxy round-robin in front (PROXY v2), and the visitor that reaches it.

HAProxy sends a PROXY v2 header, so every node knows the visitor, who connects from
127.0.0.2: X-Forwarded-For at the target says 127.0.0.2 whether the visitor landed on the
tunnel's node or on another one (forwarded over the peer port).
"""

import http.client
import json
import socket
import subprocess
import time

from tests.e2e.conftest import (
    DOMAIN,
    HOST,
    IO_TIMEOUT,
    Server,
    exchange,
    pick_free_port,
    raw,
    start_connected,
    stop_process,
    wait_for_port,
)
from tests.support.memory import upgrade_request
from tests.support.processes import default_sigint
from tests.support.redis import RedisServer
from tests.support.tools import require_tool

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

    def client(self, target, name, extra=(), **options):
        client = start_connected(["http", target.address, "-t", self.url, "-s", name, *extra],
                                 self.tmp.mktemp("client"), **options)
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


def visit(port, name, method="GET", path="/", body=None, timeout=IO_TIMEOUT):
    """(status, body) of one request from 127.0.0.2 on a new connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(VISITOR, 0))
    return exchange(connection, method, path, f"{name}.{DOMAIN}:{port}", body)


def create(port, name):
    """The head of the answer to a /create-tpot for `name` (the connection closed after it)."""
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(upgrade_request(f"/create-tpot?subdomain={name}", host=f"{DOMAIN}:{port}"))
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return answer
