"""End-to-end: operating the server with real processes on 127.0.0.1.

/healthz, /api/status, the landing page and /metrics on the bare domain; the SIGTERM drain
(a download in progress finishes, newcomers get 503, the drain is bounded); the X-Forwarded-*
headers the client adds; the PROXY protocol listener; --trusted-proxy; --log-format json.
Every wait has a deadline; every process started here is stopped at teardown.
"""

import hashlib
import http.client
import json
import signal
import socket
import subprocess
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.tools import require_tool

from .conftest import (
    AUTH_KEY,
    DOMAIN,
    HOST,
    Server,
    Target,
    default_sigint,
    pick_free_port,
    raw,
    read_to_eof,
    run_tpot,
    serving,
    status_of,
    stop_process,
    stream_sha256,
    wait_for_port,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

IO_TIMEOUT = 10.0
OTHER_KEY = "another-e2e-key-abcdefghijklmnopqrstuvwxyz"
METRICS_TOKEN = "e2e-metrics-token-0123456789"
DOCUMENTATION_ADDRESS = "203.0.113.7"  # TEST-NET-3: only ever written into a header
PROXIED_VISITOR = "198.51.100.9"  # TEST-NET-2: likewise


# ---------------------------------------------------------------------------------------
# fixtures and helpers


class RecordingTarget(Target):
    """The e2e target, also recording every request's path, headers and connection."""

    def __init__(self):
        super().__init__()
        self.requests = []

    def record(self, handler):
        super().record(handler)
        with self.lock:
            self.requests.append({
                "path": handler.path,
                "headers": list(handler.headers.items()),
                "connection": handler.client_address,
            })

    def seen(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]


def header_values(record, name):
    return [value for key, value in record["headers"] if key.lower() == name.lower()]


@pytest.fixture
def target():
    """A fresh recording target per test (shadows the session-wide one of conftest)."""
    yield from serving(RecordingTarget())


class SplitServer(Server):
    """A Server whose stdout and stderr go to separate files (for --log-format json)."""

    def _stderr(self):
        self.err_path = self.workdir / "twistd.err"
        self._err = open(self.err_path, "wb")
        return self._err

    def stop(self):
        super().stop()
        self._err.close()


@pytest.fixture
def servers(tmp_path_factory):
    """servers(*args, auth_key=None, port=None, cls=Server) -> a started server.

    `port` is the port to wait for (and the one clients use) when --listen replaces --port.
    """
    started = []

    def start(*extra_args, auth_key=None, port=None, cls=Server):
        s = cls(tmp_path_factory.mktemp("server"), auth_key, extra_args)
        if port is not None:
            s.port = port
        started.append(s)
        s.start()
        return s

    yield start
    for s in started:
        s.stop()


def get(port, path, host=None, headers=None, timeout=IO_TIMEOUT):
    """(status, lower-cased headers, body) of one GET to the server."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host or f"{DOMAIN}:{port}", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def scrape(port, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, head, body = get(port, "/metrics", headers=headers)
    assert status == 200, body
    assert head["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode("utf-8")


def metric(text, name, **labels):
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def wait_exit(proc, timeout):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


# ---------------------------------------------------------------------------------------
# 1. the bare domain's endpoints, and a tunnel's /healthz


def test_bare_domain_endpoints(server, target, tpot_client):
    status, head, body = get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert head["connection"] == "close"
    tpot_client(server, target.address, name="pages")
    status, head, body = get(server.port, "/api/status")
    assert status == 200 and head["content-type"] == "application/json"
    report = json.loads(body)
    assert report["tunnels"] == 1 and report["conversations"] == 0 and report["draining"] is False
    assert report["uptime_s"] > 0 and isinstance(report["version"], str)
    assert b"pages" not in body
    status, head, body = get(server.port, "/")
    assert status == 200 and head["content-type"] == "text/html; charset=utf-8"
    page = body.decode("utf-8")
    assert "tpot http" in page and f"-t http://{DOMAIN}:{server.port}" in page
    assert target.requests == []  # none of that reached the tunnel


def test_healthz_of_a_tunnel_is_relayed_to_its_target(server, target, tpot_client):
    tpot_client(server, target.address, name="probe")
    status, _, body = get(server.port, "/healthz", host=server.host_for("probe"))
    assert (status, body) == (200, b"ok")  # the target's answer, not the server's "ok\n"
    assert len(target.seen("/healthz")) == 1
    status, _, body = get(server.port, "/api/status?x=1", host=server.host_for("probe"))
    assert (status, body) == (200, b"ok") and len(target.seen("/api/status?x=1")) == 1


# ---------------------------------------------------------------------------------------
# 2. /metrics follows real traffic


def test_metrics_follow_traffic(server_factory, target, tpot_client, tmp_path):
    server = server_factory()
    before = scrape(server.port)
    assert metric(before, "tpot_tunnels_active") == 0
    tpot_client(server, target.address, name="countme")
    assert wait_until(lambda: metric(scrape(server.port), "tpot_tunnels_active") == 1, 5)
    base = scrape(server.port)
    sent = received = 0
    n = 5
    for i in range(n):
        request = (
            f"GET /bytes/{1000 * (i + 1)}?seed={i} HTTP/1.1\r\nHost: {server.host_for('countme')}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        response = raw(server.port, request)
        assert status_of(response) == 200 and len(response) > 1000 * (i + 1)
        sent += len(request)
        received += len(response)
    assert raw(server.port, f"GET / HTTP/1.1\r\nHost: {server.host_for('nobody')}\r\n\r\n".encode()).startswith(
        b"HTTP/1.1 503"
    )
    after = wait_until(lambda: (lambda t: metric(t, "tpot_conversations_active") == 0 and t)(scrape(server.port)), 5)
    assert after
    assert metric(after, "tpot_conversations_total") - metric(base, "tpot_conversations_total") == n
    up = metric(after, "tpot_bytes_total", direction="upstream") - metric(base, "tpot_bytes_total", direction="upstream")
    down = metric(after, "tpot_bytes_total", direction="downstream") - metric(
        base, "tpot_bytes_total", direction="downstream"
    )
    assert up >= sent and down >= received, (up, sent, down, received)
    assert metric(after, "tpot_http_errors_total", code="503") - metric(base, "tpot_http_errors_total", code="503") == 1
    assert metric(after, "tpot_tunnels_active") == 1
    assert "countme" not in after and "nobody" not in after and "127.0.0.1" not in after


def test_metrics_count_a_bad_key(servers, target, tmp_path):
    server = servers(auth_key=AUTH_KEY)
    assert metric(scrape(server.port), "tpot_auth_failures_total") == 0
    result = run_tpot(["http", target.address, "-t", server.url, "-s", "badkey", "-k", OTHER_KEY], tmp_path)
    assert result.returncode == 1 and "401" in result.stderr
    text = scrape(server.port)
    assert metric(text, "tpot_auth_failures_total") == 1
    assert metric(text, "tpot_http_errors_total", code="401") == 1
    assert "badkey" not in text and "127.0.0.1" not in text


def test_metrics_token(servers):
    server = servers("--metrics-token", METRICS_TOKEN)
    conn = http.client.HTTPConnection(HOST, server.port, timeout=IO_TIMEOUT)
    conn.request("GET", "/metrics", headers={"Host": f"{DOMAIN}:{server.port}"})
    response = conn.getresponse()
    assert response.status == 401 and b"tpot_" not in response.read()
    assert response.msg.get_all("WWW-Authenticate") == ["Bearer"]
    conn.close()
    status, _, body = get(server.port, "/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert status == 401 and b"tpot_" not in body
    text = scrape(server.port, token=METRICS_TOKEN)
    assert "tpot_tunnels_active" in text
    # Refused scrapes are errors, but not tunnels refused for bad credentials.
    assert metric(text, "tpot_http_errors_total", code="401") == 2
    assert metric(text, "tpot_auth_failures_total") == 0
    assert get(server.port, "/healthz")[0] == 200  # the probe needs no token


# ---------------------------------------------------------------------------------------
# 3, 4. SIGTERM: the drain


class RateLimitedDownload(threading.Thread):
    """GET `path` through tunnel `name`, reading at most `rate` bytes/s; hashes the body."""

    def __init__(self, port, host, path, rate):
        super().__init__(daemon=True)
        self.port, self.host, self.path, self.rate = port, host, path, rate
        self.received = 0
        self.status = None
        self.length = None
        self.digest = hashlib.sha256()
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as error:  # reported by the test
            self.error = error

    def _run(self):
        with socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                part = sock.recv(65536)
                assert part, f"closed before the head: {buffer!r}"
                buffer += part
            head, _, body = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.length = int(next(line.split(":")[1] for line in lines if line.lower().startswith("content-length")))
            started = time.monotonic()
            self._take(body)
            while self.received < self.length:
                part = sock.recv(min(65536, self.length - self.received))
                if not part:
                    break
                self._take(part)
                ahead = started + self.received / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        # The socket is closed here: the conversation ends, and with it the drain.

    def _take(self, part):
        self.digest.update(part)
        self.received += len(part)


def test_sigterm_drains_a_download_then_exits_0(servers, target, tpot_client):
    server = servers("--drain-timeout", "20")
    client = tpot_client(server, target.address, name="drain")
    size = 30 * 1024 * 1024
    download = RateLimitedDownload(server.port, server.host_for("drain"), f"/stream/{size}?seed=5", 10 * 1024 * 1024)
    download.start()
    assert wait_until(lambda: download.received >= 2 * 1024 * 1024, IO_TIMEOUT), download.error
    server.proc.send_signal(signal.SIGTERM)
    # While the download goes on: the probe says draining, a newcomer is turned away.
    status, _, body = wait_until(lambda: (lambda r: r[0] == 503 and r)(get(server.port, "/healthz")), 3)
    assert body == b"draining\n"
    status, _, body = get(server.port, "/", host=server.host_for("drain"))
    assert status == 503 and b"restarting" in body
    assert download.is_alive() and download.received < size, "the download ended before the drain was tested"
    assert server.proc.poll() is None
    download.join(30)
    assert not download.is_alive() and download.error is None, download.error
    assert (download.status, download.received, download.length) == (200, size, size)
    assert download.digest.hexdigest() == stream_sha256(size, 5)
    assert wait_exit(server.proc, 15) == 0, server.log()
    assert wait_until(lambda: "(code 4012)" in client.stderr(), 5), client.stderr()
    line = next(line for line in client.stderr().splitlines() if "(code 4012)" in line)
    assert "Reconnecting in" in line, line
    time.sleep(1.5)
    assert client.proc.poll() is None, client.stderr()  # it keeps trying


def test_drain_is_bounded_by_the_drain_timeout(servers, target, tpot_client):
    server = servers("--drain-timeout", "2")
    tpot_client(server, target.address, name="idle")
    conn = http.client.HTTPConnection(HOST, server.port, timeout=IO_TIMEOUT)
    conn.request("GET", "/", headers={"Host": server.host_for("idle")})
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
    # The keep-alive connection stays open and idle: a conversation that never ends.
    assert json.loads(get(server.port, "/api/status")[2])["conversations"] == 1
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = wait_exit(server.proc, 10)
    elapsed = time.monotonic() - started
    assert code == 0, server.log()
    assert 1.8 <= elapsed <= 5.0, elapsed
    conn.sock.settimeout(IO_TIMEOUT)
    assert conn.sock.recv(1) == b""  # and the idle visitor was closed
    conn.close()


# ---------------------------------------------------------------------------------------
# 5. X-Forwarded-* added by the client


def keep_alive_requests(port, host, paths):
    conn = http.client.HTTPConnection(HOST, port, timeout=IO_TIMEOUT)
    try:
        for method, path, body in paths:
            conn.request(method, path, body=body, headers={"Host": host})
            response = conn.getresponse()
            assert response.status == 200
            response.read()
    finally:
        conn.close()


def test_forwarded_headers_on_every_keep_alive_request(server, target, tpot_client):
    tpot_client(server, target.address, name="fwd")
    requests = [("GET", "/f1", None), ("POST", "/f2", b"x" * 1000), ("GET", "/f3", None)]
    keep_alive_requests(server.port, server.host_for("fwd"), requests)
    records = [target.seen(path)[0] for _, path, _ in requests]
    assert len({r["connection"] for r in records}) == 1  # one target connection: one conversation
    for record in records:
        assert header_values(record, "X-Forwarded-For") == ["127.0.0.1"], record
        assert header_values(record, "X-Forwarded-Proto") == ["http"], record
        assert header_values(record, "X-Forwarded-Host") == [server.host_for("fwd")], record
        assert header_values(record, "Host") == [target.address], record


def test_no_forwarded_headers(server, target, tpot_client):
    tpot_client(server, target.address, name="nofwd", extra=["--no-forwarded-headers"])
    requests = [("GET", "/n1", None), ("GET", "/n2", None)]
    keep_alive_requests(server.port, server.host_for("nofwd"), requests)
    for _, path, _ in requests:
        [record] = target.seen(path)
        names = {key.lower() for key, _ in record["headers"]}
        assert not names & {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}, record


# ---------------------------------------------------------------------------------------
# 6. the PROXY protocol listener


def test_haproxy_listener_needs_a_proxy_header_from_the_client_too(servers, target, tmp_path):
    port = pick_free_port()
    server = servers("--listen", f"haproxy:tcp:{port}:interface=127.0.0.1", port=port)
    result = run_tpot(["http", target.address, "-t", server.url, "-s", "direct"], tmp_path)
    assert result.returncode == 1, result
    assert "closed the connection before the tunnel opened" in result.stderr, result.stderr
    # A visitor without the header is closed without an answer either.
    assert raw(port, f"GET / HTTP/1.1\r\nHost: {DOMAIN}:{port}\r\n\r\n".encode()) == b""


def test_proxy_protocol_visitor_address(servers, target, tpot_client):
    plain, proxied = pick_free_port(), pick_free_port()
    server = servers(
        "--listen", f"tcp:{plain}:interface=127.0.0.1",
        "--listen", f"haproxy:tcp:{proxied}:interface=127.0.0.1",
        port=plain,
    )
    assert wait_for_port(proxied, server.proc)
    tpot_client(server, target.address, name="px")  # on the plain listener
    host = f"px.{DOMAIN}:{proxied}"
    header = f"PROXY TCP4 {DOCUMENTATION_ADDRESS} 127.0.0.1 5555 {proxied}\r\n".encode()
    request = f"GET /px1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    assert status_of(raw(proxied, header + request)) == 200
    [record] = target.seen("/px1")
    assert header_values(record, "X-Forwarded-For") == [DOCUMENTATION_ADDRESS]
    assert header_values(record, "X-Forwarded-Host") == [host]
    # The header and the request in separate writes.
    with socket.create_connection((HOST, proxied), timeout=IO_TIMEOUT) as sock:
        sock.sendall(header)
        time.sleep(0.2)
        sock.sendall(request.replace(b"/px1", b"/px2"))
        sock.settimeout(IO_TIMEOUT)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    [record] = target.seen("/px2")
    assert header_values(record, "X-Forwarded-For") == [DOCUMENTATION_ADDRESS]
    # The bare domain's endpoints answer through the PROXY listener too.
    assert raw(proxied, header + f"GET /healthz HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode()).endswith(b"ok\n")
    # On the plain listener the peer itself is the visitor.
    assert status_of(raw(plain, request.replace(b"/px1", b"/px3"))) == 200
    assert header_values(target.seen("/px3")[0], "X-Forwarded-For") == ["127.0.0.1"]


HAPROXY_CONFIG = """global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend visitors
    bind 127.0.0.1:{front}
    default_backend tpot
backend tpot
    server tpot 127.0.0.1:{proxied} {send_proxy}
"""


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_a_real_haproxy_in_front_of_the_proxy_listener(servers, target, tpot_client, tmp_path, send_proxy):
    haproxy = require_tool("haproxy", "haproxy")
    plain, proxied, front = pick_free_port(), pick_free_port(), pick_free_port()
    server = servers(
        "--listen", f"tcp:{plain}:interface=127.0.0.1",
        "--listen", f"haproxy:tcp:{proxied}:interface=127.0.0.1",
        port=plain,
    )
    assert wait_for_port(proxied, server.proc)
    tpot_client(server, target.address, name="hp")
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(front=front, proxied=proxied, send_proxy=send_proxy), encoding="utf-8")
    proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=default_sigint)
    try:
        assert wait_for_port(front, proc), proc.stderr.read() if proc.poll() is not None else "haproxy is not listening"
        # The visitor comes from 127.0.0.2; haproxy connects to us from 127.0.0.1: only the
        # PROXY header haproxy writes can tell the server who the visitor is.
        host = f"hp.{DOMAIN}:{front}"
        with socket.socket() as sock:
            sock.settimeout(IO_TIMEOUT)
            sock.bind(("127.0.0.2", 0))
            sock.connect((HOST, front))
            sock.sendall(f"GET /hp1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = read_to_eof(sock)
        assert status_of(answer) == 200, answer[:300]
        [record] = target.seen("/hp1")
        assert header_values(record, "X-Forwarded-For") == ["127.0.0.2"]
        assert header_values(record, "X-Forwarded-Host") == [host]
    finally:
        stop_process(proc)


# ---------------------------------------------------------------------------------------
# 7. --trusted-proxy


def test_trusted_proxy(servers, target, tpot_client):
    server = servers("--trusted-proxy", "127.0.0.1/32")
    client = tpot_client(server, target.address, name="tp", extra=["-d"])
    request = (
        f"GET /tp1 HTTP/1.1\r\nHost: {server.host_for('tp')}\r\nX-Forwarded-For: {PROXIED_VISITOR}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    assert status_of(raw(server.port, request)) == 200
    # The conversation reports the proxied visitor (port 0: a proxy does not say it)...
    assert wait_until(lambda: f"from {PROXIED_VISITOR}:0" in client.stderr(), 5), client.stderr()[-2000:]
    # ...and the client appends that address to the chain the proxy sent.
    [record] = target.seen("/tp1")
    # The server took the visitor from the chain's end; the client does not repeat it.
    assert header_values(record, "X-Forwarded-For") == [PROXIED_VISITOR]


def test_untrusted_peer_keeps_its_own_address(server, target, tpot_client):
    tpot_client(server, target.address, name="ut")
    request = (
        f"GET /ut1 HTTP/1.1\r\nHost: {server.host_for('ut')}\r\nX-Forwarded-For: {PROXIED_VISITOR}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    assert status_of(raw(server.port, request)) == 200
    [record] = target.seen("/ut1")
    assert header_values(record, "X-Forwarded-For") == [f"{PROXIED_VISITOR}, 127.0.0.1"]


# ---------------------------------------------------------------------------------------
# 8. --log-format json


def test_json_logs(servers, target, tpot_client, tmp_path):
    server = servers("--log-format", "json", auth_key=AUTH_KEY, cls=SplitServer)
    client = tpot_client(server, target.address, name="logged", extra=["-k", AUTH_KEY])
    secret_header = "visitor-secret-value-8d1f"
    secret_bearer = "visitor-bearer-secret-77aa"
    secret_body = "visitor-body-secret-51c3"
    request = (
        f"POST /private-path-3e9a HTTP/1.1\r\nHost: {server.host_for('logged')}\r\nX-Secret: {secret_header}\r\n"
        f"Authorization: Bearer {secret_bearer}\r\nContent-Length: {len(secret_body)}\r\nConnection: close\r\n\r\n"
        f"{secret_body}"
    ).encode()
    assert status_of(raw(server.port, request)) == 200
    unknown = f"GET /x HTTP/1.1\r\nHost: {server.host_for('nobody')}\r\nX-Secret: {secret_header}\r\n\r\n"
    assert status_of(raw(server.port, unknown.encode())) == 503
    refused = run_tpot(["http", target.address, "-t", server.url, "-s", "intruder", "-k", OTHER_KEY], tmp_path)
    assert refused.returncode == 1
    client.stop()  # a clean close: the server logs the tunnel's end
    assert wait_until(lambda: "tunnel logged closed" in server.log(), 5), server.log()
    stop_process(server.proc)
    assert server.proc.returncode == 0
    lines = server.log().splitlines()
    assert lines
    records = []
    for line in lines:
        record = json.loads(line)  # every line of stdout is one JSON object
        assert isinstance(record["time"], (int, float)) and record["time"] > 1e9
        assert record["level"] in {"debug", "info", "warn", "error", "critical"}
        assert isinstance(record["namespace"], str) and isinstance(record["message"], str)
        records.append(record)
    messages = [r["message"] for r in records]
    assert any(m.startswith("tunnel logged opened from") for m in messages), messages
    assert any(m.startswith("tunnel logged closed (1000)") and "bytes up" in m for m in messages), messages
    assert any("authentication refused" in m for m in messages), messages
    text = server.log() + server.err_path.read_text(errors="replace")
    for secret in (AUTH_KEY, OTHER_KEY, secret_header, secret_bearer, secret_body, "private-path-3e9a", "TPoT-1 "):
        assert secret not in text, secret
