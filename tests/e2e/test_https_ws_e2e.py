"""End-to-end: HTTPS targets (--insecure, --ca, an untrusted certificate) and a visitor's
WebSocket relayed to a WebSocket target, with a real twistd server and real `tpot` clients.

The certificate is made here at test time (self-signed, for localhost and 127.0.0.1); the
HTTPS target is the e2e HTTP/1.1 target behind Python's ssl; the WebSocket echo target and
the visitor's WebSocket client are raw sockets written here.  All traffic is on 127.0.0.1
and every wait is bounded.
"""

import base64
import hashlib
import http.client
import os
import socket
import ssl
import struct
import sys
import threading
import time

import pytest

from tests.support.certs import self_signed

from .conftest import HOST, Target, run_tpot, serving, stream_sha256

pytestmark = pytest.mark.timeout(90)

IO_TIMEOUT = 20.0
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ALARMING = ("Traceback", "Unhandled", "CRITICAL", "Exception")


# ---------------------------------------------------------------------------------------
# an HTTPS target


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(cert.pem path, key.pem path): self-signed, CN and SAN localhost, SAN 127.0.0.1."""
    cert, key = self_signed("localhost", ("localhost",), ("127.0.0.1",))
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    return str(directory / "cert.pem"), str(directory / "key.pem")


class HTTPSTarget(Target):
    """The e2e target (keep-alive HTTP/1.1, /stream/N, /host ...) over TLS.

    The handshake happens in the connection's own thread, so a client that refuses the
    certificate holds up nobody.  The SNI names clients sent are recorded.
    """

    def __init__(self, cert, key):
        super().__init__()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.server_names = []
        self.handshake_failures = 0
        self.context.sni_callback = lambda sock, name, context: self.server_names.append(name)

    def finish_request(self, request, client_address):
        request.settimeout(IO_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:  # the client refused our certificate, as it should without --insecure
            with self.lock:
                self.handshake_failures += 1
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)


@pytest.fixture
def https_target(certificate):
    yield from serving(HTTPSTarget(*certificate))


def visit(server, name, path):
    """GET `path` from tunnel `name`: (status, body if at most 4 KiB, sha256, size), the body
    hashed as it comes."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Host": server.host_for(name)})
        response = conn.getresponse()
        digest, size, small = hashlib.sha256(), 0, []
        while True:
            piece = response.read(1 << 20)
            if not piece:
                break
            digest.update(piece)
            size += len(piece)
            small = small + [piece] if size <= 4096 else []
        return response.status, b"".join(small), digest.hexdigest(), size
    finally:
        conn.close()


DOWNLOAD = 8 * 1024 * 1024


def test_https_target_with_insecure_serves_a_download_intact(server, https_target, tpot_client):
    client = tpot_client(server, f"https://localhost:{https_target.port}", name="secure", extra=["--insecure"])
    status, _, digest, size = visit(server, "secure", f"/stream/{DOWNLOAD}?seed=443")
    assert (status, size, digest) == (200, DOWNLOAD, stream_sha256(DOWNLOAD, 443))
    status, body, _, _ = visit(server, "secure", "/host")
    assert (status, body) == (200, f"localhost:{https_target.port}".encode())  # Host rewritten as for http
    assert set(https_target.server_names) == {"localhost"}  # SNI, though the certificate is not checked
    assert not any(word in client.stderr() for word in ALARMING), client.stderr()


def test_https_target_with_an_untrusted_certificate_is_502_and_the_client_stays(server, https_target, tpot_client):
    client = tpot_client(server, f"https://localhost:{https_target.port}", name="untrusted", extra=["-d"])
    for _ in range(3):
        status, body, _, _ = visit(server, "untrusted", "/host")
        assert status == 502, body
    assert https_target.hosts == []  # no request ever reached the target
    assert https_target.handshake_failures >= 1
    time.sleep(0.3)
    assert client.proc.poll() is None  # still running
    stderr = client.stderr()
    assert not any(word in stderr for word in ALARMING), stderr
    # One line says why, once, however many visitors got 502.
    assert stderr.count("tpot: TLS to the target") == 1 and "certificate verify failed" in stderr, stderr


def test_https_target_with_the_ca_file(server, https_target, tpot_client, certificate):
    tpot_client(server, f"https://localhost:{https_target.port}", name="private", extra=["--ca", certificate[0]])
    status, _, digest, size = visit(server, "private", "/stream/1000000?seed=7")
    assert (status, size, digest) == (200, 1000000, stream_sha256(1000000, 7))
    assert https_target.handshake_failures == 0


def test_bad_ca_file_is_one_sentence_and_exit_1(server, tmp_path):
    result = run_tpot(["http", "https://localhost:8443", "-t", server.url, "--ca", str(tmp_path / "nope.pem")], tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("tpot: The CA file ") and result.stderr.count("\n") == 1, result.stderr


# ---------------------------------------------------------------------------------------
# WebSocket: a raw echo target and a raw visitor


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk and not data:
            raise EOFError("closed before sending anything")
        if not chunk:
            raise ConnectionError(f"closed before the end of the head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, rest


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WEBSOCKET_GUID).digest()).decode()


class FrameSocket:
    """RFC 6455 frames over a socket, with bytes already read kept in front."""

    def __init__(self, sock, buffered=b"", mask=False):
        self.sock = sock
        self.buffer = buffered
        self.mask = mask

    def _exactly(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("closed mid-frame")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read(self):
        """(opcode, payload) of the next frame (unmasked if it was masked)."""
        first, second = self._exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._exactly(8))[0]
        key = self._exactly(4) if second & 0x80 else None
        payload = self._exactly(length)
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        assert first & 0x80, "fragmented frames are not expected here"
        return first & 0x0F, payload, key is not None

    def write(self, opcode, payload):
        head = bytes([0x80 | opcode])
        mask_bit = 0x80 if self.mask else 0
        if len(payload) < 126:
            head += bytes([mask_bit | len(payload)])
        elif len(payload) < 65536:
            head += bytes([mask_bit | 126]) + struct.pack("!H", len(payload))
        else:
            head += bytes([mask_bit | 127]) + struct.pack("!Q", len(payload))
        if self.mask:
            key = os.urandom(4)
            payload = key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + payload)


TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketEcho:
    """A WebSocket target on 127.0.0.1: echoes every message, records every upgrade's headers."""

    def __init__(self):
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.upgrades = []
        self.errors = []
        self.threads = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn):
        with conn:
            try:
                conn.settimeout(IO_TIMEOUT)
                try:
                    request_line, headers, rest = read_head(conn)
                except EOFError:  # a check that something listens here (tpot makes one at start-up)
                    return
                self.upgrades.append((request_line, headers))
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n\r\n".encode()
                )
                frames = FrameSocket(conn, rest, mask=False)
                while True:
                    opcode, payload, masked = frames.read()
                    assert masked, "a client frame arrived unmasked"
                    if opcode == CLOSE:
                        frames.write(CLOSE, payload[:2])
                        return
                    if opcode == PING:
                        frames.write(PONG, payload)
                    elif opcode in (TEXT, BINARY):
                        frames.write(opcode, payload)
            except Exception as error:  # reported by the test, not lost in a thread
                self.errors.append(repr(error))

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone does not
        except OSError:
            pass
        self.listener.close()
        self.accepting.join(5)
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def websocket_echo():
    echo = WebSocketEcho()
    yield echo
    echo.close()


def message(i):
    """The i-th test message: sizes across all three length encodings, text and binary, and
    one that looks like a request head (after the upgrade nothing may rewrite it)."""
    if i == 42:
        return TEXT, b"GET / HTTP/1.1\r\nHost: must.not.change\r\n\r\n"
    size = [5, 125, 126, 1000, 65535, 65536, 200000][i % 7] + i
    body = hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1)
    if i % 2:
        return BINARY, body[:size]
    return TEXT, base64.b64encode(body)[:size]


def test_websocket_through_the_tunnel_echoes_100_messages(server, websocket_echo, tpot_client):
    tpot_client(server, f"127.0.0.1:{websocket_echo.port}", name="ws")
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(
            f"GET /chat?room=1 HTTP/1.1\r\nHost: {server.host_for('ws')}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Origin: http://ws.localhost\r\n\r\n".encode()
        )
        status_line, headers, rest = read_head(sock)
        assert status_line.startswith("HTTP/1.1 101"), status_line
        assert headers["sec-websocket-accept"] == accept_key(key)
        frames = FrameSocket(sock, rest, mask=True)
        for i in range(100):
            opcode, payload = message(i)
            frames.write(opcode, payload)
            assert frames.read() == (opcode, payload, False), f"message {i}"
        frames.write(CLOSE, struct.pack("!H", 1000))
        assert frames.read()[:2] == (CLOSE, struct.pack("!H", 1000))
    assert websocket_echo.errors == []
    [(request_line, upgrade)] = websocket_echo.upgrades
    assert request_line == "GET /chat?room=1 HTTP/1.1"
    assert upgrade["host"] == f"127.0.0.1:{websocket_echo.port}"  # rewritten from ws.localhost:PORT
    assert upgrade["x-forwarded-host"] == server.host_for("ws")
    assert upgrade["upgrade"] == "websocket" and upgrade["sec-websocket-key"] == key
