"""The peer port in memory: a node's visitor handed over by another node, through
PeerServerProtocol, the router and the visitor relay, read in pieces of any size."""

import pytest
from twisted.internet import tcp
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol

from tests.support.memory import (
    MemoryTransport,
    connect,
    data,
    opened,
    settle,
    signal,
    visitor_request,
)
from tpot.server.cluster import hop
from tpot.server.cluster.peers import HANDSHAKE_TIMEOUT, PeerListenFactory, send_now

SECRET = "peer-port-secret-0123456789abcdefghijk"
VISITOR = ("203.0.113.7", 5555)


def peer_connection(server):
    """A connection to the peer port from node b; (transport, A's nonce)."""
    factory = PeerListenFactory(SECRET, server.router, server.clock)
    transport = MemoryTransport(server.clock, peer=("10.0.0.2", 45000), host=("10.0.0.1", 3001))
    connect(factory.buildProtocol(transport.getPeer()), transport)
    line = transport.value()
    assert line.endswith(b"\r\n")
    transport.clear()
    return transport, hop.read_challenge(line[:-2])


def handing_over(nonce, secret=SECRET):
    visitor = hop.Hop("node-b", VISITOR[0], VISITOR[1], hop.new_nonce())
    return visitor, hop.hop_line(secret, nonce, visitor)


@pytest.mark.parametrize("piece", [1, 7, 4096], ids=["bytewise", "small", "whole"])
def test_a_handed_over_visitor_reaches_the_tunnel_with_the_address_b_vouches_for(server, piece):
    peer = server.open_tunnel("wire")
    transport, nonce = peer_connection(server)
    visitor, line = handing_over(nonce)
    body = b"b" * 3000
    request = visitor_request("wire", path="/upload").replace(
        b"\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n".encode(), 1)
    transport.receive_in_pieces(line + request + body, piece)
    settle(server.clock)
    # A proves the secret back, then relays as for a visitor of its own.
    ok = transport.value()
    hop.read_ok(SECRET, nonce, visitor, ok[:-2])
    messages = peer.new_messages()
    assert messages[0] == opened(1, VISITOR[1], bytes([203, 0, 113, 7]))
    relayed = b"".join(message[4:] for message in messages[1:])
    assert all(message[:4] == data(1, b"") for message in messages[1:])
    assert relayed == request + body
    assert server.router.stats.forwarded_in == 1
    peer.send(data(1, b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert transport.value() == ok + b"HTTP/1.1 204 No Content\r\n\r\n"


def test_a_slow_reader_behind_the_peer_port_pauses_its_conversation(server):
    peer = server.open_tunnel("wire")
    transport, nonce = peer_connection(server)
    transport.receive(handing_over(nonce)[1] + visitor_request("wire"))
    settle(server.clock)
    peer.new_messages()
    transport.hold()  # B stops reading: the peer connection's send buffer fills
    for _ in range(3):
        peer.send(data(1, b"f" * 40_000))
    settle(server.clock)
    assert peer.new_messages() == [signal(1, b"P")]
    assert len(transport.value()) == 120_000 + len(b"OK ") + 64 + 2  # delivered, not cut
    transport.drain()
    assert peer.new_messages() == [signal(1, b"C")]


@pytest.mark.parametrize("line", [
    lambda nonce: handing_over(nonce, secret="w" * 40)[1],  # the wrong secret
    lambda nonce: handing_over(hop.new_nonce())[1],  # a proof for another nonce: a replay
    lambda nonce: b"GET / HTTP/1.1\r\n",  # a visitor at the wrong port
    lambda nonce: b"x" * 600,  # no line at all
], ids=["wrong-secret", "replayed", "raw-visitor", "no-line"])
def test_a_connection_without_a_proof_is_refused_and_reaches_no_tunnel(server, line):
    peer = server.open_tunnel("wire")
    transport, nonce = peer_connection(server)
    transport.receive_in_pieces(line(nonce) + visitor_request("wire"), 5)
    settle(server.clock)
    assert transport.aborted and transport.value() == b""
    assert peer.new_messages() == []
    assert server.router.stats.forwarded_in == 0


def test_a_peer_that_never_answers_is_dropped_after_the_handshake_timeout(server):
    transport, _ = peer_connection(server)
    transport.receive(b"HOP node-b")
    server.clock.advance(HANDSHAKE_TIMEOUT - 0.1)
    assert not transport.aborted
    server.clock.advance(0.2)
    assert transport.aborted


def test_a_visitor_handed_over_for_a_tunnel_not_here_gets_503_not_a_second_hop(server):
    transport, nonce = peer_connection(server)
    transport.receive(handing_over(nonce)[1] + visitor_request("elsewhere"))
    settle(server.clock)
    answer = transport.value().split(b"\r\n", 1)[1]
    assert answer.startswith(b"HTTP/1.1 503 ")


class FakeSocket:
    def __init__(self, takes):
        self.takes = takes  # bytes it accepts per send; an exception to raise
        self.sent = b""

    def send(self, data):
        if isinstance(self.takes, Exception):
            raise self.takes
        self.sent += data[:self.takes]
        return min(self.takes, len(data))


class FakeTCPTransport(tcp.Connection):
    """What send_now reads of a Twisted TCP connection, and its write."""

    def __init__(self, takes, queued=b"", tls=False):  # no socket of its own: tcp.Connection's is not called
        self.socket = FakeSocket(takes)
        self.dataBuffer = queued
        self._tempDataBuffer = []
        self.connected, self.disconnecting, self.TLS = True, False, tls
        self.written = b""

    def write(self, data):
        self.written += data


@pytest.mark.parametrize("transport, sent, written", [
    (FakeTCPTransport(takes=100), b"x" * 10, b""),  # nothing queued: sent at once
    (FakeTCPTransport(takes=4), b"xxxx", b"x" * 6),  # what the socket did not take is queued
    (FakeTCPTransport(takes=BlockingIOError()), b"", b"x" * 10),  # full
    (FakeTCPTransport(takes=ConnectionResetError()), b"", b"x" * 10),  # broken: Twisted sees to it
    (FakeTCPTransport(takes=100, queued=b"earlier"), b"", b"x" * 10),  # never ahead of queued bytes
    (FakeTCPTransport(takes=100, tls=True), b"", b"x" * 10),  # TLS: never around it
], ids=["empty", "partial", "full", "broken", "queued", "tls"])
def test_send_now_sends_at_once_only_what_cannot_overtake_or_bypass_anything(transport, sent, written):
    send_now(transport, b"x" * 10)
    assert (transport.socket.sent, transport.written) == (sent, written)


def wrapped(transport, wrapper):
    layer = wrapper.__new__(wrapper)
    layer.transport = transport
    return layer


def test_send_now_sends_through_a_proxy_protocol_wrapper_but_never_under_tls():
    through_proxy = FakeTCPTransport(takes=100)
    send_now(wrapped(through_proxy, HAProxyProtocolWrapper), b"x" * 10)
    assert through_proxy.socket.sent == b"x" * 10
    under_tls = FakeTCPTransport(takes=100)
    tls = wrapped(under_tls, TLSMemoryBIOProtocol)
    tls.write = lambda data: setattr(tls, "encrypted", data)  # what TLS would encrypt
    send_now(wrapped(tls, HAProxyProtocolWrapper), b"x" * 10)
    assert under_tls.socket.sent == b"" and tls.encrypted == b"x" * 10


def test_send_now_leaves_other_transports_to_their_write(server):
    transport = MemoryTransport(server.clock)
    send_now(transport, b"hello")
    assert transport.value() == b"hello"
