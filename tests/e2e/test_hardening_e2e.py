"""End-to-end hardening: real twistd servers, real `tpot` clients and raw sockets on 127.0.0.1.

Slow heads (408, and nobody else waits for them), oversized heads (431), malformed and
oversized WebSocket messages (4180, only that tunnel), a client killed mid-download, the
tunnel and per-address limits, the authentication rate limit, churn leaving /api/status at
zero, and memory staying flat while a visitor or a target reads slowly.
"""

import base64
import contextlib
import functools
import hashlib
import http.client
import json
import os
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tpot.protocol import auth

from . import conftest
from .conftest import (
    AUTH_KEY,
    DOMAIN,
    HOST,
    expected_bytes,
    raise_nofile_limit,
    status_of,
    stream_chunks,
    stream_sha256,
)

pytestmark = pytest.mark.timeout(120)

IO_TIMEOUT = 20.0
MiB = 1024 * 1024
CLOSE_PROTOCOL_ERROR = 4180


# ---------------------------------------------------------------------------------------
# helpers


def http_visit(server, name, method, path, body=None, headers=None, timeout=IO_TIMEOUT):
    """One request on a new connection as a visitor of tunnel `name`: (status, headers, body)."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=timeout)
    try:
        headers = dict(headers or {})
        headers.setdefault("Host", server.host_for(name))
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


def read_to_eof(sock):
    # Refused connections here may be reset rather than closed.
    return conftest.read_to_eof(sock, tolerate_reset=True)


raw = functools.partial(conftest.raw, timeout=IO_TIMEOUT, tolerate_reset=True)


def header_of(answer, name):
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def body_of(answer):
    return answer.partition(b"\r\n\r\n")[2]


def upgrade_request(server, name=None, headers=()):
    lines = [
        f"GET /create-tpot{f'?subdomain={name}' if name else ''} HTTP/1.1",
        f"Host: {DOMAIN}:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{key}: {value}" for key, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def api_status(server):
    answer = raw(server.port, f"GET /api/status HTTP/1.1\r\nHost: {DOMAIN}:{server.port}\r\n\r\n".encode())
    assert status_of(answer) == 200, answer
    return json.loads(body_of(answer))


def wait_for_status(server, timeout=5.0, **expected):
    """Poll /api/status until the given counts hold; the last document either way."""
    deadline = time.monotonic() + timeout
    while True:
        document = api_status(server)
        if all(document[key] == value for key, value in expected.items()):
            return document
        if time.monotonic() > deadline:
            return document
        time.sleep(0.1)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def mask(payload, key):
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def frame(opcode, payload=b"", fin=True):
    """A masked client frame (RFC 6455, 5.2)."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    key = os.urandom(4)
    return header + key + mask(payload, key)


class RawTunnel:
    """A minimal WebSocket client for /create-tpot over a plain socket."""

    def __init__(self, server, name=None, headers=(), timeout=IO_TIMEOUT):
        self.sock = socket.create_connection((HOST, server.port), timeout=timeout)
        self.sock.sendall(upgrade_request(server, name, headers))
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n")
        self.head = head
        self.status = status_of(head)
        self.name = None
        if self.status == 101:
            opcode, payload = self.read_frame()
            assert opcode == 0x2 and payload.startswith(b"\x11GTPoT/1 "), (opcode, payload)
            self.name = payload[len(b"\x11GTPoT/1 "):].decode()
        else:
            self.body = self.buffer + read_to_eof(self.sock)
            self.sock.close()

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buffer += chunk

    def _read_until(self, marker):
        while marker not in self.buffer:
            self._recv()
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def _take(self, n):
        while len(self.buffer) < n:
            self._recv()
        taken, self.buffer = self.buffer[:n], self.buffer[n:]
        return taken

    def read_frame(self):
        first, second = self._take(2)
        assert not second & 0x80, "the server masked a frame"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(length)

    def send(self, opcode, payload, fin=True):
        self.sock.sendall(frame(opcode, payload, fin))

    def read_close(self):
        """Frames until a close frame (pings answered, messages kept): (code, reason)."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode("utf-8")
            if opcode == 0x9:
                self.send(0xA, payload)

    def close(self, code=1000):
        """A clean close: our close frame, the server's reply, then the server closes TCP."""
        self.send(0x8, struct.pack("!H", code))
        reply = self.read_close()
        self.wait_eof()
        return reply

    def wait_eof(self, timeout=IO_TIMEOUT):
        self.sock.settimeout(timeout)
        rest = read_to_eof(self.sock)
        self.sock.close()
        return rest

    def abort(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@contextlib.contextmanager
def diagnosed(server, client=None):
    """A connection error in the block fails the test with the server's and client's logs."""
    try:
        yield
    except OSError as error:
        logs = f"server log:\n{server.log()[-4000:]}"
        if client is not None:
            logs += f"\nclient stderr:\n{client.stderr()[-4000:]}"
        pytest.fail(f"{error!r}\n{logs}")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def max_open_files(pid):
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return float("inf") if soft == "unlimited" else int(soft)
    raise AssertionError(f"no open-file limit for {pid}")


class RssSampler:
    """Samples VmRSS of some processes every 20 ms in a thread; `phase` labels the samples."""

    def __init__(self, **pids):
        self.pids = pids
        self.base = {name: rss_kb(pid) for name, pid in pids.items()}
        self.peak = {}  # (phase, name) -> KiB
        self.phase = "slow"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def sample(self):
        for name, pid in self.pids.items():
            key = (self.phase, name)
            self.peak[key] = max(self.peak.get(key, 0), rss_kb(pid))

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.02)

    def growth_mb(self, phase, name):
        return (self.peak[(phase, name)] - self.base[name]) / 1024

    def report(self, what):
        for name in self.pids:
            parts = [f"base {self.base[name] / 1024:.1f} MiB"]
            for phase in ("slow", "fast"):
                if (phase, name) in self.peak:
                    parts.append(f"{phase} peak {self.peak[(phase, name)] / 1024:.1f} MiB "
                                 f"(+{self.growth_mb(phase, name):.1f})")
            print(f"[rss] {what}: {name}: " + ", ".join(parts))


# ---------------------------------------------------------------------------------------
# 1. slow heads


SLOW_HEADS = 1000
BATCH = 40
HEADER_TIMEOUT = 2.0


@pytest.fixture
def many_files():
    limit = raise_nofile_limit()
    needed = 2 * SLOW_HEADS + 500  # our ends of the sockets, plus everything else
    assert limit >= needed, f"RLIMIT_NOFILE hard limit {limit} is below the {needed} this test needs"
    return limit


def test_slow_heads_delay_nobody_and_get_408(many_files, server_factory, target, tpot_client):
    server = server_factory("--header-timeout", str(HEADER_TIMEOUT))
    assert max_open_files(server.proc.pid) >= 2 * SLOW_HEADS + 500
    tpot_client(server, target.address, name="demo")
    assert http_visit(server, "demo", "GET", "/host")[0] == 200

    socks, opened = [], []
    answers = [b""] * SLOW_HEADS
    closed_at = [None] * SLOW_HEADS
    selector = selectors.DefaultSelector()

    def poll(timeout):
        """Read whatever the server sent the slow connections; note when each is closed."""
        for key, _ in selector.select(timeout=timeout):
            index = key.data
            try:
                chunk = key.fileobj.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                answers[index] += chunk
            else:
                closed_at[index] = time.monotonic()
                selector.unregister(key.fileobj)

    try:
        # In batches below Twisted's default listen backlog (50), so that no SYN is dropped
        # and retried a second later, which would blur the timings below.
        for start in range(0, SLOW_HEADS, BATCH):
            batch = []
            for index in range(start, min(start + BATCH, SLOW_HEADS)):
                sock = socket.create_connection((HOST, server.port), timeout=5)
                sock.sendall(b"GET /sl")  # a few bytes...
                opened.append(time.monotonic())
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, index)
                socks.append(sock)
                batch.append(sock)
            poll(0.02)
            for sock in batch:
                sock.sendall(b"ow HTTP/1.1\r\nHo")  # ...a few more, then nothing
        all_open = time.monotonic()
        print(f"[slow heads] {SLOW_HEADS} connections opened in {all_open - opened[0]:.2f} s")
        assert all(closed is None for closed in closed_at), "closed before the header timeout"

        # While they all wait, a normal request through the tunnel is served at once.
        timings = []
        for i in range(10):
            started = time.monotonic()
            status, _, body = http_visit(server, "demo", "GET", f"/bytes/1000?seed={i}")
            timings.append(time.monotonic() - started)
            assert status == 200 and body == expected_bytes(1000, i)
        served_by = time.monotonic()
        print(f"[slow heads] requests while they wait: max {max(timings) * 1000:.1f} ms, "
              f"median {sorted(timings)[len(timings) // 2] * 1000:.1f} ms")
        assert max(timings) < 1.0, timings
        assert served_by < opened[0] + HEADER_TIMEOUT, "the requests were not made while every head was pending"

        # Then every slow connection gets its 408 and is closed, after ~2 s and by ~4 s.
        deadline = all_open + HEADER_TIMEOUT + 6
        while any(closed is None for closed in closed_at) and time.monotonic() < deadline:
            poll(0.2)
    finally:
        selector.close()
        for sock in socks:
            sock.close()

    remaining = sum(closed is None for closed in closed_at)
    assert remaining == 0, f"{remaining} slow connections still open {HEADER_TIMEOUT + 6} s after opening"
    statuses = {status_of(answer) if answer else None for answer in answers}
    assert statuses == {408}, statuses
    waited = [closed - start for closed, start in zip(closed_at, opened)]
    print(f"[slow heads] closed after {min(waited):.2f}..{max(waited):.2f} s (header timeout {HEADER_TIMEOUT} s)")
    assert min(waited) >= HEADER_TIMEOUT - 0.1
    assert max(waited) <= HEADER_TIMEOUT + 2.5
    # And the server is none the worse for it.
    assert http_visit(server, "demo", "GET", "/host")[0] == 200
    document = wait_for_status(server, tunnels=1, conversations=0)
    assert (document["tunnels"], document["conversations"]) == (1, 0)


# ---------------------------------------------------------------------------------------
# 2. oversized head


def filler_headers(total):
    lines, size, i = [], 0, 0
    while size < total:
        line = f"X-Filler-{i}: {'a' * 90}\r\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines)


@pytest.mark.parametrize("complete", [True, False], ids=["complete", "unterminated"])
def test_oversized_head_is_431_and_closed(server, tunnel, target, complete):
    head = f"GET /host HTTP/1.1\r\nHost: {server.host_for('demo')}\r\n" + filler_headers(9000)
    if complete:
        head += "\r\n"
    assert 9000 < len(head) < 9300
    before = len(target.hosts)
    answer = raw(server.port, head.encode())  # read to EOF: the server closes
    assert status_of(answer) == 431, answer[:300]
    assert header_of(answer, "connection") == "close"
    assert int(header_of(answer, "content-length")) == len(body_of(answer))
    assert b"8 KiB" in body_of(answer)
    assert len(target.hosts) == before, "the oversized head reached the target"
    assert http_visit(server, "demo", "GET", "/host")[0] == 200


# ---------------------------------------------------------------------------------------
# 3. malformed messages from a raw WebSocket client


MALFORMED = [
    ("unknown type", 0x2, b"\x13\x01\x00Dhello"),
    ("truncated", 0x2, b"\x12\x01"),
    ("text frame", 0x1, b"\x12\x01\x00Dhello"),
    ("empty", 0x2, b""),
    ("trailing bytes", 0x2, b"\x12\x01\x00Xjunk"),
    ("control from the client", 0x2, b"\x11GTPoT/1 evil"),
    ("frame over 1 MiB", 0x2, b"\x12\x01\x00D" + b"x" * MiB),
]


def paced_download(server, name, size, seed, rate, result):
    """GET /stream/SIZE through `name`, read at about `rate` bytes/s; result gets (status, n, sha)."""
    with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(f"GET /stream/{size}?seed={seed} HTTP/1.1\r\nHost: {server.host_for(name)}\r\n"
                     "Connection: close\r\n\r\n".encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, body = buffer.partition(b"\r\n\r\n")
        digest, received = hashlib.sha256(body), len(body)
        started = time.monotonic()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
            ahead = started + received / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    result.append((status_of(head), received, digest.hexdigest()))


def test_malformed_messages_close_only_that_tunnel_with_4180(server, target, tunnel):
    bad = [RawTunnel(server, f"bad{i}") for i in range(len(MALFORMED))]
    assert all(t.status == 101 for t in bad)
    # A visitor of each bad tunnel, waiting for an answer that will not come.
    waiting = []
    for t in bad:
        sock = socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT)
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {server.host_for(t.name)}\r\n\r\n".encode())
        waiting.append(sock)
        opcode, payload = t.read_frame()
        assert opcode == 0x2 and payload.startswith(b"\x11H"), payload

    size, seed = 40 * MiB, 3
    result = []
    download = threading.Thread(target=paced_download, args=(server, "demo", size, seed, 20 * MiB, result))
    download.start()
    try:
        time.sleep(0.3)  # the download is under way
        for (kind, opcode, payload), t in zip(MALFORMED, bad):
            t.send(opcode, payload)
            code, reason = t.read_close()
            assert code == CLOSE_PROTOCOL_ERROR, (kind, code, reason)
            assert reason.strip(), kind
            print(f"[4180] {kind}: {reason!r}")
            t.send(0x8, struct.pack("!H", CLOSE_PROTOCOL_ERROR))
            t.wait_eof(5)
        for (kind, _, _), sock in zip(MALFORMED, waiting):
            answer = read_to_eof(sock)
            sock.close()
            assert status_of(answer) == 503, (kind, answer[:200])
        assert download.is_alive(), "the download finished before the bad tunnels were closed"
    finally:
        download.join(60)
    assert result and result[0] == (200, size, stream_sha256(size, seed))

    # The names are free, the good tunnel still serves, nothing is left counted.
    for i in range(len(MALFORMED)):
        answer = raw(server.port, f"GET / HTTP/1.1\r\nHost: {server.host_for(f'bad{i}')}\r\n\r\n".encode())
        assert status_of(answer) == 503
    status, _, body = http_visit(server, "demo", "GET", f"/bytes/{MiB}?seed=4")
    assert status == 200 and body == expected_bytes(MiB, 4)
    document = wait_for_status(server, tunnels=1, conversations=0)
    assert (document["tunnels"], document["conversations"]) == (1, 0)
    assert "Traceback" not in server.log()


# ---------------------------------------------------------------------------------------
# 4. the client killed mid-transfer


def test_client_killed_mid_download_closes_the_visitor_within_a_second(server, target, tpot_client):
    client = tpot_client(server, target.address, name="victim")
    size = 4096 * MiB  # far more than can pass before the kill
    with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(f"GET /stream/{size}?seed=5 HTTP/1.1\r\nHost: {server.host_for('victim')}\r\n\r\n".encode())
        received = b""
        while len(received) < 8 * MiB:
            chunk = sock.recv(MiB)
            assert chunk, "closed before the kill"
            received += chunk
        assert status_of(received) == 200
        total = len(received)
        killed = time.monotonic()
        client.proc.kill()
        sock.settimeout(5)
        while True:
            try:
                chunk = sock.recv(MiB)
            except ConnectionResetError:
                break
            if not chunk:
                break
            total += len(chunk)
        closed_after = time.monotonic() - killed
    print(f"[kill] visitor closed {closed_after * 1000:.0f} ms after SIGKILL, {total / MiB:.0f} MiB received")
    assert closed_after < 1.0
    assert total < size
    client.proc.wait(5)

    started = time.monotonic()
    answer = raw(server.port, f"GET / HTTP/1.1\r\nHost: {server.host_for('victim')}\r\n\r\n".encode())
    elapsed = time.monotonic() - started
    assert status_of(answer) == 503, answer[:300]
    assert elapsed < 0.5, elapsed
    document = wait_for_status(server, tunnels=0, conversations=0)
    assert (document["tunnels"], document["conversations"]) == (0, 0)


# ---------------------------------------------------------------------------------------
# 5. limits


def test_max_tunnels(server_factory):
    server = server_factory("--max-tunnels", "2")
    one, two = RawTunnel(server, "one"), RawTunnel(server, "two")
    assert (one.status, two.status) == (101, 101)
    for name in ("three", None):
        third = RawTunnel(server, name)
        assert third.status == 503, third.head
        assert b"tunnel limit" in third.body
    # A tunnel leaving makes room again.
    one.close()
    deadline = time.monotonic() + 3
    while True:
        third = RawTunnel(server, "three")
        if third.status == 101:
            break
        assert time.monotonic() < deadline, "the closed tunnel still counts"
        time.sleep(0.05)
    assert RawTunnel(server, "four").status == 503
    assert api_status(server)["tunnels"] == 2
    two.abort()
    third.abort()
    document = wait_for_status(server, tunnels=0)
    assert document["tunnels"] == 0


def test_max_connections_per_ip(server_factory):
    server = server_factory("--max-connections-per-ip", "5")
    tunnel = RawTunnel(server, "one")  # handed over to the WebSocket: still counted
    assert tunnel.status == 101
    idle = []
    for _ in range(4):
        sock = socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT)
        sock.sendall(b"GET / HT")
        idle.append(sock)
    try:
        for _ in range(2):
            started = time.monotonic()
            answer = raw(server.port, b"")  # refused as soon as it connects
            assert status_of(answer) == 429, answer
            assert time.monotonic() - started < 1.0
            assert header_of(answer, "connection") == "close"
        # Closing the handed-over tunnel frees its slot.
        tunnel.abort()
        deadline = time.monotonic() + 3
        while True:
            answer = raw(server.port, f"GET /api/status HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
            if status_of(answer) == 200:
                break
            assert status_of(answer) == 429
            assert time.monotonic() < deadline, "the closed tunnel's connection still counts"
            time.sleep(0.05)
        assert json.loads(body_of(answer))["tunnels"] == 0
    finally:
        for sock in idle:
            sock.close()
    # All gone: five at once are fine again.
    time.sleep(0.2)
    socks = [socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) for _ in range(5)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n")
        assert {status_of(read_to_eof(sock)) for sock in socks} == {404}
    finally:
        for sock in socks:
            sock.close()


# ---------------------------------------------------------------------------------------
# 6. authentication rate limit


def test_bad_keys_are_rate_limited_with_retry_after(auth_server):
    statuses = []
    for _ in range(6):
        bad = auth.make_authorization("W" * 40)
        answer = raw(auth_server.port, upgrade_request(auth_server, "guess", [("Authorization", bad)]))
        statuses.append(status_of(answer))
    assert statuses == [401] * 5 + [429]
    retry_after = header_of(answer, "retry-after")
    assert retry_after is not None and retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after
    assert header_of(answer, "connection") == "close"
    # From this address even the right key waits now.
    good = auth.make_authorization(AUTH_KEY)
    answer = raw(auth_server.port, upgrade_request(auth_server, "guess", [("Authorization", good)]))
    assert status_of(answer) == 429


# ---------------------------------------------------------------------------------------
# 7. churn


def test_churn_leaves_status_at_zero(server, target, tunnel):
    def tunnel_life(i):
        t = RawTunnel(server, f"churn{i}")
        assert t.status == 101, t.head
        if i % 3 == 0:
            t.close()
        elif i % 3 == 1:
            t.abort()
        else:
            t.sock.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(tunnel_life, range(100), timeout=60))

    def visitor(i):
        kind = i % 5
        if kind == 4:  # the target closes first (Connection: close), so the client says X first
            answer = raw(server.port, f"GET /host HTTP/1.1\r\nHost: {server.host_for('demo')}\r\n"
                                      "Connection: close\r\n\r\n".encode())
            assert status_of(answer) == 200 and body_of(answer).decode() == target.address
        elif kind == 0:
            status, _, body = http_visit(server, "demo", "GET", "/host")
            assert status == 200 and body.decode() == target.address
        elif kind == 1:
            payload = expected_bytes(2000, i)
            status, _, body = http_visit(server, "demo", "POST", "/sha256", body=payload)
            assert status == 200 and body.decode() == f"{sha(payload)} 2000"
        elif kind == 2:
            status, _, body = http_visit(server, "demo", "GET", f"/bytes/20000?seed={i}")
            assert status == 200 and body == expected_bytes(20000, i)
        else:  # leaves mid-download
            with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
                sock.sendall(f"GET /stream/{4 * MiB}?seed={i} HTTP/1.1\r\n"
                             f"Host: {server.host_for('demo')}\r\n\r\n".encode())
                assert sock.recv(1000)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(visitor, range(2000), timeout=90))
    print(f"[churn] 100 tunnels and 2000 visitors in {time.monotonic() - started:.1f} s (visitors)")

    document = wait_for_status(server, tunnels=1, conversations=0)
    assert (document["tunnels"], document["conversations"]) == (1, 0), document
    tunnel.stop()
    document = wait_for_status(server, tunnels=0, conversations=0)
    assert (document["tunnels"], document["conversations"]) == (0, 0), document
    assert "Traceback" not in server.log()


# ---------------------------------------------------------------------------------------
# 8. slow readers: memory stays flat


BIG = 300 * MiB
SLOW_RATE = 30 * MiB
SLOW_SECONDS = 3.0
RSS_BOUND_MB = 40


@pytest.mark.timeout(90)
def test_slow_reading_visitor_download_keeps_memory_bounded(server, target, tunnel):
    assert http_visit(server, "demo", "GET", f"/stream/{8 * MiB}?seed=1")[0] == 200  # warm up
    time.sleep(0.2)
    seed = 300
    with RssSampler(server=server.proc.pid, client=tunnel.proc.pid) as rss, \
            diagnosed(server, tunnel):
        with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(f"GET /stream/{BIG}?seed={seed} HTTP/1.1\r\nHost: {server.host_for('demo')}\r\n"
                         "Connection: close\r\n\r\n".encode())
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(16384)
            head, _, body = buffer.partition(b"\r\n\r\n")
            assert status_of(head) == 200
            digest, received = hashlib.sha256(body), len(body)
            started = time.monotonic()
            while time.monotonic() - started < SLOW_SECONDS:  # ~30 MB/s: small reads, then sleep
                chunk = sock.recv(16384)
                assert chunk
                digest.update(chunk)
                received += len(chunk)
                ahead = started + received / SLOW_RATE - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            rss.sample()
            slow_received = received
            rss.phase = "fast"
            while True:
                chunk = sock.recv(MiB)
                if not chunk:
                    break
                digest.update(chunk)
                received += len(chunk)
            rss.sample()
    rss.report("slow download")
    print(f"[rss] slow download: {slow_received / MiB:.0f} MiB in the slow phase, {received / MiB:.0f} MiB in all")
    assert received == BIG
    assert digest.hexdigest() == stream_sha256(BIG, seed)
    for name in ("server", "client"):
        assert rss.growth_mb("slow", name) < RSS_BOUND_MB, (name, rss.peak, rss.base)
        assert rss.growth_mb("fast", name) < RSS_BOUND_MB, (name, rss.peak, rss.base)


@pytest.mark.timeout(90)
def test_upload_to_a_slow_reading_target_keeps_memory_bounded(server, target, tunnel):
    status, _, body = http_visit(server, "demo", "POST", "/hashstream", body=b"w" * (8 * MiB))
    assert status == 200  # warm up
    time.sleep(0.2)
    seed = 301
    with RssSampler(server=server.proc.pid, client=tunnel.proc.pid) as rss, diagnosed(server, tunnel):
        with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(f"POST /hashstream?rate={SLOW_RATE}&slow={SLOW_SECONDS} HTTP/1.1\r\n"
                         f"Host: {server.host_for('demo')}\r\nContent-Length: {BIG}\r\n"
                         "Connection: close\r\n\r\n".encode())
            started = time.monotonic()
            sent = 0
            for piece in stream_chunks(BIG, seed):
                sock.sendall(piece)
                sent += len(piece)
                if rss.phase == "slow" and time.monotonic() - started >= SLOW_SECONDS:
                    rss.sample()
                    slow_sent = sent
                    rss.phase = "fast"
            answer = read_to_eof(sock)
            rss.sample()
    rss.report("slow upload")
    print(f"[rss] slow upload: {slow_sent / MiB:.0f} MiB sent in the slow phase")
    assert status_of(answer) == 200, answer[:300]
    assert body_of(answer).decode() == f"{stream_sha256(BIG, seed)} {BIG}"
    for name in ("server", "client"):
        assert rss.growth_mb("slow", name) < RSS_BOUND_MB, (name, rss.peak, rss.base)
        assert rss.growth_mb("fast", name) < RSS_BOUND_MB, (name, rss.peak, rss.base)


# ---------------------------------------------------------------------------------------
# 9. a client that makes the server hold memory: ignoring pause for many visitors, pinging
#    without reading


CLOSE_TOO_MUCH_UNACKED = 4009
GREEDY_VISITORS = 20
GREEDY_EACH = 15 * MiB  # just below the 16 MiB one conversation may be sent while paused
GREEDY_RSS_BOUND_MB = 120  # the tunnel's 64 MiB, and what relaying it costs; unbounded: ~290
PINGS_TOTAL = 100 * MiB
PING_RSS_BOUND_MB = 40


class FrameCollector(threading.Thread):
    """Reads a RawTunnel's frames in the background until its close frame or the end."""

    def __init__(self, tunnel):
        super().__init__(daemon=True)
        self.tunnel = tunnel
        self.close = None  # (code, reason)
        self.pauses = 0
        self.error = None

    def run(self):
        try:
            while True:
                opcode, payload = self.tunnel.read_frame()
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    self.close = (code, payload[2:].decode("utf-8"))
                    return
                if opcode == 0x2 and payload[:1] == b"\x12" and payload[3:4] == b"P":
                    self.pauses += 1
        except (OSError, EOFError) as error:
            self.error = error


@pytest.mark.timeout(120)
def test_a_client_ignoring_pause_for_many_visitors_is_cut_off_with_4009(server):
    greedy = RawTunnel(server, "greedy")
    assert greedy.status == 101
    visitors, ids = [], []
    for i in range(GREEDY_VISITORS):  # each sends a request, then never reads
        sock = socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT)
        sock.sendall(f"GET /{i} HTTP/1.1\r\nHost: {server.host_for('greedy')}\r\n\r\n".encode())
        visitors.append(sock)
        while True:
            opcode, payload = greedy.read_frame()
            if opcode == 0x2 and payload.startswith(b"\x11H"):
                ids.append(payload[2:4])
                break
    collector = FrameCollector(greedy)
    collector.start()
    piece = MiB - 4  # a whole message: TPoT head and data
    sent = {}
    time.sleep(0.2)
    with RssSampler(server=server.proc.pid) as rss, diagnosed(server):
        try:
            for conversation in ids:
                message = frame(0x2, b"\x12" + conversation + b"D" + b"g" * piece)
                for _ in range(GREEDY_EACH // piece):
                    if collector.close is not None:
                        break
                    greedy.sock.sendall(message)
                    sent[conversation] = sent.get(conversation, 0) + piece
        except OSError:
            pass  # the server dropped us after closing
        collector.join(IO_TIMEOUT)
        rss.sample()
    rss.report("greedy tunnel")
    total = sum(sent.values())
    print(f"[greedy] {total / MiB:.0f} MiB sent for {len(sent)} paused visitors, "
          f"{collector.pauses} pauses, closed with {collector.close}")
    assert collector.close is not None, f"the tunnel was not closed ({collector.error!r})"
    code, reason = collector.close
    assert code == CLOSE_TOO_MUCH_UNACKED and "64 MiB" in reason, collector.close
    assert rss.growth_mb("slow", "server") < GREEDY_RSS_BOUND_MB, (rss.peak, rss.base)
    # Every visitor is let go, the paused ones at once.
    for sock in visitors:
        sock.settimeout(10)
        read_to_eof(sock)
        sock.close()
    document = wait_for_status(server, tunnels=0, conversations=0)
    assert (document["tunnels"], document["conversations"]) == (0, 0), document
    assert "Traceback" not in server.log()


@pytest.mark.timeout(120)
def test_a_client_pinging_without_reading_is_not_read_and_dropped_when_silent(server):
    pinger = RawTunnel(server, "pinger")
    assert pinger.status == 101
    batch = frame(0x9, b"p" * 125) * 8000  # ~1 MiB of pings
    sent, blocked = 0, False
    pinger.sock.settimeout(3.0)
    time.sleep(0.2)
    started = time.monotonic()
    with RssSampler(server=server.proc.pid) as rss, diagnosed(server):
        try:
            while sent < PINGS_TOTAL and time.monotonic() - started < 60:
                pinger.sock.sendall(batch)
                sent += len(batch)
        except socket.timeout:
            blocked = True  # the server stopped reading: the rest stays in our socket
        stopped = time.monotonic()
        rss.sample()
        print(f"[pings] {sent / MiB:.1f} MiB of pings sent in {stopped - started:.1f} s before "
              f"{'the server stopped reading' if blocked else 'the end'}")
        rss.report("pings")
        assert blocked and sent < PINGS_TOTAL, "the server read every ping without its pong being read"
        assert rss.growth_mb("slow", "server") < PING_RSS_BOUND_MB, (rss.peak, rss.base)
        # Unread, it is silent: dropped after the liveness timeout (30 s) like any other.
        document = wait_for_status(server, timeout=40, tunnels=0)
    dropped = time.monotonic() - stopped
    print(f"[pings] dropped {dropped:.1f} s after the server stopped reading")
    assert document["tunnels"] == 0, document
    assert dropped < 35
    pinger.sock.close()


@pytest.mark.timeout(90)
def test_an_honest_client_with_many_visitors_that_never_read_is_not_cut_off(server, target, tunnel):
    # Our client stops within a round trip of each pause: what it has in flight stays far
    # below the tunnel's bound however many of its visitors stop reading.
    size = 64 * MiB
    with RssSampler(server=server.proc.pid) as rss, diagnosed(server, tunnel):
        visitors = []
        try:
            for i in range(GREEDY_VISITORS):
                sock = socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT)
                sock.sendall(f"GET /stream/{size}?seed={i} HTTP/1.1\r\nHost: {server.host_for('demo')}\r\n"
                             "Connection: close\r\n\r\n".encode())
                visitors.append(sock)
            time.sleep(3)  # every download under way, then stuck
            rss.sample()
            document = api_status(server)
            assert (document["tunnels"], document["conversations"]) == (1, GREEDY_VISITORS), document
            status, _, body = http_visit(server, "demo", "GET", f"/bytes/{MiB}?seed=7")
            assert status == 200 and body == expected_bytes(MiB, 7)
        finally:
            for sock in visitors:
                sock.close()
    rss.report("honest, visitors not reading")
    assert rss.growth_mb("slow", "server") < GREEDY_RSS_BOUND_MB, (rss.peak, rss.base)
    document = wait_for_status(server, tunnels=1, conversations=0)
    assert (document["tunnels"], document["conversations"]) == (1, 0), document
    assert "4009" not in tunnel.stderr() and "paused conversations" not in server.log()
