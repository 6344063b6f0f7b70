"""The container image, built from the Dockerfile and run with Docker (tests/support/docker.py).

Every container runs with --network host (it listens on loopback only), --read-only, and
its own HEALTHCHECK polled every second instead of every 30 s (`--health-interval`; the
command is the image's).  Our client, on the host, opens tunnels through it to a target on
loopback.  Without a Docker daemon that can be started these tests skip (fail under CI).
"""

import hashlib
import http.client
import json
import threading
import time

import pytest

from tests.e2e.cluster import visit
from tests.e2e.conftest import (
    AUTH_KEY,
    DOMAIN,
    HOST,
    IO_TIMEOUT,
    Server,
    expected_bytes,
    raw,
    run_tpot,
    stream_sha256,
)
from tests.support.docker import build_image, docker, image_size, start_daemon
from tests.support.processes import pick_free_port
from tests.support.redis import RedisServer

HEALTHY_TIMEOUT = 60
STOP_TIMEOUT = 40  # the drain (30 s by default) fits in it, as the Dockerfile advises
SECRET = "container-e2e-secret-0123456789abcdefgh"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    start_daemon(tmp_path_factory.mktemp("docker"))
    tag = build_image()
    print(f"\nimage {tag}: {image_size(tag) / 1e6:.0f} MB")
    return tag


class Container(Server):
    """The image run as a server the e2e helpers take (`url`, `port`, `log`)."""

    def __init__(self, workdir, image, name, env=(), command=()):
        super().__init__(workdir)
        self.image = image
        self.name = name
        self.env = {"DOMAIN": DOMAIN, "PORT": str(self.port), **dict(env)}
        self.command = list(command)

    def start(self):
        environment = [argument for key, value in self.env.items() for argument in ("-e", f"{key}={value}")]
        docker("run", "-d", "--name", self.name, "--network", "host", "--read-only", "--health-interval", "1s",
               "--stop-timeout", str(STOP_TIMEOUT), *environment, self.image, *self.command)
        deadline = time.monotonic() + HEALTHY_TIMEOUT
        while time.monotonic() < deadline:
            state = self.state()
            if (state.get("Health") or {}).get("Status") == "healthy":
                return
            assert state["Running"], f"the container exited: {self.log()}"
            time.sleep(0.25)
        pytest.fail(f"the container was not healthy within {HEALTHY_TIMEOUT} s: {self.state()} {self.log()}")

    def state(self):
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.name).stdout)

    def inspect(self, template):
        return docker("inspect", "-f", template, self.name).stdout.strip()

    def log(self):
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def stop(self):
        """`docker stop`, which waits for the drain; the container's exit status."""
        docker("stop", "-t", str(STOP_TIMEOUT), self.name, timeout=STOP_TIMEOUT + 30)
        return self.state()["ExitCode"]

    def remove(self):
        docker("rm", "-f", self.name, check=False)


@pytest.fixture
def containers(image, tmp_path_factory):
    """A factory: containers(label, env={}, command=[]) -> a healthy Container."""
    started = []

    def start(label, env=(), command=()):
        container = Container(tmp_path_factory.mktemp(label), image, f"tpot-e2e-{label}-{time.monotonic_ns()}",
                              env, command)
        started.append(container)
        container.start()
        return container

    yield start
    for container in started:
        container.remove()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_the_image_serves_a_tunnel_as_uid_10001_on_a_read_only_root_and_checks_its_key(
        containers, target, tpot_client, tmp_path):
    server = containers("keyed", {"AUTH_KEY": AUTH_KEY})
    assert server.inspect("{{.Config.User}}") == "10001:10001"
    assert server.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    assert docker("exec", server.name, "id", "-u").stdout.strip() == "10001"
    assert "Read-only file system" in docker("exec", server.name, "touch", "/opt/x", check=False).stderr

    tpot_client(server, target.address, name="boxed", extra=["-k", AUTH_KEY])
    status, body = visit(server.port, "boxed", "GET", "/bytes/5000000?seed=11", timeout=30)
    assert status == 200 and sha(body) == sha(expected_bytes(5_000_000, 11))
    upload = expected_bytes(3_000_000, 12)
    status, body = visit(server.port, "boxed", "POST", "/sha256", upload, timeout=30)
    assert (status, body) == (200, f"{sha(upload)} 3000000".encode())
    # X-Forwarded-For is the visitor's own address, as the server in the container saw it.
    assert visit(server.port, "boxed", "GET", "/xff") == (200, b"127.0.0.2")

    refused = run_tpot(["http", target.address, "-t", server.url, "-s", "nokey"], tmp_path)
    assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout, refused


def slow_download(port, name, size, seed, result):
    """GET /stream/SIZE through the tunnel, read at about 4 MB/s; `result` gets (status, sha256)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=IO_TIMEOUT)
    try:
        connection.request("GET", f"/stream/{size}?seed={seed}", headers={"Host": f"{name}.{DOMAIN}:{port}"})
        response = connection.getresponse()
        digest, received = hashlib.sha256(), 0
        while True:
            piece = response.read(64 * 1024)
            if not piece:
                break
            digest.update(piece)
            received += len(piece)
            result["received"] = received
            time.sleep(0.016)
        result["answer"] = (response.status, digest.hexdigest(), received)
    except OSError as error:
        result["answer"] = error
    finally:
        connection.close()


def test_docker_stop_drains_a_download_in_flight_and_exits_0(containers, target, tpot_client):
    server = containers("drain")
    tpot_client(server, target.address, name="drained")
    size, result = 24_000_000, {}
    download = threading.Thread(target=slow_download, args=(server.port, "drained", size, 13, result), daemon=True)
    download.start()
    deadline = time.monotonic() + IO_TIMEOUT
    while result.get("received", 0) < 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0 < result.get("received", 0) < size // 2, result
    assert server.stop() == 0, server.log()
    download.join(IO_TIMEOUT)
    assert result["answer"] == (200, stream_sha256(size, 13), size)
    assert "draining: 1 conversations" in server.log()


def test_two_containers_are_a_cluster_through_a_redis_on_loopback(containers, target, tpot_client, tmp_path):
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    try:
        nodes = []
        for index in (1, 2):
            peer = pick_free_port()
            env = {"REDIS_URL": redis.url, "CLUSTER_SECRET": SECRET, "TPOT_ADVERTISE": f"{HOST}:{peer}"}
            command = ["twistd", "-n", "--pidfile=", "tpot", "--node-id", f"box-{index}",
                       "--peer-listen", f"tcp:{peer}:interface={HOST}"]
            nodes.append(containers(f"node{index}", env, command))
        holder, other = nodes
        tpot_client(holder, target.address, name="shared")
        status, body = visit(other.port, "shared", "GET", "/bytes/5000000?seed=14", timeout=30)
        assert status == 200 and sha(body) == sha(expected_bytes(5_000_000, 14))
        assert visit(other.port, "shared", "GET", "/xff") == (200, b"127.0.0.2")
        assert visit(holder.port, "shared", "GET", "/host")[0] == 200
        answer = raw(other.port, f"GET /api/status HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
        report = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert report["nodes"] == 2 and report["node"] == "box-2" and report["forwarded"]["out"] >= 2, report
    finally:
        redis.stop()
