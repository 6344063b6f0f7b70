"""Links between nodes in memory (tpot.server.cluster.links): node A's end through the peer
port, the router's table and a real tunnel; node B's end under B's own visitor relays."""

import pytest

from tests.support.memory import (
    MemoryTransport,
    connect,
    data,
    new_clock,
    opened,
    parse_response,
    settle,
    signal,
    use_clock,
    visitor_request,
)
from tpot.protocol import codec
from tpot.protocol.flow import MAX_UNACKED_BYTES
from tpot.server.cluster import hop, link
from tpot.server.cluster.links import LinkClient, LinkedTunnel
from tpot.server.cluster.peers import PeerDialer, PeerListenFactory
from tpot.server.metrics import Stats
from tpot.server.store import RemoteRoute, RouteInfo
from tpot.server.visitor import VisitorProtocol

SECRET = "link-secret-0123456789abcdefghijklmnop"
VISITOR = ("203.0.113.7", 5555)
OTHER = ("198.51.100.9", 6666)


class LinkPeer:
    """Node B's side of a link to the MemoryServer (node A): frames to send, frames read."""

    def __init__(self, server):
        factory = PeerListenFactory(SECRET, server.router, server.clock)
        self.transport = MemoryTransport(server.clock, peer=("10.0.0.2", 45000), host=("10.0.0.1", 3001))
        connect(factory.buildProtocol(self.transport.getPeer()), self.transport)
        nonce = hop.read_challenge(self.transport.value()[:-2])
        self.transport.clear()
        asked = hop.Link("node-b", hop.new_nonce())
        self.transport.receive(hop.link_line(SECRET, nonce, asked))
        hop.read_ok(SECRET, nonce, asked, self.transport.value()[:-2])
        self.transport.clear()
        self.reader = link.FrameReader()
        self.clock = server.clock

    def open(self, conversation_id, name, address=VISITOR, request=None):
        opening = codec.OpenHTTP(conversation_id, *address)
        self.send(link.open_frame(name, opening) + link.data_frame(conversation_id, request or visitor_request(name)))

    def send(self, frames, piece=None):
        if piece:
            self.transport.receive_in_pieces(frames, piece)
        else:
            self.transport.receive(frames)
        settle(self.clock)

    def new_messages(self):
        messages = self.reader.feed(self.transport.value())
        self.transport.clear()
        return messages


@pytest.fixture
def linked(server):
    """The tunnel "wire", and a link from node B with conversation 1 open to it."""
    tunnel = server.open_tunnel("wire")
    b = LinkPeer(server)
    b.open(1, "wire")
    tunnel.new_messages()
    return tunnel, b


@pytest.mark.parametrize("piece", [1, 7, None], ids=["bytewise", "small", "whole"])
def test_visitors_over_one_link_reach_the_tunnel_with_the_addresses_b_vouches_for(server, piece):
    tunnel = server.open_tunnel("wire")
    b = LinkPeer(server)
    first, second = visitor_request("wire", path="/one"), visitor_request("wire", path="/two")
    b.send(link.open_frame("wire", codec.OpenHTTP(1, *VISITOR)) + link.data_frame(1, first)
           + link.open_frame("wire", codec.OpenHTTP(2, *OTHER)) + link.data_frame(2, second), piece)
    assert tunnel.new_messages() == [
        opened(1, VISITOR[1], bytes([203, 0, 113, 7])), data(1, first),
        opened(2, OTHER[1], bytes([198, 51, 100, 9])), data(2, second),
    ]
    tunnel.send(data(2, b"HTTP/1.1 204 No Content\r\n\r\n"))
    tunnel.send(data(1, b"HTTP/1.1 200 OK\r\n\r\n"))
    settle(server.clock)
    assert b.new_messages() == [codec.encode_data(2, b"HTTP/1.1 204 No Content\r\n\r\n"),
                                codec.encode_data(1, b"HTTP/1.1 200 OK\r\n\r\n")]
    stats = server.router.stats
    assert (stats.forwarded_in, stats.links_in) == (2, 1)


def test_either_side_closing_ends_the_conversation_on_the_other(server):
    tunnel = server.open_tunnel("wire")
    b = LinkPeer(server)
    b.open(1, "wire")
    b.open(2, "wire")
    tunnel.new_messages()
    tunnel.send(signal(1, b"X"))  # the client is done with the first
    settle(server.clock)
    assert b.new_messages() == [codec.encode(codec.Close(1))]
    b.send(link.frame(codec.encode(codec.Close(2))))  # B's visitor of the second left
    assert tunnel.new_messages() == [signal(2, b"X")]
    assert len(server.tunnel_serving("wire").conversations) == 0
    assert not b.transport.disconnecting  # the link stays for the next visitors


def test_an_open_for_a_tunnel_not_here_is_answered_503_and_closed(server):
    b = LinkPeer(server)
    b.open(1, "elsewhere")
    page, close = b.new_messages()
    assert codec.data_id(page) == 1 and parse_response(page[codec.DATA_HEAD_SIZE:]).status == 503
    assert close == codec.encode(codec.Close(1))
    assert server.router.stats.http_errors[503] == 1


def test_a_pause_from_b_pauses_the_tunnel_conversation_until_it_resumes(server, linked):
    tunnel, b = linked
    b.send(link.frame(codec.encode(codec.Pause(1))))
    assert tunnel.new_messages() == [signal(1, b"P")]
    tunnel.send(data(1, b"in flight"))  # what the client had sent already still goes to B
    settle(server.clock)
    assert b.new_messages() == [codec.encode_data(1, b"in flight")]
    b.send(link.frame(codec.encode(codec.Resume(1))))
    assert tunnel.new_messages() == [signal(1, b"C")]


def test_a_link_that_b_does_not_read_pauses_its_conversations(server, linked):
    tunnel, b = linked
    b.transport.hold()
    for _ in range(8):
        tunnel.send(data(1, b"d" * 40_000))
    settle(server.clock)
    assert tunnel.new_messages() == [signal(1, b"P")]
    b.transport.drain()
    settle(server.clock)
    assert tunnel.new_messages() == [signal(1, b"C")]


def test_a_tunnel_that_is_backed_up_makes_a_ask_b_to_pause_and_holds_b_to_it(server, linked):
    tunnel, b = linked
    tunnel.transport.hold()  # the tunnel's client stops reading
    b.send(link.data_frame(1, b"u" * 300_000))
    assert b.new_messages() == [codec.encode(codec.Pause(1))]
    chunk = b"v" * 1_000_000
    for _ in range(MAX_UNACKED_BYTES // len(chunk) + 1):  # B goes on regardless
        b.transport.receive(link.data_frame(1, chunk))
    settle(server.clock)
    assert b.new_messages() == [codec.encode(codec.Close(1))]
    assert not b.transport.disconnecting


@pytest.mark.parametrize("frames", [
    (link.MAX_FRAME + 1).to_bytes(4, "big"),  # larger than any message
    link.frame(codec.encode(codec.OpenHTTP(5, *VISITOR))),  # an open that names no tunnel
    link.frame(b"\x12\x05\x00Z"),  # no such conversation code
    link.frame(bytes([link.OPEN]) + b"wire"),  # a malformed open
    link.frame(bytes([link.PONG + 1])),  # no such frame
], ids=["oversize", "bare-open", "bad-code", "bad-open", "unknown"])
def test_a_bad_frame_closes_only_its_link(server, linked, frames):
    tunnel, b = linked
    direct = server.visit("wire", visitor_request("wire", path="/direct"), peer=("127.0.0.1", 41000))
    tunnel.new_messages()
    b.send(frames)
    assert b.transport.aborted
    # The link's conversation ends at the tunnel; the visitor that came straight is untouched.
    assert tunnel.new_messages() == [signal(1, b"X")]
    tunnel.send(data(2, b"HTTP/1.1 204 No Content\r\n\r\n"))
    settle(server.clock)
    assert direct.value() == b"HTTP/1.1 204 No Content\r\n\r\n" and not direct.disconnecting


def test_a_ping_is_answered_and_a_silent_link_is_dropped(server):
    b = LinkPeer(server)
    b.send(link.PING_FRAME)
    assert b.new_messages() == [bytes([link.PONG])]
    server.clock.advance(link.LINK_SILENCE - 1)
    assert not b.transport.aborted
    server.clock.advance(2)
    settle(server.clock)
    assert b.transport.aborted


def test_a_link_without_a_proof_is_refused(server):
    factory = PeerListenFactory(SECRET, server.router, server.clock)
    transport = MemoryTransport(server.clock)
    connect(factory.buildProtocol(transport.getPeer()), transport)
    nonce = hop.read_challenge(transport.value()[:-2])
    transport.receive(hop.link_line("w" * 40, nonce, hop.Link("node-b", hop.new_nonce())))
    settle(server.clock)
    assert transport.aborted and server.router.stats.links_in == 0


# Node B's end.

ROUTE = RemoteRoute("wire", "node-a", RouteInfo(codec.HTTP), "10.0.0.1:3001 proof", "lease-1")


class LinkedVisitors:
    """B's link to node A (its frames in `link_transport`) and visitors of A's tunnel on it."""

    def __init__(self, clock):
        self.clock = clock
        self.dialer = PeerDialer(SECRET, "node-b", clock, Stats())
        self.client = LinkClient(self.dialer, ("node-a", "10.0.0.1", 3001), clock)
        self.link_transport = MemoryTransport(clock, host=("10.0.0.2", 45000), peer=("10.0.0.1", 3001))
        connect(self.client, self.link_transport)
        self.reader = link.FrameReader()

    def visitor(self, address=VISITOR, request=b"GET / HTTP/1.1\r\nHost: wire.localhost\r\n\r\n"):
        protocol = VisitorProtocol(LinkedTunnel(self.client, ROUTE, self.dialer), self.clock, None, Stats(), address)
        transport = MemoryTransport(self.clock, peer=address)
        connect(protocol, transport)
        transport.receive(request)
        return transport

    def from_a(self, *messages):
        self.link_transport.receive(b"".join(link.frame(message) for message in messages))
        settle(self.clock)

    def new_messages(self):
        messages = self.reader.feed(self.link_transport.value())
        self.link_transport.clear()
        return messages


@pytest.fixture
def b():
    clock = new_clock()
    restore = use_clock(clock)
    yield LinkedVisitors(clock)
    restore()


def test_a_visitor_on_b_is_opened_on_the_link_relayed_and_counted_for_its_lease(b):
    request = b"GET /x HTTP/1.1\r\nHost: wire.localhost\r\n\r\n"
    visitor = b.visitor(request=request)
    assert b.new_messages() == [bytes([link.OPEN]) + b"wire\0" + codec.encode(codec.OpenHTTP(1, *VISITOR)),
                                codec.encode_data(1, request)]
    assert b.dialer.forwarded_to("lease-1") == 1 and b.dialer.stats.forwarded_out == 1
    b.from_a(codec.encode_data(1, b"HTTP/1.1 200 OK\r\n\r\n"), codec.encode(codec.Close(1)))
    assert visitor.value() == b"HTTP/1.1 200 OK\r\n\r\n" and visitor.lost
    assert b.dialer.active_conversations() == 0 and b.dialer.stats.links_out == 1


def test_a_lost_link_gives_its_unanswered_visitors_a_503(b):
    waiting, answered = b.visitor(), b.visitor(address=OTHER)
    b.from_a(codec.encode_data(2, b"HTTP/1.1 200 OK\r\n"))
    b.link_transport.peer_closes()
    settle(b.clock)
    assert parse_response(waiting.value()).status == 503 and waiting.lost
    assert answered.value() == b"HTTP/1.1 200 OK\r\n" and answered.lost
    assert b.dialer.active_conversations() == 0


def test_a_slow_visitor_on_b_makes_it_ask_a_to_pause_and_a_pause_from_a_stops_its_reading(b):
    visitor = b.visitor()
    b.new_messages()
    visitor.hold()
    b.from_a(codec.encode_data(1, b"d" * 100_000))
    assert b.new_messages() == [codec.encode(codec.Pause(1))]
    visitor.drain()
    settle(b.clock)
    assert b.new_messages() == [codec.encode(codec.Resume(1))]
    b.from_a(codec.encode(codec.Pause(1)))
    assert visitor.producerState == "paused"
    b.from_a(codec.encode(codec.Resume(1)))
    assert visitor.producerState == "producing"


def test_b_pings_its_link_and_drops_it_when_a_falls_silent(b):
    b.clock.advance(link.LINK_PING)
    assert b.new_messages() == [bytes([link.PING])]
    b.from_a(bytes([link.PONG]))
    b.clock.advance(link.LINK_SILENCE - 1)
    assert not b.link_transport.aborted
    b.clock.advance(link.LINK_PING)
    settle(b.clock)
    assert b.link_transport.aborted
