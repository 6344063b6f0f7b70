"""Raw TCP tunnels end to end: a TCP echo service exposed with `tpot tcp`, reached through
`tpot connect` (--listen and --stdio) over the server's one port, all real processes on
127.0.0.1.  Every stream checks the bytes that come back (sha256), every wait is bounded.
"""

import hashlib
import socket
import socketserver
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.terminal import terminal  # noqa: F401 (the fixture)

from .conftest import (
    AUTH_KEY,
    CLIENT_TIMEOUT,
    HOST,
    IO_TIMEOUT,
    TPOT,
    Client,
    clean_env,
    expected_bytes,
    run_tpot,
    serving,
    wait_until,
)

STREAMS = 20
STREAM_SIZE = 256 * 1024
BIG_STREAM = 5 * 1024 * 1024
SEND_CHUNK = 64 * 1024


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.connections += 1
        self.request.settimeout(IO_TIMEOUT * 3)
        try:
            while True:
                data = self.request.recv(SEND_CHUNK)
                if not data:
                    return
                self.request.sendall(data)
        except OSError:
            return


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's backlog of 5 overflowed under load when tpot tcp opened twenty target
    # connections at once, and the kernel reset some of them.
    request_queue_size = 64

    def __init__(self):
        super().__init__((HOST, 0), EchoHandler)
        self.connections = 0

    @property
    def port(self):
        return self.server_address[1]


@pytest.fixture(scope="module")
def echo():
    yield from serving(EchoServer())


class TCPTunnel:
    """A running `tpot tcp` and what it printed: the name and the access secret."""

    def __init__(self, client, lines):
        self.client = client
        self.lines = lines
        self.secret = lines[2].removeprefix("access secret: ")


def start_tcp_tunnel(server, echo, home, name="echo", extra=()):
    connections = echo.connections
    client = Client(["tcp", str(echo.port), "-t", server.url, "-s", name, *extra], home)
    lines = client.log_lines(5, CLIENT_TIMEOUT)  # connected, name, secret, how to connect, Forwarding
    if len(lines) < 5 or lines[0] != "tpot connected":
        client.stop()
        raise RuntimeError(f"tpot tcp did not connect: {client.describe()}\n{server.log()}")
    # Once connected it checks that the service listens (one connection): past that, the
    # tests that count the service's connections count only their own.
    if not wait_until(lambda: echo.connections > connections, IO_TIMEOUT):
        client.stop()
        raise RuntimeError(f"tpot tcp did not check its target: {client.describe()}")
    return TCPTunnel(client, lines)


class Listener:
    """A running `tpot connect NAME --listen 127.0.0.1:0` and the port it listens on."""

    def __init__(self, args, home):
        self.client = Client(["connect", *args, "--listen", f"{HOST}:0"], home)
        line = self.client.next_line(CLIENT_TIMEOUT)
        prefix = f"tpot listening on {HOST}:"
        if line is None or not line.startswith(prefix):
            self.client.stop()
            raise RuntimeError(f"tpot connect did not listen: {self.client.describe()}")
        self.port = int(line[len(prefix):])


@pytest.fixture
def started(tmp_path):
    """Everything started through it is stopped at teardown."""
    clients = []

    def keep(thing):
        clients.append(thing.client)
        return thing

    yield keep
    for client in clients:
        client.stop()


@pytest.fixture
def tcp_tunnel(server, echo, tmp_path, started):
    return started(start_tcp_tunnel(server, echo, tmp_path))


def echo_through(port, payload, timeout=IO_TIMEOUT * 3):
    """Send `payload` to 127.0.0.1:`port` while reading; the sha256 of what came back."""
    digest, received = hashlib.sha256(), 0
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        writer = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        writer.start()
        deadline = time.monotonic() + timeout
        while received < len(payload) and time.monotonic() < deadline:
            data = sock.recv(SEND_CHUNK)
            if not data:
                break
            digest.update(data)
            received += len(data)
        writer.join(timeout)
    assert received == len(payload), f"{received} of {len(payload)} bytes came back"
    return digest.hexdigest()


def test_tcp_tunnel_prints_its_name_secret_and_how_to_connect(tcp_tunnel, server):
    assert tcp_tunnel.lines[1] == f"TCP tunnel echo on {server.url}"
    assert len(tcp_tunnel.secret) >= 32
    assert tcp_tunnel.lines[3].startswith(f"connect with: tpot connect echo -t {server.url} --secret {tcp_tunnel.secret}")


def test_twenty_concurrent_streams_echo_intact(tcp_tunnel, server, tmp_path, started):
    listener = started(Listener(["echo", "-t", server.url, "--secret", tcp_tunnel.secret], tmp_path))
    payloads = [expected_bytes(STREAM_SIZE, seed) for seed in range(STREAMS)]
    try:
        with ThreadPoolExecutor(STREAMS) as pool:
            digests = list(pool.map(lambda payload: echo_through(listener.port, payload), payloads))
    except TimeoutError:
        raise AssertionError(
            f"a stream stalled\nserver log:\n{server.log()[-3000:]}\ntpot tcp: {tcp_tunnel.client.describe()}"
            f"\ntpot connect: {listener.client.describe()}"
        ) from None
    assert digests == [hashlib.sha256(payload).hexdigest() for payload in payloads]


def test_a_5_mb_stream_echoes_back_intact(tcp_tunnel, server, tmp_path, started):
    listener = started(Listener(["echo", "-t", server.url, "--secret", tcp_tunnel.secret], tmp_path))
    payload = expected_bytes(BIG_STREAM, 5)
    assert echo_through(listener.port, payload) == hashlib.sha256(payload).hexdigest()
    # tpot tcp's connection log: one line once the connection has ended.
    line = tcp_tunnel.client.next_line(IO_TIMEOUT)
    assert line is not None and line.startswith(f"TCP {HOST}:") and "→ closed  5.0 MiB in  5.0 MiB out  " in line, line


def test_stdio_relays_a_stream_for_ssh_proxycommand(tcp_tunnel, server, tmp_path):
    payload = expected_bytes(1024 * 1024, 7)
    proc = subprocess.Popen(
        [TPOT, "connect", "echo", "-t", server.url, "--secret", tcp_tunnel.secret, "--stdio"],
        env=clean_env(tmp_path), cwd=str(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        writer = threading.Thread(target=lambda: (proc.stdin.write(payload), proc.stdin.flush()), daemon=True)
        writer.start()
        received = bytearray()
        deadline = time.monotonic() + IO_TIMEOUT * 3
        while len(received) < len(payload) and time.monotonic() < deadline:
            data = proc.stdout.read1(SEND_CHUNK)
            if not data:
                break
            received += data
        writer.join(IO_TIMEOUT)
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
        proc.stdin.close()  # the end of ssh's side: tpot connect closes and exits 0
        assert proc.wait(IO_TIMEOUT) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(IO_TIMEOUT)


def test_a_piped_stream_gets_its_whole_answer_after_the_end_of_stdin(tcp_tunnel, server, tmp_path):
    # As `echo query | nc -N host port`: stdin ends first, the answer still comes back whole.
    payload = expected_bytes(300_000, 9)
    result = subprocess.run(
        [TPOT, "connect", "echo", "-t", server.url, "--secret", tcp_tunnel.secret, "--stdio"],
        env=clean_env(tmp_path), cwd=str(tmp_path), input=payload, capture_output=True, timeout=IO_TIMEOUT * 3,
    )
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_a_half_closed_local_connection_reads_the_answer_to_its_end(tcp_tunnel, server, tmp_path, started):
    listener = started(Listener(["echo", "-t", server.url, "--secret", tcp_tunnel.secret], tmp_path))
    payload = expected_bytes(200_000, 10)
    received = bytearray()
    with socket.create_connection((HOST, listener.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + IO_TIMEOUT * 3
        while time.monotonic() < deadline:
            data = sock.recv(SEND_CHUNK)
            if not data:  # the service's end, passed on once it has answered everything
                break
            received += data
    assert bytes(received) == payload


def test_the_servers_auth_key_also_opens_a_tcp_tunnel(auth_server, echo, tmp_path, started):
    tunnel = started(start_tcp_tunnel(auth_server, echo, tmp_path, extra=["-k", AUTH_KEY]))
    assert tunnel.lines[0] == "tpot connected"
    listener = started(Listener(["echo", "-t", auth_server.url, "-k", AUTH_KEY], tmp_path))
    payload = expected_bytes(100_000, 11)
    assert echo_through(listener.port, payload) == hashlib.sha256(payload).hexdigest()


def test_a_wrong_secret_is_refused_and_reaches_nothing(tcp_tunnel, server, echo, tmp_path, started):
    before = echo.connections
    wrong = "w" * 43
    result = run_tpot(["connect", "echo", "-t", server.url, "--secret", wrong, "--stdio"], tmp_path)
    assert result.returncode == 1
    assert "401" in result.stderr and "Traceback" not in result.stderr
    listener = started(Listener(["echo", "-t", server.url, "--secret", wrong], tmp_path))
    with socket.create_connection((HOST, listener.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"hello")
        assert sock.recv(100) == b""  # closed without an answer
    assert listener.client.wait_stderr("401", IO_TIMEOUT), listener.client.describe()
    assert echo.connections == before


def test_no_secret_and_no_key_is_a_clear_error(server, tmp_path):
    result = run_tpot(["connect", "echo", "-t", server.url, "--stdio"], tmp_path)
    assert result.returncode == 1
    assert "--secret" in result.stderr and "Traceback" not in result.stderr


def test_http_visitors_of_a_tcp_tunnel_get_404_and_never_reach_the_service(tcp_tunnel, server, echo):
    before = echo.connections
    with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: echo.localhost:{server.port}\r\n\r\n".encode())
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert echo.connections == before


def test_on_a_terminal_the_status_area_lists_the_connections(server, echo, tmp_path, started, terminal):
    secret = "console-e2e-secret-" + "s" * 20
    term = terminal([TPOT, "tcp", str(echo.port), "-t", server.url, "-s", "tcpscreen", "--secret", secret])
    term.wait_for("Session Status  online",
                  f"Forwarding      TCP tunnel tcpscreen on {server.url} -> localhost:{echo.port}", "TCP connections")
    listener = started(Listener(["tcpscreen", "-t", server.url, "--secret", secret], tmp_path))
    payload = expected_bytes(10_000, 3)
    assert echo_through(listener.port, payload) == hashlib.sha256(payload).hexdigest()
    term.wait_for("Connections     total 1  open 0", f"TCP {HOST}:", "→ closed  9.8 KiB in  9.8 KiB out")
    term.send_keys("C-c")
    assert term.exit_status() == 0, term.stderr()
    assert term.stderr() == ""
