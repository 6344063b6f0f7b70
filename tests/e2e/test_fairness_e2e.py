"""One conversation cannot hurt the others of its tunnel: a bulk transfer does not starve
small requests, and a target dying mid-response closes only its own visitor."""

import hashlib
import socket
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
            while chunk := sock.recv(1 << 20):
                digest.update(chunk)
        bulk["sha"] = digest.hexdigest()

    thread = threading.Thread(target=download)
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
    assert still_running, "the bulk download ended before the small requests; make it bigger"
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
