"""End-to-end: twistd server + `tpot` client + a local HTTP/1.1 target, over 127.0.0.1."""

import base64
import functools
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from . import conftest
from .conftest import (
    AUTH_KEY,
    DOMAIN,
    HOST,
    TWISTD,
    clean_env,
    expected_bytes,
    run_tpot,
    status_of,
)

pytestmark = pytest.mark.timeout(60)

IO_TIMEOUT = 20.0


# ---------------------------------------------------------------------------------------
# visitor helpers


def connect(server, timeout=IO_TIMEOUT):
    return http.client.HTTPConnection(HOST, server.port, timeout=timeout)


def request(conn, server, name, method, path, body=None, headers=None, **kwargs):
    """One request on `conn` as a visitor of tunnel `name`; (status, headers, body)."""
    headers = dict(headers or {})
    headers.setdefault("Host", server.host_for(name))
    conn.request(method, path, body=body, headers=headers, **kwargs)
    response = conn.getresponse()
    return response.status, response, response.read()


def visit(server, name, method, path, body=None, headers=None):
    conn = connect(server)
    try:
        return request(conn, server, name, method, path, body, headers)
    finally:
        conn.close()


# This module's longer IO_TIMEOUT for raw exchanges too.
raw = functools.partial(conftest.raw, timeout=IO_TIMEOUT)


def body_of(answer):
    return answer.partition(b"\r\n\r\n")[2]


def upgrade_request(server, query="", authorization=None):
    lines = [
        f"GET /create-tpot{query} HTTP/1.1",
        f"Host: {DOMAIN}:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# ---------------------------------------------------------------------------------------
# 1. large transfers


def test_large_download_and_upload(server, tunnel):
    size, seed = 5 * 1024 * 1024, 7
    status, response, body = visit(server, "demo", "GET", f"/bytes/{size}?seed={seed}")
    assert status == 200
    assert int(response.getheader("Content-Length")) == size
    assert len(body) == size and sha(body) == sha(expected_bytes(size, seed))

    upload = expected_bytes(3 * 1024 * 1024, 11)
    status, _, body = visit(server, "demo", "POST", "/sha256", body=upload)
    assert status == 200
    assert body.decode() == f"{sha(upload)} {len(upload)}"


def test_server_log_does_not_grow_with_traffic(server, tunnel):
    """Autobahn's per-frame debug messages stay out of twistd's log (tpot.server.tap sets info)."""
    for seed in range(3):
        assert visit(server, "demo", "GET", f"/bytes/{2 * 1024 * 1024}?seed={seed}")[0] == 200
    log = server.log()
    assert "#debug]" not in log, log[-2000:]
    assert log.count("\n") < 40, log[-2000:]


def test_slow_visitor_download_is_flow_controlled(server, tunnel):
    """A visitor that does not read for a while still gets every byte, in order."""
    size, seed = 5 * 1024 * 1024, 9
    with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.sendall(
            f"GET /bytes/{size}?seed={seed} HTTP/1.1\r\nHost: {server.host_for('demo')}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        time.sleep(1.5)  # let every buffer on the way fill up
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    assert status_of(answer) == 200
    body = body_of(answer)
    assert len(body) == size and sha(body) == sha(expected_bytes(size, seed))
    # And the tunnel still works afterwards.
    assert visit(server, "demo", "GET", "/host")[0] == 200


def test_visitor_close_reaches_a_slow_target(server, target, tunnel):
    """A visitor that sends a big body to a slow target and leaves: the target still gets
    every byte, then sees its connection closed (not left open for ever)."""
    size = 3 * 1024 * 1024
    data = expected_bytes(size, 21)
    token = f"slow-{time.monotonic_ns()}"
    closed = target.connection_closed(token)
    with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(
            f"POST /sha256?pace=0.01&token={token} HTTP/1.1\r\nHost: {server.host_for('demo')}\r\n"
            f"Content-Length: {size}\r\n\r\n".encode() + data
        )
    assert closed.wait(15), "the target's connection was never closed after the visitor left"
    assert visit(server, "demo", "GET", "/host")[0] == 200


# ---------------------------------------------------------------------------------------
# 2. chunked upload, then another request on the same connection


def test_chunked_upload_then_second_request_same_connection(server, target, tunnel):
    pieces = [expected_bytes(n, n) for n in (1, 1000, 65536, 300_000, 17)]
    whole = b"".join(pieces)
    conn = connect(server)
    try:
        status, response, body = request(conn, server, "demo", "POST", "/sha256", body=iter(pieces),
                                         encode_chunked=True)
        assert response.getheader("Content-Length") is not None
        sock = conn.sock
        assert status == 200 and body.decode() == f"{sha(whole)} {len(whole)}"
        status, _, body = request(conn, server, "demo", "GET", "/host")
        assert conn.sock is sock, "the visitor connection was not kept alive"
        assert status == 200 and body.decode() == target.address
    finally:
        conn.close()


def test_chunked_upload_with_extensions_and_trailer_pipelined_raw(server, target, tunnel):
    """A raw pipelined stream: chunked POST (extension, trailer) + GET /host, one send."""
    data = expected_bytes(5000, 3)
    host = server.host_for("demo")
    stream = (
        f"POST /sha256 HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"fa0;name=value\r\n" + data[:4000] + b"\r\n"
        + b"3E8\r\n" + data[4000:] + b"\r\n"
        + b"0\r\nX-Trailer: yes\r\n\r\n"
        + f"GET /host HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    answer = raw(server.port, stream)
    expected_first = f"{sha(data)} {len(data)}".encode()
    assert answer.count(b"HTTP/1.1 200") == 2, answer
    assert expected_first in answer
    assert answer.endswith(target.address.encode()), answer


# ---------------------------------------------------------------------------------------
# 3. Host rewriting on keep-alive connections


def test_host_rewritten_on_every_keepalive_request(server, target, tunnel):
    conn = connect(server)
    try:
        sock = None
        for i in range(4):
            status, _, body = request(conn, server, "demo", "GET", "/host")
            assert status == 200 and body.decode() == target.address, i
            # A body in between must not confuse the rewriter about where the next head is.
            status, _, body = request(conn, server, "demo", "POST", "/sha256", body=b"x" * (i * 1000))
            assert status == 200 and body.decode().endswith(f" {i * 1000}")
            if sock is None:
                sock = conn.sock
            assert conn.sock is sock
    finally:
        conn.close()


def test_http_host_option(server, target, tpot_client):
    tpot_client(server, target.address, name="custom", extra=["--http-host", "example.test:8080"])
    conn = connect(server)
    try:
        for _ in range(3):
            status, _, body = request(conn, server, "custom", "GET", "/host")
            assert status == 200 and body.decode() == "example.test:8080"
    finally:
        conn.close()


def test_no_host_rewrite_option(server, target, tpot_client):
    tpot_client(server, target.address, name="plain", extra=["--no-host-rewrite"])
    conn = connect(server)
    try:
        for _ in range(3):
            status, _, body = request(conn, server, "plain", "GET", "/host")
            assert status == 200 and body.decode() == server.host_for("plain")
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# 4. concurrency


def test_sixty_concurrent_downloads(server, tunnel):
    size = 200 * 1024

    def download(seed):
        status, _, body = visit(server, "demo", "GET", f"/bytes/{size}?seed={seed}")
        return status, sha(body), sha(expected_bytes(size, seed))

    with ThreadPoolExecutor(max_workers=60) as pool:
        results = list(pool.map(download, range(1000, 1060), timeout=45))
    assert len(results) == 60
    for status, got, expected in results:
        assert status == 200 and got == expected


# ---------------------------------------------------------------------------------------
# 5. status cases


def test_400_bad_subdomain(server):
    answer = raw(server.port, upgrade_request(server, "?subdomain=-bad"))
    assert status_of(answer) == 400
    assert b"subdomain" in body_of(answer).lower()


def test_401_wrong_key_client_and_missing_authorization(auth_server, target, tmp_path):
    result = run_tpot(
        ["http", target.address, "-t", auth_server.url, "-s", "nokey", "-k", "W" * 40], tmp_path
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "auth key" in one_line(result.stderr).lower()

    answer = raw(auth_server.port, upgrade_request(auth_server, "?subdomain=nokey"))
    assert status_of(answer) == 401
    assert b"www-authenticate: tpot-1" in answer.lower()


def test_404_unknown_host(server):
    answer = raw(server.port, b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n")
    assert status_of(answer) == 404
    # The reply is complete: Content-Length matches the body.
    head, _, body = answer.partition(b"\r\n\r\n")
    length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert int(length[0].split(b":")[1]) == len(body)


def test_409_subdomain_in_use(server, target, tunnel, tmp_path):
    result = run_tpot(["http", target.address, "-t", server.url, "-s", "demo"], tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    line = one_line(result.stderr).lower()
    assert "subdomain" in line and "in use" in line
    # The first tunnel is unaffected.
    assert visit(server, "demo", "GET", "/host")[0] == 200


def test_503_unknown_tunnel(server):
    answer = raw(server.port, f"GET / HTTP/1.1\r\nHost: {server.host_for('nobody')}\r\n\r\n".encode())
    assert status_of(answer) == 503
    assert b"not connected" in body_of(answer)


def test_502_when_target_not_listening(server, tpot_client, free_port):
    dead = free_port()
    tpot_client(server, f"{HOST}:{dead}", name="deadtarget")
    for _ in range(2):  # and the tunnel survives it
        status, _, body = visit(server, "deadtarget", "GET", "/")
        assert status == 502
        assert b"could not connect to its local service" in body


def test_client_exits_when_server_unreachable(tmp_path, target, free_port):
    dead = free_port()
    result = run_tpot(["http", target.address, "-t", f"http://localhost:{dead}"], tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "could not be reached" in one_line(result.stderr)


# ---------------------------------------------------------------------------------------
# 6. auth key, the right one


def test_right_auth_key_end_to_end(auth_server, target, tpot_client):
    client = tpot_client(auth_server, target.address, name="secret", extra=["-k", AUTH_KEY])
    assert client.url == f"http://secret.{DOMAIN}:{auth_server.port}"
    size = 300_000
    status, _, body = visit(auth_server, "secret", "GET", f"/bytes/{size}?seed=5")
    assert status == 200 and sha(body) == sha(expected_bytes(size, 5))
    status, _, body = visit(auth_server, "secret", "GET", "/host")
    assert status == 200 and body.decode() == target.address


# ---------------------------------------------------------------------------------------
# 7. the client going away


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_client_means_503(server, target, tpot_client, sig):
    client = tpot_client(server, target.address, name="gone")
    assert visit(server, "gone", "GET", "/host")[0] == 200
    client.proc.send_signal(sig)
    client.proc.wait(5)
    deadline = time.monotonic() + 3
    while True:
        answer = raw(server.port, f"GET / HTTP/1.1\r\nHost: {server.host_for('gone')}\r\n\r\n".encode())
        if status_of(answer) == 503 and b"not connected" in body_of(answer):
            break
        assert time.monotonic() < deadline, f"still not 503 after the client died: {answer[:300]!r}"
        time.sleep(0.05)
    if sig == signal.SIGTERM:
        # A client that stopped cleanly left: the name is free again at once.
        tpot_client(server, target.address, name="gone")
        assert visit(server, "gone", "GET", "/host")[0] == 200
    else:
        # A client that vanished may come back: its name stays reserved for it, not for
        # another user (another home, without its reclaim token).
        result = run_tpot(["http", target.address, "-t", server.url, "-s", "gone"], server.workdir)
        assert result.returncode != 0
        assert "is held for another client's dropped tunnel for about" in one_line(result.stderr)


def test_killed_client_answers_waiting_visitor_with_503(server, target, tpot_client):
    """A visitor whose request is in flight when the client dies gets a 503, not a hang."""
    client = tpot_client(server, target.address, name="midway")
    with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(f"GET /sleep?s=3 HTTP/1.1\r\nHost: {server.host_for('midway')}\r\n\r\n".encode())
        time.sleep(0.5)  # the request has reached the target, which is still sleeping
        started = time.monotonic()
        client.proc.kill()
        client.proc.wait(5)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    assert status_of(answer) == 503, answer
    assert time.monotonic() - started < 2.0


# ---------------------------------------------------------------------------------------
# 8. the twistd plugin


def _twistd(args, cwd):
    return subprocess.run(
        [TWISTD, *args], cwd=str(cwd), env=clean_env(cwd), capture_output=True, text=True, timeout=30
    )


def test_twistd_lists_plugin(tmp_path):
    result = _twistd(["--help"], tmp_path)
    assert result.returncode == 0
    assert any(line.split()[:1] == ["tpot"] for line in result.stdout.splitlines()), result.stdout
    assert "Expose local HTTP and raw TCP services through tunnels on one port" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "DOMAIN"),
        (["--domain", DOMAIN, "--auth-key", "short"], "AUTH_KEY"),
        (["--domain", DOMAIN, "--port", "99999"], "PORT"),
    ],
    ids=["no-domain", "short-key", "bad-port"],
)
def test_twistd_bad_settings(tmp_path, args, words):
    result = _twistd(["-n", "--pidfile=", "tpot", *args], tmp_path)
    assert result.returncode != 0
    assert words in one_line(result.stderr)
    assert "Traceback" not in result.stdout


def test_twistd_tpot_version(tmp_path):
    from tpot import __version__

    result = _twistd(["tpot", "--version"], tmp_path)
    assert (result.returncode, result.stdout) == (0, f"tpot {__version__}\n"), result


def test_start_up_line_says_where_and_how_to_connect(tmp_path_factory):
    server = conftest.Server(tmp_path_factory.mktemp("server"), AUTH_KEY)
    server.start()
    try:
        hint = f"connect with: tpot http PORT -t http://{DOMAIN}:{server.port} -k KEY"
        assert f"serving {DOMAIN} on port {server.port} (IPv4 and IPv6), auth on; {hint}" in server.log()
    finally:
        server.stop()
    log = server.log()
    assert log.count(" serving ") == 1 and AUTH_KEY not in log
    for noise in ("tcp6:", "interface=", "starting on", "Starting factory", "Stopping factory"):
        assert noise not in log, (noise, log)


@pytest.fixture
def port_in_use():
    """A port a socket of this test listens on (on 127.0.0.1, which `::` includes)."""
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("mode", [["-n"], []], ids=["nodaemon", "daemon"])
def test_a_port_in_use_stops_twistd_with_one_sentence_and_no_pid_file(tmp_path, port_in_use, mode):
    result = _twistd([*mode, "tpot", "--domain", DOMAIN, "--port", str(port_in_use)], tmp_path)
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert line == f"tpot: cannot listen on port {port_in_use}: Address already in use.", line
    assert "Traceback" not in result.stdout
    assert not (tmp_path / "twistd.pid").exists()


def test_a_daemon_serves_and_removes_its_pid_file(tmp_path, free_port):
    port = free_port()
    result = _twistd(["tpot", "--domain", DOMAIN, "--port", str(port)], tmp_path)
    pid_file = tmp_path / "twistd.pid"
    assert result.returncode == 0 and pid_file.exists(), result
    pid = int(pid_file.read_text())
    try:
        assert status_of(raw(port, f"GET /healthz HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())) == 200
        assert f"serving {DOMAIN} on port {port}" in (tmp_path / "twistd.log").read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + conftest.STOP_TIMEOUT + 5
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_file.exists():
        os.kill(pid, signal.SIGKILL)  # a daemon is no child of ours: nothing else stops it
    assert not pid_file.exists()
