"""Server (and client) RSS with many idle tunnels, and with many idle visitor connections,
each on a fresh server."""

import base64
import os
import re
import select
import socket
import time

from bench.common import DOMAIN, HOST, SMALL_BODY, BenchError, log
from bench.logscan import scan_logs
from bench.procfs import rss_kb, settle_rss
from bench.services import Tunnel

OPEN_LIMIT = 120.0  # seconds for opening all the connections of one measurement


def ws_handshake(s, port, name):
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /create-tpot?subdomain={name} HTTP/1.1\r\nHost: {DOMAIN}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )


class Closed(OSError):
    """The peer closed the connection before the whole answer came."""


def recv_more(s, buf, what):
    chunk = s.recv(4096)
    if not chunk:
        raise Closed(f"closed {what}")
    return buf + chunk


def ws_read_greeting(s):
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 16384:
        buf = recv_more(s, buf, "during the handshake")
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 101"):
        raise OSError(f"handshake answered {status.decode(errors='replace')}")
    while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
        rest = recv_more(s, rest, "before the greeting")
    if rest[0] != 0x82 or rest[2:4] != b"\x11G":
        raise OSError(f"unexpected first message {rest[:16]!r}")


def ws_ping(s):
    s.sendall(b"\x89\x80" + os.urandom(4))  # masked, empty ping: keeps the tunnel from going silent


def read_response(s):
    """True if a complete 200 response with the 6-byte body arrives on s."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            buf = recv_more(s, buf, "before the head")
        head, _, body = buf.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while len(body) < (int(match.group(1)) if match else 0):
            body = recv_more(s, body, "before the body")
    except Closed:
        return False
    return head.startswith(b"HTTP/1.1 200") and body == SMALL_BODY


def expect_response(s):
    if not read_response(s):
        raise OSError("no complete 200 response")


def was_dropped(sock, websocket):
    """Whether an idle socket with something to read was closed by the other side.

    Visitors: anything at all counts. Tunnels: pongs are expected and read away; a close
    frame or EOF counts.
    """
    if not websocket:
        return True
    try:
        data = sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return not data or data[0] == 0x88


def count_dropped(socks, websocket=False):
    """How many of these idle sockets the other side closed (or, for visitors, sent anything on)."""
    by_fd = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return sum(was_dropped(by_fd[fd], websocket) for fd, _ in poller.poll(0))


class Opened:
    """Connections opened in batches: the ones that made it, how many did not, and the first reason."""

    def __init__(self, requested):
        self.requested = requested
        self.socks = []
        self.failures = 0
        self.first_error = None
        self.seconds = 0.0

    @property
    def tried(self):
        return len(self.socks) + self.failures

    def failed(self, error, sock=None):
        self.failures += 1
        self.first_error = self.first_error or str(error)
        if sock is not None:
            sock.close()

    def figures(self, dropped, rss_before, rss_after):
        return {
            "requested": self.requested, "opened": len(self.socks), "failures": self.failures,
            "first_error": self.first_error, "dropped_while_idle": dropped, "open_seconds": round(self.seconds, 2),
            "server_rss_kb_before": rss_before, "server_rss_kb_after": rss_after,
        }

    def per_connection(self, before, after):
        return (after - before) / len(self.socks) if self.socks else None

    def close(self):
        for s in self.socks:
            s.close()


def open_in_batches(port, count, batch, send, confirm):
    """`count` connections to `port`, `batch` at a time (each one's first bytes sent, then all
    of the batch confirmed), within OPEN_LIMIT s. send(sock, i) and confirm(sock) raise OSError."""
    opened = Opened(count)
    started = time.monotonic()
    while opened.tried < count and time.monotonic() < started + OPEN_LIMIT:
        pending = []
        for i in range(opened.tried, min(count, opened.tried + batch)):
            try:
                s = socket.create_connection((HOST, port), timeout=10)
            except OSError as error:
                opened.failed(error)
                continue
            try:
                send(s, i)
                pending.append(s)
            except OSError as error:
                opened.failed(error, s)
        for s in pending:
            try:
                confirm(s)
                opened.socks.append(s)
            except OSError as error:
                opened.failed(error, s)
    opened.seconds = time.monotonic() - started
    return opened


def memory_idle_tunnels(processes, tmp, bin_dir, count, out, logs):
    tunnel = Tunnel(processes, tmp, bin_dir, "mem-tunnels")
    opened = Opened(count)
    try:
        # Warm up: one tunnel opened and closed, so first-use allocations are in the baseline.
        with socket.create_connection((HOST, tunnel.port), timeout=10) as s:
            ws_handshake(s, tunnel.port, "warmup")
            ws_read_greeting(s)
        base = settle_rss(tunnel.server.pid)
        log(f"opening {count} idle tunnels (server RSS {base} KB)")
        opened = open_in_batches(tunnel.port, count, 50, lambda s, i: ws_handshake(s, tunnel.port, f"idle{i}"),
                                 ws_read_greeting)
        for s in opened.socks:
            ws_ping(s)
        after = settle_rss(tunnel.server.pid, 3.0)
        dropped = count_dropped(opened.socks, websocket=True)
        tunnel.check_alive()
        out["idle_tunnels"] = {**opened.figures(dropped, base, after),
                               "kb_per_tunnel": opened.per_connection(base, after)}
        log(f"idle tunnels: {len(opened.socks)} open, server RSS {base} -> {after} KB")
    finally:
        opened.close()
        logs["mem-tunnels"] = scan_logs(tunnel.log_processes())
        tunnel.stop()


def reusable(socks, request):
    """How many of a sample (at most 100) of these idle connections answer a second request; "N/M"."""
    sample = socks[:: max(1, len(socks) // 100)][:100]
    ok = 0
    for s in sample:
        try:
            s.sendall(request)
            ok += read_response(s)
        except OSError:
            pass
    return f"{ok}/{len(sample)}"


def warm_up(port, request, count=50):
    """`count` requests on one kept-alive connection, so first-use allocations are in the baseline."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        for _ in range(count):
            s.sendall(request)
            if not read_response(s):
                raise BenchError("warm-up request through the tunnel failed")


def memory_idle_visitors(processes, tmp, bin_dir, nginx, count, out, logs, request_log=False):
    tunnel = Tunnel(processes, tmp, bin_dir, "mem-visitors")
    opened = Opened(count)
    try:
        # Above the client's default cap (500 conversations), which this measures past.
        tunnel.connect_client(nginx.port, request_log, max_conversations=count + 100)
        request = f"GET /small HTTP/1.1\r\nHost: {tunnel.host}\r\n\r\n".encode()
        warm_up(tunnel.port, request)
        base_server, base_client = settle_rss(tunnel.server.pid), rss_kb(tunnel.client.pid)
        log(f"opening {count} idle visitor connections (server RSS {base_server} KB)")
        # Batches below the server's listen backlog (Twisted's default is 50).
        opened = open_in_batches(tunnel.port, count, 40, lambda s, i: s.sendall(request), expect_response)
        after_server, after_client = settle_rss(tunnel.server.pid, 3.0), rss_kb(tunnel.client.pid)
        dropped = count_dropped(opened.socks)
        reused = reusable(opened.socks, request)  # are they still usable?
        tunnel.check_alive()
        out["idle_visitors"] = {
            **opened.figures(dropped, base_server, after_server), "sample_reused_ok": reused,
            "client_rss_kb_before": base_client, "client_rss_kb_after": after_client,
            "kb_per_connection": opened.per_connection(base_server, after_server),
            "client_kb_per_connection": opened.per_connection(base_client, after_client),
        }
        log(f"idle visitors: {len(opened.socks)} open, server RSS {base_server} -> {after_server} KB")
    finally:
        opened.close()
        logs["mem-visitors"] = scan_logs(tunnel.log_processes())
        tunnel.stop()
