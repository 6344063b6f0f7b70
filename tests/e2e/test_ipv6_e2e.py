"""End-to-end: the server's default listen takes IPv6 and IPv4 visitors on one port.

The server of conftest's `server` fixture gets --port and no --listen, so it listens
dual-stack on `::`; the recording target shows what address the client forwarded.
"""

import http.client

import pytest

from . import test_operate_e2e
from .conftest import HOST, IO_TIMEOUT
from .test_operate_e2e import header_values

pytestmark = pytest.mark.timeout(60)

# A fresh target per test that records every request's headers.
target = test_operate_e2e.target


def get(address, port, host, path):
    """(status, body) of one GET to the server at `address`, IPv4 or IPv6."""
    conn = http.client.HTTPConnection(address, port, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_default_listen_serves_ipv6_and_ipv4_visitors_by_their_own_addresses(server, target, tpot_client):
    assert "--listen" not in server.proc.args
    assert f"serving localhost on port {server.port} (IPv4 and IPv6)," in server.log()
    tpot_client(server, target.address, name="six")
    host = server.host_for("six")
    assert get("::1", server.port, host, "/v6") == (200, b"ok")
    assert get(HOST, server.port, host, "/v4") == (200, b"ok")
    [six], [four] = target.seen("/v6"), target.seen("/v4")
    # The whole IPv6 address (our client asks for the ipv6 extension), and IPv4 in its
    # plain form although the dual-stack socket reports ::ffff:127.0.0.1.
    assert header_values(six, "X-Forwarded-For") == ["::1"]
    assert header_values(four, "X-Forwarded-For") == ["127.0.0.1"]
