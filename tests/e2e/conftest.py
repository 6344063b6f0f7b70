"""Fixtures for end-to-end tests: a real twistd server, a real `tpot` client and a local
HTTP/1.1 keep-alive target, all on 127.0.0.1.

Every wait is bounded; every process started here is stopped at teardown (SIGTERM, then
SIGKILL).
"""

import hashlib
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.processes import (  # noqa: F401 (the e2e tests import these from here)
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    clean_env,
    default_sigint,
    pick_free_port,
    raise_nofile_limit,
    start_process,
    stop_process,
    wait_for_port,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
TPOT = str(BIN / "tpot")

DOMAIN = "localhost"
AUTH_KEY = "e2e-test-key-0123456789abcdefghijklmnop"
IO_TIMEOUT = 10.0  # one awaited line or response
CLIENT_TIMEOUT = 15.0


# ---------------------------------------------------------------------------------------
# helpers


def expected_bytes(n, seed):
    """What the target's GET /bytes/N?seed=S answers."""
    return random.Random(seed).randbytes(n)


STREAM_CHUNK = 256 * 1024


def stream_chunks(n, seed, chunk=STREAM_CHUNK):
    """N deterministic pseudo-random bytes, generated piece by piece (never held at once)."""
    rng = random.Random(seed)
    while n > 0:
        size = min(chunk, n)
        yield rng.randbytes(size)
        n -= size


def stream_sha256(n, seed):
    digest = hashlib.sha256()
    for piece in stream_chunks(n, seed):
        digest.update(piece)
    return digest.hexdigest()


def read_to_eof(sock, tolerate_reset=False):
    """Everything `sock` receives until the peer closes (or resets it, if tolerated)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            if not tolerate_reset:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def raw(port, data, timeout=IO_TIMEOUT, tolerate_reset=False):
    """Send raw bytes (if any) on a new connection, read until the peer closes; the whole answer."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        return read_to_eof(sock, tolerate_reset)


def status_of(answer):
    """The status code of a raw HTTP answer."""
    line = answer.split(b"\r\n", 1)[0].split()
    assert line and line[0].startswith(b"HTTP/1."), answer[:300]
    return int(line[1])


def exchange(connection, method, path, host, body=None):
    """(status, body) of one request for `host` on http.client `connection`, then closed."""
    try:
        connection.request(method, path, body=body, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until(check, timeout, interval=0.05):
    """check()'s first true result within `timeout` s, else its last one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    return check()


def serving(server):
    """For a fixture: run a socketserver in a thread, yield it, then shut it down."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_tpot(args, home, timeout=CLIENT_TIMEOUT):
    """Run a client expected to exit by itself; the CompletedProcess."""
    return subprocess.run(
        [TPOT, *args], env=clean_env(home), cwd=str(home), capture_output=True, text=True, timeout=timeout,
        preexec_fn=default_sigint,
    )


# ---------------------------------------------------------------------------------------
# server


class Server:
    def __init__(self, workdir, auth_key=None, extra_args=(), port=None):
        self.workdir = workdir
        self.auth_key = auth_key
        self.extra_args = list(extra_args)
        self.port = pick_free_port() if port is None else port  # given: --listen names it too
        self.log_path = workdir / "twistd.log"
        self.proc = None

    @property
    def url(self):
        return f"http://{DOMAIN}:{self.port}"

    def host_for(self, name):
        return f"{name}.{DOMAIN}:{self.port}"

    def args(self):
        args = [TWISTD, "-n", "--pidfile=", "tpot", "--domain", DOMAIN, "--port", str(self.port)]
        if self.auth_key:
            args += ["--auth-key", self.auth_key]
        return args + self.extra_args

    def _stderr(self):
        """Where twistd's stderr goes: with its stdout, into the log."""
        return subprocess.STDOUT

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = start_process(self.args(), self.workdir, clean_env(self.workdir), self._log, self._stderr())
        if not wait_for_port(self.port, self.proc):
            self.stop()
            raise RuntimeError(f"twistd did not start listening on {self.port}:\n{self.log()}")
        # The port takes connections once listen() is done, a moment before twistd logs its
        # start-up line ("tpot ... serving ..."), which tests read: ready means both.
        if not wait_until(lambda: " serving " in self.log(), START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"twistd listens on {self.port} but logged no start-up line:\n{self.log()}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
        self._log.close()


def _server(tmp_path_factory, auth_key=None):
    server = Server(tmp_path_factory.mktemp("server"), auth_key)
    server.start()
    return server


@pytest.fixture
def free_port():
    return pick_free_port


@pytest.fixture
def server(tmp_path_factory):
    s = _server(tmp_path_factory)
    yield s
    s.stop()


@pytest.fixture
def auth_server(tmp_path_factory):
    s = _server(tmp_path_factory, AUTH_KEY)
    yield s
    s.stop()


@pytest.fixture
def server_factory(tmp_path_factory):
    """A factory: server_factory("--max-tunnels", "2", auth_key=None, port=None) -> a started Server."""
    started = []

    def start(*extra_args, auth_key=None, port=None):
        s = Server(tmp_path_factory.mktemp("server"), auth_key, extra_args, port)
        started.append(s)
        s.start()
        return s

    yield start
    for s in started:
        s.stop()


# ---------------------------------------------------------------------------------------
# target


class TargetHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "e2e-target"

    def log_message(self, *args):
        pass

    def _answer(self, body, status=200, content_type="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def finish(self):
        """The connection is over (the client closed it, or we did)."""
        try:
            super().finish()
        finally:
            token = getattr(self, "token", None)
            if token is not None:
                self.server.connection_closed(token).set()

    def _read_body(self, pace=0.0):
        """The request body, following Content-Length or (decoded by hand) chunked."""
        codings = [t.strip().lower() for t in self.headers.get("Transfer-Encoding", "").split(",") if t.strip()]
        if codings:
            if codings != ["chunked"]:
                raise ValueError(f"unsupported transfer coding {codings}")
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                if self.rfile.read(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
        length = int(self.headers.get("Content-Length", "0"))
        if not pace:
            return self.rfile.read(length)
        parts = []
        while length > 0:  # a slow reader: the tunnel has to hold the rest back
            time.sleep(pace)
            part = self.rfile.read(min(length, 65536))
            if not part:
                break
            parts.append(part)
            length -= len(part)
        return b"".join(parts)

    def _hash_stream(self, query):
        """POST /hashstream?rate=BYTES_PER_S&slow=SECONDS: hash a Content-Length body as it
        comes, reading at most `rate` bytes/s for the first `slow` seconds, then at full
        speed; answers "SHA256 LENGTH"."""
        rate = float(query.get("rate", ["0"])[0])
        slow_until = time.monotonic() + float(query.get("slow", ["0"])[0])
        length = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        received = 0
        started = time.monotonic()
        while received < length:
            if rate and time.monotonic() < slow_until:
                part = self.rfile.read1(min(length - received, 16384))
                ahead = started + (received + len(part)) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            else:
                part = self.rfile.read1(min(length - received, 1 << 20))
            if not part:
                break
            digest.update(part)
            received += len(part)
        self._answer(f"{digest.hexdigest()} {received}")

    def do_GET(self):
        self.server.record(self)
        url = urlsplit(self.path)
        if url.path.startswith("/bytes/"):
            n = int(url.path[len("/bytes/"):])
            seed = int(parse_qs(url.query).get("seed", ["0"])[0])
            self._answer(expected_bytes(n, seed), content_type="application/octet-stream")
        elif url.path.startswith("/stream/"):
            # Like /bytes/, generated on the fly: large downloads without holding them.
            n = int(url.path[len("/stream/"):])
            seed = int(parse_qs(url.query).get("seed", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            for piece in stream_chunks(n, seed):
                self.wfile.write(piece)
        elif url.path.startswith("/die/"):
            # Promises N bytes, sends half, then the target "dies" mid-response.
            n = int(url.path[len("/die/"):])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            self.wfile.write(expected_bytes(n // 2, 7))
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif url.path == "/host":
            self._answer(self.headers.get("Host", ""))
        elif url.path == "/xff":
            self._answer(", ".join(self.headers.get_all("X-Forwarded-For") or []))
        elif url.path == "/sleep":
            time.sleep(float(parse_qs(url.query).get("s", ["1"])[0]))
            self._answer("slept")
        else:
            self._answer("ok")

    def do_POST(self):
        self.server.record(self)
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if "token" in query:
            self.token = query["token"][0]
        if url.path == "/hashstream":
            self._hash_stream(query)
            return
        body = self._read_body(float(query.get("pace", ["0"])[0]))
        if url.path == "/sha256":
            self._answer(f"{hashlib.sha256(body).hexdigest()} {len(body)}")
        else:
            self._answer("ok")


class Target(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 60 concurrent connections must not overflow the backlog

    def __init__(self, port=0):
        super().__init__((HOST, port), TargetHandler)
        self.hosts = []
        self.lock = threading.Lock()
        self._closed = {}

    def handle_error(self, request, client_address):
        # A client killed at teardown resets its target connections; that is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def connection_closed(self, token):
        """An Event set when the connection that sent `?token=TOKEN` is closed."""
        with self.lock:
            return self._closed.setdefault(token, threading.Event())

    @property
    def port(self):
        return self.server_address[1]

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    def record(self, handler):
        with self.lock:
            self.hosts.append(handler.headers.get("Host"))


@pytest.fixture(scope="session")
def target():
    yield from serving(Target())


@pytest.fixture
def two_targets():
    """Two targets of their own, to tell which member of a pool served a visitor."""
    first, second = Target(), Target()
    for _ in serving(first):
        yield from ((first, second) for _ in serving(second))


def spread(port, name, targets, count, source=HOST, workers=4):
    """Send `count` visitors of NAME to `port` (one GET each, on a new connection from
    `source`), checking every answer; how many requests each of `targets` took meanwhile."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    before = [len(target.hosts) for target in targets]

    def one(i):
        connection = http.client.HTTPConnection(HOST, port, timeout=IO_TIMEOUT, source_address=(source, 0))
        try:
            connection.request("GET", f"/bytes/1000?seed={i}", headers={"Host": f"{name}.{DOMAIN}:{port}"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert (response.status, body) == (200, expected_bytes(1000, i)), (i, response.status, body[:200])

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return [len(target.hosts) - earlier for target, earlier in zip(targets, before)]


# ---------------------------------------------------------------------------------------
# client


class Client:
    """A running `tpot` (or `command`, another client taking the same arguments) whose
    stdout lines are read by a thread and can be awaited."""

    def __init__(self, args, home, command=(TPOT,)):
        self.stderr_path = home / f"client-{time.monotonic_ns()}.err"
        with open(self.stderr_path, "wb") as err:
            self.proc = start_process(
                [*command, *args], home, clean_env(home), subprocess.PIPE, err, text=True, encoding="utf-8"
            )
        self.lines = queue.Queue()
        self.seen = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def next_line(self, timeout):
        """The next stdout line within `timeout` s, or None (also at EOF)."""
        try:
            line = self.lines.get(timeout=max(0.01, timeout))
        except queue.Empty:
            return None
        if line is not None:
            self.seen.append(line)
        return line

    def log_lines(self, count, timeout=IO_TIMEOUT):
        """The next `count` lines (fewer if they do not come within `timeout` s)."""
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            line = self.next_line(deadline - time.monotonic())
            if line is None:
                break
            got.append(line)
        return got

    def new_lines(self, within):
        """Every stdout line printed during the next `within` seconds."""
        return self.log_lines(float("inf"), within)

    def wait_stderr(self, words, timeout):
        return wait_until(lambda: words in self.stderr(), timeout)

    def describe(self):
        return f"stdout={self.seen!r} rc={self.proc.poll()} stderr={self.stderr()!r}"

    def stop(self, sig=signal.SIGTERM):
        stop_process(self.proc, sig)
        self.reader.join(STOP_TIMEOUT)  # EOF once the process is gone
        if not self.reader.is_alive():
            self.proc.stdout.close()


def start_connected(args, home, timeout=CLIENT_TIMEOUT, server=None, command=(TPOT,)):
    """Start `tpot ARGS` and wait (bounded) for "tpot connected" and the URL on stdout, and
    for ours the Forwarding line (`PUBLIC -> TARGET`, the client's `forwarding`).

    Our `tpot http` serves its inspector on a free port of its own (several clients run at
    once here), unless ARGS say otherwise; its address, printed after the URL (and the
    pool line), is the client's `inspector_url`.
    """
    inspected = command == (TPOT,) and args[0] == "http" and not any(
        arg.startswith("--inspect") or arg == "--no-inspect" for arg in args)
    if inspected:
        args = [*args, "--inspect", f"{HOST}:0"]
    client = Client(args, home, command)
    got = client.log_lines(2, timeout)
    if len(got) < 2 or got[0] != "tpot connected":
        client.stop(signal.SIGKILL)
        server_log = f"\nserver log:\n{server.log()}" if server is not None else ""
        raise RuntimeError(f"client did not connect: {client.describe()}{server_log}")
    client.url = got[1]
    client.forwarding = None
    if command == (TPOT,) and args[0] == "http":
        # Ours says next where traffic goes, as ngrok does (the reference client does not).
        line = client.next_line(IO_TIMEOUT)
        if line is None or not line.startswith("Forwarding "):
            client.stop(signal.SIGKILL)
            raise RuntimeError(f"client did not print the Forwarding line: {client.describe()}")
        client.forwarding = line[len("Forwarding "):]
    client.inspector_url = None
    # Line by line: the request log that follows must not be waited for, nor read here.
    for _ in range(2 if inspected or "--inspect" in args else 0):
        line = client.next_line(IO_TIMEOUT)
        if line is None:
            break
        if line.startswith("inspector: "):
            client.inspector_url = line[len("inspector: "):]
            break
    if inspected and client.inspector_url is None:
        client.stop(signal.SIGKILL)
        raise RuntimeError(f"client did not print its inspector's address: {client.describe()}")
    return client


def start_client(server, target_address, home, name=None, extra=(), timeout=CLIENT_TIMEOUT):
    args = ["http", target_address, "-t", server.url]
    if name:
        args += ["-s", name]
    return start_connected([*args, *extra], home, timeout, server)


@pytest.fixture
def tpot_client(tmp_path):
    """A factory: tpot_client(server, target_address, name=None, extra=()) -> Client."""
    started = []

    def start(server, target_address, name=None, extra=()):
        client = start_client(server, target_address, tmp_path, name, extra)
        started.append(client)
        return client

    yield start
    for client in started:
        client.stop()


@pytest.fixture
def tunnel(server, target, tpot_client):
    """A connected client named `demo` exposing the target through `server`."""
    client = tpot_client(server, target.address, name="demo")
    assert client.url == f"http://demo.{DOMAIN}:{server.port}"
    return client
