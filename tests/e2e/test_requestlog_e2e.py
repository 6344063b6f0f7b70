"""End-to-end: the client's live request log on stdout, --quiet, --basic-auth and --allow-ip,
with a real twistd server, real `tpot` clients and a recording keep-alive target on 127.0.0.1.
Every wait has a deadline; every process and thread started here is stopped at teardown."""

import base64
import http.client
import re
import signal

import pytest

from .conftest import DOMAIN, HOST, STOP_TIMEOUT, Target, TargetHandler, serving, start_connected

pytestmark = pytest.mark.timeout(60)

IO_TIMEOUT = 10.0
LINE = re.compile(r"(\S+) (\S+) (?:→|->) (\d{3})  (\d+) B  (\d+) ms")
CREDENTIALS = "visitor:open sesame"


# ---------------------------------------------------------------------------------------
# a target that records what reaches it


class RecordingHandler(TargetHandler):
    def do_GET(self):
        if self.path == "/missing":
            self.server.record(self)
            self._answer("nothing here\n", status=404)
        elif self.path == "/authorization":
            self.server.record(self)
            self._answer(self.headers.get("Authorization", "none"))
        else:
            super().do_GET()

    def do_HEAD(self):
        self.server.record(self)
        self.send_response(200)
        self.send_header("Content-Length", "1234")
        self.end_headers()


class RecordingTarget(Target):
    def __init__(self):
        super().__init__()
        self.RequestHandlerClass = RecordingHandler
        self.seen = []

    def record(self, handler):
        super().record(handler)
        with self.lock:
            self.seen.append((handler.command, handler.path, handler.headers.get("Authorization")))

    def paths(self):
        with self.lock:
            return [path for _, path, _ in self.seen]


@pytest.fixture(scope="module")
def recording_target():
    yield from serving(RecordingTarget())


@pytest.fixture
def logging_client(tmp_path):
    """logging_client(server, target, name, *extra) -> a connected conftest Client."""
    started = []

    def start(server, target, name, *extra):
        client = start_connected(["http", target.address, "-t", server.url, "-s", name, *extra], tmp_path)
        started.append(client)
        assert client.url == f"http://{name}.{DOMAIN}:{server.port}", client.describe()
        return client

    yield start
    for client in started:
        client.stop(signal.SIGKILL)


def connect(server):
    return http.client.HTTPConnection(HOST, server.port, timeout=IO_TIMEOUT)


def request(conn, server, name, method, path, body=None, headers=None):
    headers = {"Host": f"{name}.{DOMAIN}:{server.port}", **(headers or {})}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.getheaders(), response.read()


def basic(credentials=CREDENTIALS):
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def parsed(lines):
    entries = []
    for line in lines:
        match = LINE.fullmatch(line)
        assert match, f"not a request-log line: {line!r}"
        entries.append((match[1], match[2], int(match[3]), int(match[4])))
    return entries


# ---------------------------------------------------------------------------------------
# the log


def test_each_request_of_a_keep_alive_connection_is_one_line(server, recording_target, logging_client):
    client = logging_client(server, recording_target, "logged")
    conn = connect(server)
    expected = []
    try:
        for method, path, body in [
            ("GET", "/bytes/1000?seed=3", None),
            ("GET", "/missing", None),
            ("POST", "/sha256", b"x" * 5000),
            ("HEAD", "/head-only", None),
            ("GET", "/", None),
        ]:
            status, _, content = request(conn, server, "logged", method, path, body)
            expected.append((method, path, status, len(content)))
        # One connection for all of them (keep-alive), answered in order.
        assert [status for _, _, status, _ in expected] == [200, 404, 200, 200, 200]
    finally:
        conn.close()
    assert parsed(client.log_lines(len(expected))) == expected, client.describe()
    # And a request on a connection of its own.
    conn = connect(server)
    try:
        assert request(conn, server, "logged", "GET", "/bytes/7?seed=1")[0] == 200
    finally:
        conn.close()
    assert parsed(client.log_lines(1)) == [("GET", "/bytes/7?seed=1", 200, 7)]
    assert client.proc.poll() is None


def test_quiet_prints_only_the_start_up_lines(server, recording_target, logging_client):
    client = logging_client(server, recording_target, "hushed", "--quiet")
    conn = connect(server)
    try:
        for path in ("/", "/missing", "/bytes/10"):
            request(conn, server, "hushed", "GET", path)
    finally:
        conn.close()
    assert client.log_lines(1, timeout=1.0) == []
    client.stop()
    assert client.next_line(STOP_TIMEOUT) is None, client.describe()  # EOF, nothing more
    assert client.seen == ["tpot connected", f"http://hushed.{DOMAIN}:{server.port}", f"Forwarding {client.forwarding}",
                           f"inspector: {client.inspector_url}"]


# ---------------------------------------------------------------------------------------
# visitor protection


def test_basic_auth_is_enforced_by_the_client(server, recording_target, logging_client):
    client = logging_client(server, recording_target, "locked", "--basic-auth", CREDENTIALS)
    before = len(recording_target.paths())

    conn = connect(server)
    try:
        status, headers, body = request(conn, server, "locked", "GET", "/authorization")
        assert status == 401
        assert dict(headers)["WWW-Authenticate"] == 'Basic realm="tpot"'
        assert dict(headers)["Connection"] == "close"
    finally:
        conn.close()
    status, _, _ = request(connect(server), server, "locked", "GET", "/authorization",
                           headers=basic("visitor:wrong"))
    assert status == 401
    assert recording_target.paths()[before:] == []  # the target heard of neither

    conn = connect(server)
    try:
        # Several authorized requests on one connection, then one without credentials.
        status, _, body = request(conn, server, "locked", "GET", "/authorization", headers=basic())
        assert (status, body) == (200, b"none")  # the target never sees the Authorization header
        status, _, body = request(conn, server, "locked", "GET", "/missing", headers=basic())
        assert status == 404
        status, headers, _ = request(conn, server, "locked", "GET", "/after", headers={})
        assert status == 401 and dict(headers)["Connection"] == "close"
    finally:
        conn.close()
    assert recording_target.paths()[before:] == ["/authorization", "/missing"]
    assert all(auth is None for _, _, auth in recording_target.seen)
    assert [entry[:3] for entry in parsed(client.log_lines(5))] == [
        ("GET", "/authorization", 401), ("GET", "/authorization", 401),
        ("GET", "/authorization", 200), ("GET", "/missing", 404), ("GET", "/after", 401),
    ]


def test_allow_ip(server, recording_target, logging_client):
    logging_client(server, recording_target, "insiders", "--allow-ip", "127.0.0.0/8", "--quiet")
    outsiders = logging_client(server, recording_target, "outsiders", "--allow-ip", "10.0.0.0/8",
                               "--allow-ip", "192.168.0.0/16")

    status, _, body = request(connect(server), server, "insiders", "GET", "/?from=inside")
    assert (status, body) == (200, b"ok")
    assert "/?from=inside" in recording_target.paths()

    conn = connect(server)
    try:
        status, headers, body = request(conn, server, "outsiders", "GET", "/?from=outside")
        assert status == 403 and dict(headers)["Connection"] == "close" and body
    finally:
        conn.close()
    assert [entry[:3] for entry in parsed(outsiders.log_lines(1))] == [("GET", "/?from=outside", 403)]
    assert "/?from=outside" not in recording_target.paths()
