"""Visitors' IPv6 addresses on the server, in memory: the opens of the `ipv6` extension, and
IPv4 visitors of the dual-stack socket (peers `::ffff:a.b.c.d`) in their plain form for
the client, --max-connections-per-ip, --trusted-proxy and the failed-authentication limit.
(The client's side is in test_client_protocol and test_visitor_policy; the wire format in
test_codec; the default listen in test_settings; real sockets in e2e/test_ipv6_e2e.)"""

import ipaddress

import pytest

from tests.support.memory import data, opened, parse_response, settle, upgrade_request, visitor_request
from tpot.http.addresses import forwarded_client, parse_networks, plain_address
from tpot.protocol import codec

ASK_IPV6 = (codec.EXTENSIONS_HEADER, codec.IPV6)


def announced(server, peer, visitor, headers=b""):
    """The open message `peer`'s tunnel gets for a visitor from `visitor` (host, port)."""
    request = visitor_request(peer.name)[:-2] + headers + b"\r\n"
    server.visit(peer.name, request, peer=visitor)
    messages = peer.new_messages()
    assert len(messages) == 2 and messages[1] == data(1, request), messages
    return messages[0]


def status(server, transport):
    settle(server.clock)
    return parse_response(transport.value()).status


# ---------------------------------------------------------------------------------------
# the ipv6 extension


def test_with_the_extension_an_ipv6_visitor_is_announced_whole(server):
    peer = server.open_tunnel("six", headers=[ASK_IPV6])
    assert codec.IPV6 in peer.response.header("tpot-extensions").split(", ")
    message = announced(server, peer, ("2001:db8::7", 40001))
    assert message == opened(1, 40001, ipaddress.IPv6Address("2001:db8::7").packed) and len(message) == 22


def test_without_the_extension_an_ipv6_visitor_is_0_0_0_0(server):
    peer = server.open_tunnel("four")
    assert peer.response.header("tpot-extensions") is None
    assert announced(server, peer, ("2001:db8::7", 40001)) == opened(1, 40001, bytes(4))


@pytest.mark.parametrize("headers", [[ASK_IPV6], []], ids=["ipv6", "reference"])
def test_an_ipv4_visitor_of_the_dual_stack_socket_is_announced_as_ipv4(server, headers):
    peer = server.open_tunnel("dual", headers=headers)
    assert announced(server, peer, ("::ffff:127.0.0.1", 40001)) == opened(1, 40001)


# ---------------------------------------------------------------------------------------
# the plain form of IPv4-mapped addresses


@pytest.mark.parametrize("host, plain", [
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("::FFFF:7f00:1", "127.0.0.1"),
    ("127.0.0.1", "127.0.0.1"),
    ("::1", "::1"),
    ("2001:db8::7", "2001:db8::7"),
    ("fe80::1%eth0", "fe80::1%eth0"),
    ("::ffff:1.2.3", "::ffff:1.2.3"),
    ("", ""),
])
def test_plain_address(host, plain):
    assert plain_address(host) == plain


def test_one_address_in_both_forms_counts_once_against_the_per_address_cap(server):
    server.router.max_per_source = 1
    mapped = server.connect(b"GET / HT", peer=("::ffff:10.0.0.1", 1))
    settle(server.clock)
    assert not mapped.disconnecting
    assert status(server, server.connect(b"GET / HT", peer=("10.0.0.1", 2))) == 429
    assert server.router._per_source == {"10.0.0.1": 1}


def test_failed_authentication_counts_once_for_both_forms(keyed):
    unauthorised = upgrade_request("/create-tpot?subdomain=six")
    for port in range(5):
        assert status(keyed, keyed.connect(unauthorised, peer=("::ffff:10.0.0.9", port))) == 401
    assert status(keyed, keyed.connect(unauthorised, peer=("10.0.0.9", 5))) == 429


def test_a_trusted_proxy_on_the_dual_stack_socket(server):
    server.router.trusted_proxies = parse_networks(["127.0.0.1/32"])
    peer = server.open_tunnel("proxied", headers=[ASK_IPV6])
    forwarded = b"X-Forwarded-For: ::ffff:198.51.100.9\r\n"
    assert announced(server, peer, ("::ffff:127.0.0.1", 40001), forwarded) == opened(
        1, 0, ipaddress.IPv4Address("198.51.100.9").packed
    )


def test_a_proxy_forwarding_the_mapped_form_gives_the_plain_one():
    assert forwarded_client("127.0.0.1", "::ffff:198.51.100.9", parse_networks(["127.0.0.1/32"])) == "198.51.100.9"
