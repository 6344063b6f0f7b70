"""What a visitor writes cannot override what the server and client vouch for (issue 11),
end to end: the real server and client in front of a lenient target that splits header
lines on a bare LF as well as on CRLF, and reports every header line it parsed."""

import re
import socket
import socketserver
import time

import pytest

from .conftest import DOMAIN, HOST, IO_TIMEOUT, raw, serving, status_of

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class LenientHandler(socketserver.BaseRequestHandler):
    """Reads request heads (ending in a blank line, CRLF or bare LF), records each one's
    lines, answers each with OK; bodies are not expected."""

    def handle(self):
        self.request.settimeout(IO_TIMEOUT)
        buffered = b""
        try:
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                buffered += data
                while True:
                    match = re.search(rb"\r?\n\r?\n", buffered)
                    if match is None:
                        break
                    head, buffered = buffered[:match.start()], buffered[match.end():]
                    self.server.heads.append([line.rstrip(b"\r") for line in re.split(rb"\r?\n|\r", head)])
                    self.request.sendall(OK)
        except OSError:
            return


class LenientTarget(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), LenientHandler)
        self.heads = []

    @property
    def address(self):
        return f"127.0.0.1:{self.server_address[1]}"

    def header_values(self, name):
        wanted = name.lower() + b":"
        return [line.split(b":", 1)[1].strip() for head in self.heads for line in head[1:]
                if line.lower().startswith(wanted)]


@pytest.fixture
def lenient():
    yield from serving(LenientTarget())


@pytest.fixture
def proxied_server(server_factory):
    return server_factory("--trusted-proxy", "127.0.0.1/32")


def answers(data):
    """The status of each response in a stream of OK and error responses."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def exchange(port, data, count):
    """Send `data` on one keep-alive connection; the statuses of the responses, read until
    `count` have come (and a moment longer, for any that should not), or the close."""
    received = b""
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + IO_TIMEOUT
        while len(answers(received)) < count and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return answers(received)
            received += chunk
        sock.settimeout(0.3)
        try:
            received += sock.recv(65536)
        except TimeoutError:
            pass
    return answers(received)


def public(server, name):
    return f"{name}.{DOMAIN}:{server.port}".encode()


def test_a_later_head_with_a_bare_lf_gets_400_and_none_of_it_reaches_the_target(server, lenient, tpot_client):
    tpot_client(server, lenient.address, name="lf")
    host = public(server, "lf")
    first = b"GET /one HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    smuggled = b"GET /two HTTP/1.1\r\nHost: " + host + b"\r\nX-Pad: 1\nX-Forwarded-Host: admin.internal\r\n\r\n"
    answer = raw(server.port, first + smuggled)
    assert answers(answer) == [200, 400]
    assert [head[0] for head in lenient.heads] == [b"GET /one HTTP/1.1"]
    assert lenient.header_values(b"x-forwarded-host") == [host]


@pytest.mark.parametrize("smuggling", [
    b"POST /two HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n\r\n",  # the target sees no body
    b"POST /two HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 40\r\n\r\n",
    b"GET /two HTTP/1.1\r\nHost: {host}\r\nX-Pad: 1\r\n X-Forwarded-Host: admin.internal\r\n\r\n",
], ids=["unknown-coding", "length-list", "folded-line"])
def test_a_later_head_the_target_could_misread_gets_400_and_none_of_it_reaches_the_target(
        server, lenient, tpot_client, smuggling):
    tpot_client(server, lenient.address, name="smuggle")
    host = public(server, "smuggle")
    first = b"GET /one HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    inner = b"GET /admin HTTP/1.1\r\nHost: admin.internal\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n"
    answer = raw(server.port, first + smuggling.replace(b"{host}", host) + inner)
    assert answers(answer) == [200, 400]
    assert [head[0] for head in lenient.heads] == [b"GET /one HTTP/1.1"]


def test_a_request_pipelined_past_a_refused_upgrade_is_vouched_for(server, lenient, tpot_client):
    # The lenient target answers the upgrade 200 (it does not switch) and reads on.
    tpot_client(server, lenient.address, name="upg")
    host = public(server, "upg")
    upgrade = b"GET /ws HTTP/1.1\r\nHost: " + host + b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    inner = b"GET /admin HTTP/1.1\r\nHost: admin.internal\r\nX-Forwarded-Host: admin.internal\r\n\r\n"
    assert exchange(server.port, upgrade + inner, 2) == [200, 200]
    assert [head[0] for head in lenient.heads] == [b"GET /ws HTTP/1.1", b"GET /admin HTTP/1.1"]
    assert lenient.header_values(b"host") == [lenient.address.encode()] * 2
    assert lenient.header_values(b"x-forwarded-host") == [host] * 2


def test_a_first_head_with_a_bare_lf_is_400_at_the_server(server, lenient, tpot_client):
    tpot_client(server, lenient.address, name="lf1")
    answer = raw(server.port, b"GET / HTTP/1.1\r\nHost: " + public(server, "lf1") + b"\nX-Forwarded-Proto: https\r\n\r\n")
    assert status_of(answer) == 400 and lenient.heads == []


def test_absolute_form_targets_reach_the_target_in_origin_form_with_its_host(server, lenient, tpot_client):
    tpot_client(server, lenient.address, name="abs")
    host = public(server, "abs")
    requests = (b"GET http://admin.internal/secret?a=1 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") * 2
    requests += b"GET http://admin.internal/third HTTP/1.1\r\nAccept: */*\r\n\r\n"  # no Host at all
    assert exchange(server.port, requests, 3) == [200, 200, 200]
    assert [head[0] for head in lenient.heads] == [b"GET /secret?a=1 HTTP/1.1"] * 2 + [b"GET /third HTTP/1.1"]
    assert lenient.header_values(b"host") == [lenient.address.encode()] * 3
    assert not any(b"admin.internal" in line for head in lenient.heads for line in head)


def test_x_forwarded_host_is_the_tunnels_host_on_every_request(server, lenient, tpot_client):
    tpot_client(server, lenient.address, name="xfh")
    host = public(server, "xfh")
    requests = (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: other.localhost\r\nX-Forwarded-Host: evil\r\n\r\n")
    assert exchange(server.port, requests, 2) == [200, 200]
    assert lenient.header_values(b"x-forwarded-host") == [host, host]


def test_behind_a_trusted_proxy_the_visitors_own_x_forwarded_for_line_does_not_win(proxied_server, lenient,
                                                                                    tpot_client):
    tpot_client(proxied_server, lenient.address, name="xff")
    # A visitor's own line first, then the one a proxy like HAProxy appends.
    head = (b"GET / HTTP/1.1\r\nHost: " + public(proxied_server, "xff") + b"\r\n"
            b"X-Forwarded-For: 10.9.9.9\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n")
    assert exchange(proxied_server.port, head, 1) == [200]
    [forwarded] = lenient.header_values(b"x-forwarded-for")
    assert forwarded.split(b",")[-1].strip() == b"198.51.100.7"
