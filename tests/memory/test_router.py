"""The router in memory: every way a first request head is refused, and the hand-overs."""

import pytest
from twisted.internet import defer

from tests.support.memory import (
    NOW_MS,
    SERVER_KEY,
    WebSocketPeer,
    handed_over,
    parse_response,
    settle,
    upgrade_request,
    visitor_request,
)
from tpot.http.head import MAX_FIRST_HEAD_SIZE
from tpot.protocol import auth
from tpot.server.router import HEADER_TIMEOUT, RouterProtocol
from tpot.server.tunnel import TunnelProtocol
from tpot.server.visitor import VisitorProtocol

KEY = SERVER_KEY


def refused(server, transport, status):
    """Check a complete error response with `status`, then that the connection closed."""
    settle(server.clock)
    response = parse_response(transport.value())
    assert response.status == status, transport.value()
    assert response.header("content-type").startswith("text/plain")
    assert int(response.header("content-length")) == len(response.body)
    assert response.body.endswith(b"\n") and len(response.body) > 1
    assert response.header("connection") == "close"
    assert transport.lost
    # The header timeout went with the connection.
    assert not [call for call in server.clock.getDelayedCalls() if isinstance(call.func.__self__, RouterProtocol)]
    return response


def test_unknown_host_is_404(server):
    transport = server.connect(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    refused(server, transport, 404)


def test_missing_host_is_404(server):
    transport = server.connect(b"GET / HTTP/1.1\r\n\r\n")
    refused(server, transport, 404)


def test_deeper_subdomain_is_404(server):
    server.open_tunnel("wire")
    transport = server.connect(visitor_request("a.wire"))
    refused(server, transport, 404)


def test_bare_domain_unknown_path_is_404(server):
    transport = server.connect(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
    refused(server, transport, 404)


def test_bare_domain_with_port_and_upper_case_is_the_control_endpoint(server):
    transport = server.connect(upgrade_request("/create-tpot?subdomain=Wire", host="LocalHost:3002"))
    settle(server.clock)
    peer = WebSocketPeer(transport)
    assert peer.new_messages() == [b"\x11GTPoT/1 wire"]
    assert peer.response.status == 101


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: wire.localhost\r\nX-Pad: 1\nX-Forwarded-Host: admin.internal\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: wire.localhost\r\nX-Pad: 1\rX-Forwarded-Proto: https\r\n\r\n",
    b"GET / HTTP/1.1\nHost: wire.localhost\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: wire.localhost\r\r\n\r\n",
])
def test_a_bare_cr_or_lf_in_the_head_is_400_and_never_reaches_the_tunnel(server, head):
    peer = server.open_tunnel("wire")
    response = refused(server, server.connect(head), 400)
    assert b"bare CR or LF" in response.body
    assert peer.new_messages() == []


@pytest.mark.parametrize("target", [b"http://[", b"//[x]/create-tpot", b"http://[::1/"])
def test_a_request_target_that_is_not_a_url_is_400(server, target):
    response = refused(server, server.connect(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"), 400)
    assert b"not a valid URL" in response.body


@pytest.mark.parametrize("name, reason", [
    (b"www", b"reserved"), (b"create-tpot", b"reserved"), (b"api", b"reserved"),
    (b"demo-", b"ending with '-'"), (b"xn--80ak6aa92e", b"xn--"),
])
def test_reserved_and_non_dns_names_are_400_with_a_reason(server, name, reason):
    response = refused(server, server.connect(upgrade_request(b"/create-tpot?subdomain=" .decode() + name.decode())), 400)
    assert reason in response.body


def test_the_reserved_list_is_the_servers_to_choose(server):
    server.router.reserved_names = frozenset({"demo"})
    refused(server, server.connect(upgrade_request("/create-tpot?subdomain=demo")), 400)
    peer = WebSocketPeer(server.connect(upgrade_request("/create-tpot?subdomain=www")))
    settle(server.clock)
    assert peer.new_messages() == [b"\x11GTPoT/1 www"]


def test_post_create_is_405_with_allow(server):
    request = upgrade_request(method="POST")
    transport = server.connect(request)
    response = refused(server, transport, 405)
    assert response.header("allow") == "GET"


@pytest.mark.parametrize(
    "first_line",
    [b"HELLO", b"GET /", b"GET / HTTP/2.0", b"GET  / HTTP/1.1", b"GET / FTP/1.1", b"G\xffT / HTTP/1.1"],
)
def test_bad_request_line_is_400(server, first_line):
    transport = server.connect(first_line + b"\r\nHost: localhost\r\n\r\n")
    refused(server, transport, 400)


def test_tls_hello_is_400_at_once(server):
    transport = server.connect(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    refused(server, transport, 400)


def test_malformed_header_is_400(server):
    transport = server.connect(b"GET / HTTP/1.1\r\nHost: wire.localhost\r\nno colon here\r\n\r\n")
    refused(server, transport, 400)


@pytest.mark.parametrize(
    "request_bytes",
    [
        upgrade_request(version="1.0"),
        upgrade_request().replace(b"Upgrade: websocket\r\n", b""),
        upgrade_request().replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        upgrade_request().replace(b"Connection: Upgrade", b"Connection: keep-alive"),
        upgrade_request().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
        b"GET /create-tpot HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    ],
    ids=["http10", "no-upgrade", "other-upgrade", "no-connection-upgrade", "version-8", "no-key"],
)
def test_bad_upgrade_is_400(server, request_bytes):
    transport = server.connect(request_bytes)
    refused(server, transport, 400)


def test_upgrade_tokens_are_lists(server):
    request = upgrade_request("/create-tpot?subdomain=ok").replace(
        b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"
    )
    transport = server.connect(request)
    settle(server.clock)
    assert transport.value().startswith(b"HTTP/1.1 101 ")


@pytest.mark.parametrize("name", ["-wire", "a_b", "x" * 25, "wire.x", "%20", "w%C3%A9"])
def test_bad_subdomain_is_400(server, name):
    transport = server.connect(upgrade_request(f"/create-tpot?subdomain={name}"))
    refused(server, transport, 400)
    assert server.table.active_tunnels() == 0


def test_longest_valid_subdomain(server):
    peer = server.open_tunnel("a-" + "9" * 22)
    assert peer.name == "a-" + "9" * 22


def test_no_subdomain_gets_a_random_name(server):
    first = server.open_tunnel()
    second = server.open_tunnel()
    assert len(first.name) == 8 and first.name.isalnum()
    assert first.name != second.name


def test_head_without_end_beyond_limit_is_431(server):
    transport = server.connect(b"GET / HTTP/1.1\r\nHost: wire.localhost\r\nX-Big: " + b"a" * MAX_FIRST_HEAD_SIZE)
    refused(server, transport, 431)


def test_complete_head_beyond_limit_is_431(server):
    head = b"GET / HTTP/1.1\r\nHost: wire.localhost\r\nX-Big: " + b"a" * MAX_FIRST_HEAD_SIZE + b"\r\n\r\n"
    transport = server.connect(head)
    refused(server, transport, 431)


def test_head_just_under_limit_is_routed(server):
    server.open_tunnel("wire")
    start = b"GET / HTTP/1.1\r\nHost: wire.localhost\r\nX-Big: "
    head = start + b"a" * (MAX_FIRST_HEAD_SIZE - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == MAX_FIRST_HEAD_SIZE
    transport = server.visit("wire", head)
    assert transport.value() == b"" and not transport.lost


def test_slow_head_is_408(server):
    transport = server.connect(b"GET / HTTP/1.1\r\nHost: wire.loc")
    server.clock.advance(HEADER_TIMEOUT - 0.1)
    assert transport.value() == b""
    server.clock.advance(0.1)
    refused(server, transport, 408)


def test_silent_connection_is_408(server):
    transport = server.connect()
    server.clock.advance(HEADER_TIMEOUT)
    refused(server, transport, 408)


def test_header_timeout_cancelled_once_routed(server):
    peer = server.open_tunnel("wire")
    visitor = server.visit("wire")
    server.clock.advance(HEADER_TIMEOUT * 2)
    assert not visitor.lost and visitor.value() == b""
    assert not peer.transport.lost


def test_client_leaving_early_cancels_the_timeout(server):
    transport = server.connect(b"GET / HT")
    transport.peer_closes()
    assert not server.clock.getDelayedCalls()


def test_visitor_of_missing_tunnel_is_503(server):
    transport = server.connect(visitor_request("nobody"))
    response = refused(server, transport, 503)
    assert b"nobody" in response.body


def test_visitor_of_claimed_but_not_open_tunnel_is_503(server):
    server.store.claim("wire")
    transport = server.connect(visitor_request("wire"))
    refused(server, transport, 503)


def test_name_in_use_is_409(server):
    server.open_tunnel("wire")
    transport = server.connect(upgrade_request("/create-tpot?subdomain=wire"))
    refused(server, transport, 409)
    # The first tunnel is untouched.
    assert server.table.active_tunnels() == 1


def test_name_in_use_is_case_insensitive(server):
    server.open_tunnel("wire")
    transport = server.connect(upgrade_request("/create-tpot?subdomain=WIRE"))
    refused(server, transport, 409)


def test_registry_full_is_503(server):
    server.store.max_tunnels = 1
    server.open_tunnel("one")
    transport = server.connect(upgrade_request("/create-tpot?subdomain=two"))
    refused(server, transport, 503)


def test_head_split_in_single_bytes_reaches_the_visitor_relay(server):
    peer = server.open_tunnel("wire")
    request = visitor_request("wire", path="/split") + b"body"
    transport = server.connect()
    transport.receive_in_pieces(request, 1)
    settle(server.clock)
    messages = peer.new_messages()
    assert messages[0][:4] == b"\x11H\x01\x00"
    assert b"".join(m[4:] for m in messages[1:]) == request
    assert all(m[:4] == b"\x12\x01\x00D" for m in messages[1:])


@pytest.mark.parametrize("size", [1, 7, 30])
def test_upgrade_split_across_reads(server, size):
    transport = server.connect()
    request = upgrade_request("/create-tpot?subdomain=split")
    transport.receive_in_pieces(request, size)
    settle(server.clock)
    peer = WebSocketPeer(transport)
    assert peer.new_messages() == [b"\x11GTPoT/1 split"]


def test_head_split_right_inside_the_blank_line(server):
    peer = server.open_tunnel("wire")
    request = visitor_request("wire")
    transport = server.connect(request[:-3])
    transport.receive(request[-3:-1])
    assert peer.new_messages() == []
    transport.receive(request[-1:])
    settle(server.clock)
    assert peer.new_messages()[1] == b"\x12\x01\x00D" + request


def test_bytes_after_the_head_in_the_same_read_are_relayed(server):
    peer = server.open_tunnel("wire")
    request = b"POST / HTTP/1.1\r\nHost: wire.localhost\r\nContent-Length: 5\r\n\r\nhello"
    server.visit("wire", request)
    assert peer.new_messages()[1] == b"\x12\x01\x00D" + request


def test_router_hands_over_and_forwards_straight_to_the_new_protocol(server):
    peer = server.open_tunnel("wire")
    assert isinstance(peer.protocol, TunnelProtocol)
    visitor = server.visit("wire")
    assert isinstance(handed_over(visitor), VisitorProtocol)
    assert visitor.protocol.dataReceived == handed_over(visitor).dataReceived


# Authentication, when the server has a key.


def authorization(nonce="bm9uY2U=", timestamp_ms=NOW_MS, key=KEY):
    return auth.make_authorization(key, nonce=nonce, timestamp_ms=timestamp_ms)


def test_missing_authorization_is_401(keyed):
    transport = keyed.connect(upgrade_request("/create-tpot?subdomain=wire"))
    response = refused(keyed, transport, 401)
    assert response.header("www-authenticate") == "TPoT-1"
    assert keyed.table.active_tunnels() == 0


@pytest.mark.parametrize(
    "value",
    [
        "Basic dXNlcjpwYXNz",
        "TPoT-1 not-base64!!",
        "TPoT-1 " + "bm9uY2UKMTIzCg==",  # nonce, timestamp, empty token line
        authorization(key="x" * 40),
        authorization(timestamp_ms=NOW_MS - 61_000),
        authorization(timestamp_ms=NOW_MS + 61_000),
    ],
    ids=["basic", "garbage", "no-token", "wrong-key", "stale", "future"],
)
def test_bad_authorization_is_401(keyed, value):
    transport = keyed.connect(upgrade_request("/create-tpot?subdomain=wire", headers=[("Authorization", value)]))
    refused(keyed, transport, 401)
    assert keyed.tunnel_serving("wire") is None


def test_good_authorization_opens_the_tunnel(keyed):
    peer = keyed.open_tunnel("wire", headers=[("Authorization", authorization(timestamp_ms=NOW_MS - 59_000))])
    assert peer.name == "wire"


def test_replayed_authorization_is_401(keyed):
    header = [("Authorization", authorization())]
    keyed.open_tunnel("one", headers=header)
    transport = keyed.connect(upgrade_request("/create-tpot?subdomain=two", headers=header))
    refused(keyed, transport, 401)


def test_visitors_need_no_authorization(keyed):
    peer = keyed.open_tunnel("wire", headers=[("Authorization", authorization())])
    keyed.visit("wire")
    assert len(peer.new_messages()) == 2


def test_auth_is_checked_before_the_name_is_taken(keyed):
    keyed.open_tunnel("wire", headers=[("Authorization", authorization())])
    transport = keyed.connect(
        upgrade_request("/create-tpot?subdomain=wire", headers=[("Authorization", authorization(key="y" * 40))])
    )
    refused(keyed, transport, 401)


class CountsPauses:
    """Wraps a transport's pauseProducing to count the pauses the router asks for."""

    def __init__(self, transport):
        self.count = 0
        pause = transport.pauseProducing

        def counted():
            self.count += 1
            pause()
        transport.pauseProducing = counted


def test_a_route_found_at_once_needs_no_pause(server):
    peer = server.open_tunnel("wire")
    transport = server.connect()
    pauses = CountsPauses(transport)
    transport.receive(visitor_request("wire"))
    settle(server.clock)
    assert pauses.count == 0 and peer.new_messages()  # relayed, never paused


def test_reading_waits_while_a_route_is_looked_up_elsewhere(server, monkeypatch):
    server.open_tunnel("wire")
    found = server.store.lookup("wire").result
    pending = defer.Deferred()
    monkeypatch.setattr(server.store, "lookup", lambda name: pending)  # a registry across a network
    transport = server.connect()
    pauses = CountsPauses(transport)
    transport.receive(visitor_request("wire"))
    assert pauses.count == 1 and transport.producerState == "paused"
    pending.callback(found)
    assert transport.producerState == "producing" and isinstance(handed_over(transport), VisitorProtocol)


def test_reading_waits_while_a_route_found_at_once_is_still_being_taken(server, monkeypatch):
    # The route is known at once, but reaching it is not (another node, another worker).
    server.open_tunnel("wire")
    taking = defer.Deferred()
    monkeypatch.setattr(RouterProtocol, "_visit", lambda self, route, name: taking)
    transport = server.connect()
    transport.receive(visitor_request("wire"))
    assert transport.producerState == "paused"
    taking.callback(None)
