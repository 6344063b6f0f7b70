"""TCP tunnels on the server (the `tcp` extension): opening one, and who may reach it."""

import struct

import pytest

from tests.support.memory import parse_response, settle, upgrade_request
from tpot.protocol import codec
from tpot.protocol.codec import ACCESS_SECRET_HEADER, EXTENSIONS_HEADER
from tpot.server.visitor import ConversationRefused

SECRET = "k" * 32


def open_tcp_tunnel(server, name="ssh", secret=SECRET):
    return server.open_tunnel(name, headers=[(EXTENSIONS_HEADER, "tcp"), (ACCESS_SECRET_HEADER, secret)])


def tunnel_protocol(server, name):
    return server.tunnel_serving(name)


def test_a_tcp_tunnel_is_granted_with_its_secret(server):
    peer = open_tcp_tunnel(server)
    assert peer.response.header(EXTENSIONS_HEADER) == "tcp"
    tunnel = tunnel_protocol(server, "ssh")
    assert (tunnel.kind, tunnel.access_secret) == ("tcp", SECRET)


def test_an_http_tunnel_has_no_secret_even_if_one_is_sent(server):
    server.open_tunnel("web", headers=[(ACCESS_SECRET_HEADER, SECRET)])
    tunnel = tunnel_protocol(server, "web")
    assert (tunnel.kind, tunnel.access_secret) == ("http", None)


@pytest.mark.parametrize("headers", [
    [],
    [(ACCESS_SECRET_HEADER, "k" * 31)],
    [(ACCESS_SECRET_HEADER, "k" * 16 + " " + "k" * 16)],
    [(ACCESS_SECRET_HEADER, "k" * 257)],
], ids=["missing", "short", "space", "long"])
def test_a_tcp_tunnel_without_a_good_secret_is_400(server, headers):
    request = upgrade_request("/create-tpot?subdomain=ssh", headers=[(EXTENSIONS_HEADER, "tcp"), *headers])
    transport = server.connect(request)
    settle(server.clock)
    response = parse_response(transport.value())
    assert response.status == 400 and b"TPoT-Access-Secret" in response.body
    assert server.table.active_tunnels() == 0


def test_http_visitors_of_a_tcp_tunnel_get_404_and_never_reach_it(server):
    peer = open_tcp_tunnel(server)
    transport = server.visit("ssh")
    response = parse_response(transport.value())
    assert response.status == 404 and b"tpot connect ssh" in response.body
    assert peer.new_messages() == []
    assert transport.lost


def test_a_raw_conversation_is_announced_with_R(server):
    peer = open_tcp_tunnel(server)
    tunnel = tunnel_protocol(server, "ssh")
    conversation_id = tunnel.open_conversation(object(), "127.0.0.1", 40001, raw=True)
    assert peer.new_messages() == [b"\x11R" + struct.pack("<H", conversation_id) + b"\x7f\x00\x00\x01"
                                   + struct.pack("<H", 40001)]


@pytest.mark.parametrize("message", [codec.OpenRaw(7, "10.0.0.1", 22), codec.OpenRaw(32767, "2001:db8::1", 65535)])
def test_raw_open_round_trips(message):
    assert codec.decode(codec.encode(message, ipv6=True), codec.FROM_SERVER) == message


def test_conversations_of_the_wrong_kind_are_refused(server):
    open_tcp_tunnel(server)
    server.open_tunnel("web")
    with pytest.raises(ConversationRefused):
        tunnel_protocol(server, "ssh").open_conversation(object(), "127.0.0.1", 1)
    with pytest.raises(ConversationRefused):
        tunnel_protocol(server, "web").open_conversation(object(), "127.0.0.1", 1, raw=True)
