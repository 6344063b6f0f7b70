"""What a tunnel's client can make the server hold, in memory: the bytes it sends for paused
conversations, bounded per tunnel and for the whole server (4009), and the answers it does
not read (its WebSocket is not read while backed up)."""

from tests.memory.test_server_connect import joined, slow_reader, tcp_tunnel
from tests.support.memory import (
    BINARY,
    CLOSE,
    PONG,
    data,
    settle,
    signal,
    visit,
)
from tpot.protocol.codec import CLOSE_TOO_MUCH_UNACKED
from tpot.protocol.flow import (
    MAX_SERVER_UNACKED_BYTES,
    MAX_TUNNEL_UNACKED_BYTES,
    MAX_UNACKED_BYTES,
    WEBSOCKET_BUFFER,
    UnackedBudget,
)
from tpot.server.connect import BACKED_UP
from tpot.server.tunnel import LIVENESS_TIMEOUT

CHUNK = b"z" * 4000


def paused_visitor(server, peer, port):
    """A visitor whose buffer is full: the server asked the client to pause it."""
    visitor, cid = visit(server, peer, port)
    visitor.producer.pauseProducing()
    assert peer.new_messages() == [signal(cid, b"P")]
    return visitor, cid


def close_frame(peer):
    frames = peer.new_frames()
    assert frames and frames[-1].opcode == CLOSE, frames
    return frames[-1].close_code, frames[-1].payload[2:].decode()


def test_the_bounds_are_several_conversations_allowances():
    assert MAX_TUNNEL_UNACKED_BYTES == 4 * MAX_UNACKED_BYTES == 64 * 1024 * 1024
    assert MAX_SERVER_UNACKED_BYTES == 4 * MAX_TUNNEL_UNACKED_BYTES == 256 * 1024 * 1024


def test_a_budget_counts_into_its_parent_and_names_the_one_over():
    server = UnackedBudget(100, "server")
    tunnel = UnackedBudget(60, "tunnel", server)
    other = UnackedBudget(60, "tunnel", server)
    assert tunnel.take(50) is None and other.take(50) is None
    assert (tunnel.held, other.held, server.held) == (50, 50, 100)
    assert other.take(1) is server
    assert tunnel.take(20) is tunnel  # both over: the tunnel's own first
    tunnel.give_back(70)
    other.give_back(51)
    assert (tunnel.held, other.held, server.held) == (0, 0, 0)


def test_a_tunnel_over_its_bound_is_cut_off_with_4009(server):
    peer = server.open_tunnel("greedy")
    tunnel = peer.protocol
    tunnel.unacked.limit = 3 * len(CHUNK) - 1
    paused = [paused_visitor(server, peer, 40001 + i) for i in range(3)]
    waiting, _ = visit(server, peer, 40010)  # nothing sent to it yet
    answered, answered_id = visit(server, peer, 40011)
    peer.send(data(answered_id, b"hello"))
    for visitor, cid in paused[:2]:
        peer.send(data(cid, CHUNK))
    assert tunnel.unacked.held == server.tunnels.unacked.held == 2 * len(CHUNK)
    assert not any(visitor.disconnecting for visitor, _ in paused)
    peer.send(data(paused[2][1], CHUNK))  # one byte too many, summed over three conversations
    # The conversations holding those bytes are dropped at once, and their bytes returned.
    settle(server.clock)
    assert all(visitor.aborted and visitor.lost for visitor, _ in paused)
    assert tunnel.unacked.held == server.tunnels.unacked.held == 0
    code, reason = close_frame(peer)
    assert code == CLOSE_TOO_MUCH_UNACKED and "tunnel" in reason and "paused" in reason
    # Nothing more from that client reaches a visitor.
    peer.send(data(answered_id, b"more"))
    assert answered.value() == b"hello"
    # The others end with the tunnel: a 503 page if unanswered, else closed.
    peer.close(CLOSE_TOO_MUCH_UNACKED)
    settle(server.clock)
    assert peer.transport.lost
    assert waiting.value().startswith(b"HTTP/1.1 503 ") and waiting.lost
    assert answered.value() == b"hello" and answered.lost and not answered.aborted
    assert server.table.active_tunnels() == 0


def test_what_the_paused_visitors_were_not_sent_is_not_written(server):
    peer = server.open_tunnel("greedy")
    peer.protocol.unacked.limit = len(CHUNK)
    visitor, cid = paused_visitor(server, peer, 40001)
    before = len(visitor.value())
    peer.send(data(cid, CHUNK))
    assert len(visitor.value()) == before + len(CHUNK)
    peer.send(data(cid, b"!"))
    assert len(visitor.value()) == before + len(CHUNK)
    assert close_frame(peer)[0] == CLOSE_TOO_MUCH_UNACKED


def test_the_tunnel_that_pushes_the_server_over_its_bound_is_cut_off(server):
    server.tunnels.unacked.limit = 3 * len(CHUNK) - 1
    first = server.open_tunnel("first")
    second = server.open_tunnel("second")
    one, one_id = paused_visitor(server, first, 40001)
    two, two_id = paused_visitor(server, second, 40002)
    first.send(data(one_id, CHUNK + CHUNK))
    second.send(data(two_id, CHUNK))
    settle(server.clock)
    assert two.aborted and not one.disconnecting
    code, reason = close_frame(second)
    assert code == CLOSE_TOO_MUCH_UNACKED and "server" in reason
    assert [frame.opcode for frame in first.new_frames()] == []
    assert server.tunnels.unacked.held == first.protocol.unacked.held == 2 * len(CHUNK)
    # The first tunnel goes on: its visitor drains and resumes.
    one.producer.resumeProducing()
    assert first.new_messages() == [signal(one_id, b"C")]
    assert server.tunnels.unacked.held == 0


def test_the_bytes_are_returned_on_resume_and_when_the_conversation_ends(server):
    peer = server.open_tunnel("fair")
    tunnel = peer.protocol
    visitor, cid = paused_visitor(server, peer, 40001)
    leaving, leaving_id = paused_visitor(server, peer, 40002)
    peer.send(data(cid, CHUNK))
    peer.send(data(leaving_id, CHUNK + CHUNK))
    assert tunnel.unacked.held == server.tunnels.unacked.held == 3 * len(CHUNK)
    visitor.producer.resumeProducing()
    assert tunnel.unacked.held == server.tunnels.unacked.held == 2 * len(CHUNK)
    peer.send(data(cid, CHUNK))  # not paused: not counted
    assert tunnel.unacked.held == 2 * len(CHUNK)
    leaving.peer_closes()
    settle(server.clock)
    assert tunnel.unacked.held == server.tunnels.unacked.held == 0
    # Paused again, counted again from zero.
    visitor.producer.pauseProducing()
    peer.send(data(cid, CHUNK))
    assert tunnel.unacked.held == len(CHUNK)


def test_honest_in_flight_within_the_bounds_is_untouched(server):
    peer = server.open_tunnel("honest")
    peer.protocol.unacked.limit = 8 * len(CHUNK)
    visitors = [paused_visitor(server, peer, 40001 + i) for i in range(4)]
    for visitor, cid in visitors:
        peer.send(data(cid, CHUNK + CHUNK))  # 8 chunks in all: at the bound, not over it
    settle(server.clock)
    assert not any(visitor.disconnecting for visitor, _ in visitors)
    assert [frame.opcode for frame in peer.new_frames()] == []
    for visitor, cid in visitors:
        assert visitor.value().endswith(CHUNK + CHUNK)
        visitor.producer.resumeProducing()
    assert peer.new_messages() == [signal(cid, b"C") for _, cid in visitors]
    assert server.tunnels.unacked.held == 0


def test_a_connection_over_the_tunnels_bound_is_dropped_with_the_tunnel(server):
    tunnel, side = slow_reader(server)
    tunnel.protocol.unacked.limit = len(CHUNK)
    tunnel.send(data(1, CHUNK + b"!"))
    settle(server.clock)
    assert side.transport.aborted and side.transport.lost
    assert close_frame(tunnel)[0] == CLOSE_TOO_MUCH_UNACKED
    assert server.tunnels.unacked.held == 0


# A client that does not read what the server answers.


def ping_until_paused(peer):
    """Pings from a client that reads nothing, until the server stops reading: how many."""
    peer.transport.hold()
    for sent in range(1, 10_000):
        peer.ping(b"p" * 125)
        if peer.transport.producerState == "paused":
            return sent
    raise AssertionError("the server read 10000 pings without their pongs being read")


def test_a_tunnel_is_not_read_while_its_websocket_is_backed_up(server):
    peer = server.open_tunnel("pinger")
    sent = ping_until_paused(peer)
    assert sent * 127 > WEBSOCKET_BUFFER
    queued = len(peer.transport.value())
    for _ in range(1000):
        peer.ping(b"p" * 125)  # left in the socket, unanswered
    assert len(peer.transport.value()) == queued
    peer.transport.drain()
    settle(server.clock)
    pongs = [frame for frame in peer.new_frames() if frame.opcode == PONG]
    assert len(pongs) == sent + 1000
    assert peer.transport.producerState == "producing"


def test_a_tunnel_that_never_reads_is_still_dropped_when_silent(server):
    peer = server.open_tunnel("pinger")
    waiting, _ = visit(server, peer, 40001)
    ping_until_paused(peer)
    for _ in range(100):
        peer.ping(b"p" * 125)  # never read: no sign of life
    server.clock.advance(LIVENESS_TIMEOUT)
    settle(server.clock)
    assert peer.transport.lost and peer.transport.aborted
    assert waiting.value().startswith(b"HTTP/1.1 503 ") and waiting.lost
    assert server.table.active_tunnels() == 0


def test_visitors_still_resume_after_the_tunnel_drains(server):
    peer = server.open_tunnel("busy")
    visitor, cid = visit(server, peer, 40001)
    peer.transport.hold()
    visitor.receive(b"u" * (WEBSOCKET_BUFFER + 1))
    assert peer.transport.producerState == "paused"
    assert visitor.producerState == "paused"
    peer.send(data(cid, b"down"))  # waits in the socket
    assert visitor.value() == b""
    peer.transport.drain()
    settle(server.clock)
    assert visitor.value() == b"down"
    assert visitor.producerState == peer.transport.producerState == "producing"


def test_a_connection_is_not_read_while_its_buffer_is_full(server):
    tunnel, side = slow_reader(server)
    assert BACKED_UP in side.protocol.reading.reasons
    side.send(b"up")  # left in its socket
    side.ping(b"p")
    assert tunnel.new_messages() == []
    side.transport.drain()
    settle(server.clock)
    assert tunnel.new_messages() == [signal(1, b"C"), data(1, b"up")]
    assert [frame.opcode for frame in side.new_frames()] == [BINARY, PONG]
    assert side.protocol.reading.reasons == set()


def test_a_connection_is_read_while_its_buffer_has_room(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    side.send(b"up")
    side.ping(b"p")
    assert tunnel.new_messages() == [data(1, b"up")]
    assert [frame.opcode for frame in side.new_frames()] == [PONG]
