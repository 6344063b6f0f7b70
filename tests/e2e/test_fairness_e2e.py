"""One conversation cannot hurt the others of its tunnel: a bulk transfer does not starve
small requests, and a target dying mid-response closes only its own visitor.  Nor can one
tunnel hurt the others: a flood of tiny valid messages leaves another tunnel's requests fast,
and the flooding tunnel is closed with 4429."""

import contextlib
import hashlib
import socket
import struct
import threading
import time

from .conftest import DOMAIN, read_to_eof, stream_sha256

HOST = "127.0.0.1"
BULK = 200 * 1024 * 1024


def fetch(port, name, path, timeout=20.0):
    """(status line, body bytes, seconds) of one request on its own connection."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}.{DOMAIN}:{port}\r\nConnection: close\r\n\r\n".encode())
        answer = read_to_eof(sock, tolerate_reset=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body, time.monotonic() - started


def test_bulk_download_does_not_starve_small_requests(server, target, tpot_client):
    tpot_client(server, target.address, name="fair")
    bulk = {}

    def download():
        digest = hashlib.sha256()
        with socket.create_connection((HOST, server.port), timeout=60) as sock:
            sock.sendall(f"GET /stream/{BULK}?seed=3 HTTP/1.1\r\nHost: fair.{DOMAIN}:{server.port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            digest.update(data.partition(b"\r\n\r\n")[2])
            while chunk := sock.recv(1 << 16):
                digest.update(chunk)
                # At least 3 s for the whole (3200 reads), however fast the machine: still a
                # bulk transfer that fills the tunnel, which has to hold the rest back.
                time.sleep(0.001)
        bulk["sha"] = digest.hexdigest()

    def download_or_say_why():
        try:
            download()
        except Exception as error:
            bulk["error"] = repr(error)

    thread = threading.Thread(target=download_or_say_why)
    thread.start()
    time.sleep(0.5)  # the bulk transfer is in full flow
    slowest = 0.0
    for _ in range(20):
        status, body, seconds = fetch(server.port, "fair", "/host")
        assert status.endswith(b"200 OK") and body
        slowest = max(slowest, seconds)
    still_running = thread.is_alive()
    thread.join(60)
    print(f"slowest small request during a {BULK >> 20} MiB download: {slowest * 1000:.0f} ms")
    assert still_running, f"the bulk download ended before the small requests: {bulk}"
    assert slowest < 1.0
    assert bulk["sha"] == stream_sha256(BULK, 3)


def test_target_dying_mid_response_closes_only_that_visitor(server, target, tpot_client):
    tpot_client(server, target.address, name="dies")
    results = {}

    def bystander():
        results["bystander"] = fetch(server.port, "dies", "/bytes/3000000?seed=5")

    thread = threading.Thread(target=bystander)
    thread.start()
    status, body, seconds = fetch(server.port, "dies", "/die/2000000")
    thread.join(30)
    assert status.endswith(b"200 OK")
    assert len(body) == 1000000  # what the target sent before dying, then the close
    assert seconds < 5
    bystander_status, bystander_body, _ = results["bystander"]
    assert bystander_status.endswith(b"200 OK") and len(bystander_body) == 3000000
    # The tunnel itself is untouched.
    assert fetch(server.port, "dies", "/host")[0].endswith(b"200 OK")


CLOSE_TOO_MANY_MESSAGES = 4429


def idle_flood(frames_per_blob=6000):
    """Masked client frames of valid TPoT/1 messages that relay nothing: pause, resume, close
    and one-byte data, all for ids the server never opened."""
    from .test_hardening_e2e import frame

    messages = []
    for i in range(frames_per_blob):
        conversation = struct.pack("<H", 30000 + i % 2000)
        messages.append(b"\x12" + conversation + (b"P", b"C", b"X", b"D.")[i % 4])
    return b"".join(frame(0x2, message) for message in messages), len(messages)


class Flooder:
    """A hostile tunnel: a raw WebSocket that sends `idle_flood` as fast as the server takes it."""

    def __init__(self, server, name="flood"):
        from .test_hardening_e2e import RawTunnel

        self.tunnel = RawTunnel(server, name)
        assert self.tunnel.status == 101
        self.blob, self.per_blob = idle_flood()
        self.sent = 0  # messages
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.stop.is_set():
                self.tunnel.sock.sendall(self.blob)
                self.sent += self.per_blob
        except OSError as error:  # the server closed it
            self.error = error

    def __enter__(self):
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        with contextlib.suppress(OSError):
            self.tunnel.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.tunnel.sock.close()

    def rate(self):
        return self.sent / (time.monotonic() - self.started)


def timed_requests(port, name, count, deadline):
    """The seconds each of up to `count` small requests took, one after another."""
    timings = []
    while len(timings) < count and time.monotonic() < deadline:
        status, body, seconds = fetch(port, name, f"/bytes/1000?seed={len(timings)}")
        assert status.endswith(b"200 OK") and len(body) == 1000, status
        timings.append(seconds)
    return timings


def summary(timings):
    ordered = sorted(timings)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], ordered[-1]


def test_a_tunnel_flooding_idle_messages_does_not_slow_another_and_is_closed(server, target, tunnel):
    before = timed_requests(server.port, "demo", 20, time.monotonic() + 20)
    median, p99, slowest = summary(before)
    print(f"[flood] before: median {median * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {slowest * 1000:.1f} ms")
    with Flooder(server) as flooder:
        time.sleep(0.5)  # the flood is in full flow
        during = timed_requests(server.port, "demo", 50, time.monotonic() + 30)
        median, p99, slowest = summary(during)
        print(f"[flood] during ({flooder.rate():.0f} messages/s offered): median {median * 1000:.1f} ms,"
              f" p99 {p99 * 1000:.1f} ms, max {slowest * 1000:.1f} ms over {len(during)} requests")
        assert len(during) == 50
        assert p99 < 0.150, sorted(during)[-5:]
        # Kept up, the flood gets its tunnel closed (4429) once its patience (10 s) is spent.
        flooder.tunnel.sock.settimeout(30)
        code, reason = flooder.tunnel.read_close()
        print(f"[flood] closed after {time.monotonic() - flooder.started:.1f} s: {code} {reason!r}")
        assert code == CLOSE_TOO_MANY_MESSAGES and reason
    status, body, _ = fetch(server.port, "demo", "/bytes/1000?seed=9")
    assert status.endswith(b"200 OK") and len(body) == 1000
    assert "Traceback" not in server.log()
