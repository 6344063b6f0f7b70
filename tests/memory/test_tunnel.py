"""A tunnel's WebSocket in memory: greeting, conversations, errors, liveness, flow control."""

import pytest
from twisted.internet import task

from tests.support.memory import (
    BINARY,
    CLOSE,
    PONG,
    TEXT,
    WebSocketPeer,
    data,
    opened,
    parse_response,
    settle,
    signal,
    upgrade_request,
    visit,
    visitor_request,
    websocket_accept,
)
from tpot.protocol.codec import CLOSE_PROTOCOL_ERROR
from tpot.protocol.flow import MAX_UNACKED_BYTES, WEBSOCKET_BUFFER
from tpot.protocol.session import ConversationIds
from tpot.server.authenticator import Authenticator
from tpot.server.tunnel import LIVENESS_TIMEOUT


def assert_503(transport):
    response = parse_response(transport.value())
    assert response.status == 503
    assert int(response.header("content-length")) == len(response.body)
    assert response.header("content-type").startswith("text/plain")
    assert transport.lost


# Opening.


def test_upgrade_answers_101_and_greets_with_the_name(server):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = upgrade_request(
        "/create-tpot?subdomain=wire",
        key=key,
        headers=[("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")],
    )
    transport = server.connect(request)
    settle(server.clock)
    peer = WebSocketPeer(transport)
    assert peer.new_messages() == [b"\x11GTPoT/1 wire"]
    assert peer.response.status == 101
    assert peer.response.header("sec-websocket-accept") == websocket_accept(key)
    assert peer.response.header("upgrade").lower() == "websocket"
    # Compression is never negotiated: the reference client would not expect it.
    assert peer.response.header("sec-websocket-extensions") is None
    assert server.table.active_tunnels() == 1


def test_frames_sent_with_the_upgrade_are_not_lost(server):
    transport = server.connect(upgrade_request("/create-tpot?subdomain=eager") + b"\x89\x80abcd")
    settle(server.clock)
    peer = WebSocketPeer(transport)
    frames = peer.new_frames()
    assert [f.opcode for f in frames] == [BINARY, PONG]


# Conversations.


def test_visitor_opens_a_conversation_with_its_address_and_head(server):
    peer = server.open_tunnel("wire")
    request = b"GET /index.html HTTP/1.1\r\nHost: wire.localhost:3002\r\nUser-Agent: t\r\n\r\n"
    transport = server.connect(request, peer=("127.0.0.1", 51976))
    settle(server.clock)
    assert peer.new_messages() == [b"\x11H\x01\x00\x7f\x00\x00\x01\x08\xcb", data(1, request)]
    assert transport.value() == b"" and not transport.lost


def test_data_flows_both_ways_byte_for_byte(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    every_byte = bytes(range(256)) * 3
    large = bytes(range(251)) * 400  # > 65535: a 64-bit frame length
    medium = b"m" * 300  # a 16-bit frame length
    for payload in (b"HTTP/1.1 200 OK\r\n", every_byte, medium, large, b""):
        peer.send(data(cid, payload))
    assert visitor.value() == b"HTTP/1.1 200 OK\r\n" + every_byte + medium + large
    visitor.receive(every_byte)
    visitor.receive(large)
    assert peer.new_messages() == [data(cid, every_byte), data(cid, large)]


def test_client_close_closes_the_visitor_after_what_was_written(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    peer.send(data(cid, b"HTTP/1.1 204 No Content\r\n\r\n"))
    peer.send(signal(cid, b"X"))
    settle(server.clock)
    assert visitor.lost
    assert visitor.value() == b"HTTP/1.1 204 No Content\r\n\r\n"
    # No X back: the client said it first.
    assert peer.new_messages() == []
    assert cid not in peer.protocol.conversations


def test_visitor_bytes_after_client_close_are_not_relayed(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    peer.send(signal(cid, b"X"))
    visitor.receive(b"late")
    settle(server.clock)
    assert peer.new_messages() == []


def test_visitor_close_sends_x(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    visitor.peer_closes()
    assert peer.new_messages() == [signal(cid, b"X")]
    assert cid not in peer.protocol.conversations
    # Whatever the client still sends for it is ignored.
    peer.send(data(cid, b"too late"))
    peer.send(signal(cid, b"X"))
    assert peer.new_messages() == [] and not peer.transport.lost


def test_no_connect_gives_a_fresh_visitor_502(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    peer.send(signal(cid, b"N"))
    settle(server.clock)
    response = parse_response(visitor.value())
    assert response.status == 502
    assert b"could not connect to its local service" in response.body
    assert visitor.lost
    assert peer.new_messages() == []


def test_no_connect_after_data_just_closes(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    peer.send(data(cid, b"HTTP/1.1 200 OK\r\n"))
    peer.send(signal(cid, b"N"))
    settle(server.clock)
    assert visitor.lost and visitor.value() == b"HTTP/1.1 200 OK\r\n"


@pytest.mark.parametrize("message", [data(99, b"x"), signal(99, b"P"), signal(99, b"C"), signal(99, b"X"), signal(99, b"N"), data(0, b"x")])
def test_messages_for_unknown_ids_are_ignored(server, message):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    peer.send(message)
    settle(server.clock)
    assert peer.new_frames() == []
    assert not peer.transport.lost and not visitor.lost
    assert visitor.value() == b"" and visitor.producerState == "producing"
    peer.send(data(cid, b"still here"))
    assert visitor.value() == b"still here"


def test_ids_count_up_and_are_not_reused_at_once(server):
    peer = server.open_tunnel("wire")
    first, one = visit(server, peer, 40001)
    second, two = visit(server, peer, 40002)
    first.peer_closes()
    assert peer.new_messages() == [signal(1, b"X")]
    third, three = visit(server, peer, 40003)
    assert (one, two, three) == (1, 2, 3)


def test_ids_wrap_within_1_to_32767(server):
    peer = server.open_tunnel("wire")
    peer.protocol.session.ids._last = 32765
    ids = [visit(server, peer, 40000 + n)[1] for n in range(3)]
    assert ids == [32766, 32767, 1]


def test_ids_skip_those_still_open_when_wrapping(server):
    peer = server.open_tunnel("wire")
    peer.protocol.session.ids = ConversationIds(maximum=3)
    visitors = [visit(server, peer, 40000 + n) for n in range(3)]
    assert [cid for _, cid in visitors] == [1, 2, 3]
    visitors[1][0].peer_closes()
    peer.new_messages()
    assert visit(server, peer, 40010)[1] == 2


def test_conversation_ids_never_exceed_32767():
    ids = ConversationIds()
    allocated = [ids.allocate() for _ in range(32767)]
    assert sorted(allocated) == list(range(1, 32768))
    assert ids.allocate() is None
    ids.release(5)
    assert ids.allocate() == 5


def test_too_many_conversations_is_503_for_the_visitor(server):
    peer = server.open_tunnel("wire")
    peer.protocol.session.ids = ConversationIds(maximum=1)
    visit(server, peer, 40001)
    refused = server.visit("wire", visitor_request("wire"))
    settle(server.clock)
    assert_503(refused)
    assert peer.new_messages() == []


# Protocol errors.


@pytest.mark.parametrize(
    "payload, opcode",
    [
        (b"\x13\x01\x00D", BINARY),
        (b"\x12\x01\x00Z", BINARY),
        (b"\x12\x01\x00Xjunk", BINARY),
        (b"\x12\x01", BINARY),
        (b"", BINARY),
        (b"\x11GTPoT/1 evil", BINARY),
        (b"\x11H\x01\x00\x7f\x00\x00\x01\x08\xcb", BINARY),
        (b"\x11Q", BINARY),
        (b"\x12\x01\x00Dhello", TEXT),
    ],
    ids=["type", "code", "trailing", "truncated", "empty", "greeting", "open", "control", "text"],
)
def test_bad_message_closes_only_that_tunnel_with_4180(server, payload, opcode):
    bad = server.open_tunnel("bad")
    good = server.open_tunnel("good")
    bad_visitor, _ = visit(server, bad, 40001)
    good_visitor, good_id = visit(server, good, 40002)

    bad.send(payload, opcode)
    frames = bad.new_frames()
    assert len(frames) == 1 and frames[0].opcode == CLOSE
    assert frames[0].close_code == CLOSE_PROTOCOL_ERROR
    assert len(frames[0].payload) > 2  # a reason
    bad.close(CLOSE_PROTOCOL_ERROR)
    settle(server.clock)
    assert bad.transport.lost
    assert_503(bad_visitor)
    assert server.tunnel_serving("bad") is None

    # The other tunnel and its visitor carry on.
    assert not good.transport.lost and not good_visitor.lost
    good.send(data(good_id, b"fine"))
    good_visitor.receive(b"also fine")
    assert good_visitor.value() == b"fine"
    assert good.new_messages() == [data(good_id, b"also fine")]
    another, _ = visit(server, good, 40003)
    assert server.tunnel_serving("good") is good.protocol


def test_bad_message_tunnel_dropped_if_client_does_not_answer_the_close(server):
    bad = server.open_tunnel("bad")
    bad.send(b"\x42")
    assert bad.new_frames()[0].close_code == CLOSE_PROTOCOL_ERROR
    server.clock.advance(10)
    settle(server.clock)
    assert bad.transport.lost
    assert server.tunnel_serving("bad") is None


# The tunnel going away.


def test_tunnel_closing_gives_503_to_unanswered_visitors_and_closes_the_others(server):
    peer = server.open_tunnel("wire")
    waiting, _ = visit(server, peer, 40001)
    answered, cid = visit(server, peer, 40002)
    peer.send(data(cid, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"))
    peer.close()
    settle(server.clock)
    assert peer.transport.lost
    assert [f.opcode for f in peer.new_frames()] == [CLOSE]
    assert_503(waiting)
    assert answered.lost
    assert answered.value() == b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"


def test_tunnel_connection_lost_ends_its_visitors(server):
    peer = server.open_tunnel("wire")
    waiting, _ = visit(server, peer, 40001)
    peer.transport.peer_closes()
    settle(server.clock)
    assert_503(waiting)
    assert server.table.active_tunnels() == 0
    # Visitors arriving afterwards find no tunnel.
    late = server.visit("wire")
    assert_503(late)


def test_name_is_released_on_close_and_can_be_claimed_again(server):
    first = server.open_tunnel("wire")
    first.close()
    settle(server.clock)
    assert first.transport.lost
    second = server.open_tunnel("wire")
    visitor, cid = visit(server, second, 40001)
    assert cid == 1
    second.send(data(cid, b"ok"))
    assert visitor.value() == b"ok"


def test_a_stale_tunnel_closing_does_not_release_a_newer_holder(server):
    first = server.open_tunnel("wire")
    first.transport.peer_closes()
    second = server.open_tunnel("wire")
    # A second close notification from the dead tunnel must not free the name.
    first.protocol.store.release(first.protocol.claim.lease)
    assert server.tunnel_serving("wire") is second.protocol


# Liveness.


def test_silent_tunnel_is_dropped_after_30_s(server):
    peer = server.open_tunnel("wire")
    waiting, _ = visit(server, peer, 40001)
    server.clock.advance(LIVENESS_TIMEOUT - 1)
    assert not peer.transport.disconnecting
    server.clock.advance(1)
    settle(server.clock)
    assert peer.transport.lost
    assert_503(waiting)
    assert server.table.active_tunnels() == 0
    assert server.open_tunnel("wire").name == "wire"


def test_pings_keep_the_tunnel_alive(server):
    peer = server.open_tunnel("wire")
    for _ in range(10):
        server.clock.advance(15)
        peer.ping(b"alive")
        frames = peer.new_frames()
        assert [(f.opcode, f.payload) for f in frames] == [(PONG, b"alive")]
    assert not peer.transport.disconnecting
    server.clock.advance(LIVENESS_TIMEOUT)
    settle(server.clock)
    assert peer.transport.lost


def test_messages_also_count_as_signs_of_life(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    for _ in range(5):
        server.clock.advance(20)
        peer.send(data(cid, b"."))
    assert not peer.transport.disconnecting
    assert visitor.value() == b"....."


def test_liveness_timer_goes_with_the_tunnel(server):
    peer = server.open_tunnel("wire")
    peer.close()
    settle(server.clock)
    assert not [c for c in server.clock.getDelayedCalls() if "liveness" in repr(c)]


# Flow control.


def test_slow_visitor_sends_pause_then_resume(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    visitor.producer.pauseProducing()
    visitor.producer.pauseProducing()
    assert peer.new_messages() == [signal(cid, b"P")]
    visitor.producer.resumeProducing()
    visitor.producer.resumeProducing()
    assert peer.new_messages() == [signal(cid, b"C")]


def test_client_pause_stops_reading_the_visitor(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    peer.send(signal(cid, b"P"))
    assert visitor.producerState == "paused"
    visitor.receive(b"held back")
    assert peer.new_messages() == []
    peer.send(signal(cid, b"C"))
    assert visitor.producerState == "producing"
    settle(server.clock)
    assert peer.new_messages() == [data(cid, b"held back")]


def test_backed_up_tunnel_pauses_every_visitor(server):
    peer = server.open_tunnel("wire")
    visitors = [visit(server, peer, 40000 + n) for n in range(3)]
    tunnel_producer = peer.transport.producer
    assert tunnel_producer is not None
    tunnel_producer.pauseProducing()
    assert [v.producerState for v, _ in visitors] == ["paused"] * 3
    tunnel_producer.resumeProducing()
    assert [v.producerState for v, _ in visitors] == ["producing"] * 3


def test_visitor_arriving_while_backed_up_starts_paused(server):
    peer = server.open_tunnel("wire")
    peer.transport.producer.pauseProducing()
    request = visitor_request("wire")
    visitor = server.connect(request)
    settle(server.clock)
    assert visitor.producerState == "paused"
    visitor.receive(b"more")
    settle(server.clock)
    assert peer.new_messages() == [opened(1, visitor.getPeer().port), data(1, request)]
    peer.transport.producer.resumeProducing()
    assert visitor.producerState == "producing"
    settle(server.clock)
    assert peer.new_messages() == [data(1, b"more")]


def test_pause_reasons_are_independent(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    peer.send(signal(cid, b"P"))
    peer.transport.producer.pauseProducing()
    peer.transport.producer.resumeProducing()
    assert visitor.producerState == "paused"
    peer.send(signal(cid, b"C"))
    assert visitor.producerState == "producing"
    peer.transport.producer.pauseProducing()
    peer.send(signal(cid, b"P"))
    peer.send(signal(cid, b"C"))
    assert visitor.producerState == "paused"


def test_client_ignoring_pause_loses_the_conversation(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    visitor.producer.pauseProducing()
    assert peer.new_messages() == [signal(cid, b"P")]
    chunk = b"z" * (1024 * 1024 - 4)
    sent = 0
    while sent <= MAX_UNACKED_BYTES:
        peer.send(data(cid, chunk))
        sent += len(chunk)
    settle(server.clock)
    assert visitor.aborted and visitor.lost
    assert len(visitor.value()) == sent - len(chunk)
    assert peer.new_messages() == [signal(cid, b"X")]
    assert not peer.transport.lost


# Authentication running off the reactor thread: the connection waits meanwhile.


def test_bytes_during_a_slow_auth_check_are_kept(server):
    clock = server.clock
    server.authenticator = Authenticator(
        "k" * 40, lambda f, *a: task.deferLater(clock, 1, f, *a), clock_ms=lambda: 1_800_000_000_000
    )
    server.router.authenticator = server.authenticator
    from tpot.protocol.auth import make_authorization

    header = make_authorization("k" * 40, timestamp_ms=1_800_000_000_000)
    transport = server.connect(upgrade_request("/create-tpot?subdomain=slow", headers=[("Authorization", header)]))
    transport.receive(b"\x89\x84abcd" + bytes(a ^ b for a, b in zip(b"ping", b"abcd")))
    assert transport.value() == b""
    clock.advance(1)
    settle(clock)
    peer = WebSocketPeer(transport)
    frames = peer.new_frames()
    assert peer.response.status == 101
    assert [(f.opcode, f.payload) for f in frames] == [(BINARY, b"\x11GTPoT/1 slow"), (PONG, b"ping")]


def test_leaving_during_the_auth_check_frees_the_name(server):
    clock = server.clock
    server.router.authenticator = Authenticator(
        "k" * 40, lambda f, *a: task.deferLater(clock, 1, f, *a), clock_ms=lambda: 1_800_000_000_000
    )
    from tpot.protocol.auth import make_authorization

    header = make_authorization("k" * 40, timestamp_ms=1_800_000_000_000)
    transport = server.connect(upgrade_request("/create-tpot?subdomain=gone", headers=[("Authorization", header)]))
    transport.peer_closes()
    clock.advance(1)
    settle(clock)
    assert server.store.claim("gone").result.name == "gone"


# Closing a visitor whose send buffer filled up (Twisted keeps a connection with a paused
# producer open until the producer is unregistered).


def test_client_close_reaches_a_visitor_whose_buffer_was_full(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    visitor.hold()
    peer.send(data(cid, b"x" * 100_000))
    assert peer.new_messages() == [signal(cid, b"P")]
    peer.send(data(cid, b"the end"))
    peer.send(signal(cid, b"X"))
    settle(server.clock)
    assert not visitor.lost  # still writing what it has
    visitor.drain()
    settle(server.clock)
    assert visitor.lost and not visitor.aborted
    assert visitor.value() == b"x" * 100_000 + b"the end"
    assert peer.new_messages() == []


def test_no_connect_reaches_a_visitor_whose_buffer_was_full(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    visitor.hold()
    peer.send(data(cid, b"x" * 100_000))
    peer.send(signal(cid, b"N"))
    visitor.drain()
    settle(server.clock)
    assert visitor.lost


def test_tunnel_loss_reaches_a_visitor_whose_buffer_was_full(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    visitor.hold()
    peer.send(data(cid, b"x" * 100_000))
    peer.transport.peer_closes()
    visitor.drain()
    settle(server.clock)
    assert visitor.lost


def test_visitor_resumes_after_its_buffer_drains(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    visitor.hold()
    peer.send(data(cid, b"x" * 70_000))
    peer.send(data(cid, b"y" * 70_000))
    assert peer.new_messages() == [signal(cid, b"P")]
    visitor.drain()
    assert peer.new_messages() == [signal(cid, b"C")]


def test_full_tunnel_send_buffer_pauses_visitors_until_it_drains(server):
    peer = server.open_tunnel("wire")
    first, one = visit(server, peer, 40001)
    second, _ = visit(server, peer, 40002)
    peer.transport.hold()
    chunk = b"u" * 65536
    first.receive(chunk)
    assert first.producerState == second.producerState == "producing"  # one message is no backlog
    for _ in range(WEBSOCKET_BUFFER // len(chunk)):
        first.receive(chunk)
    assert first.producerState == second.producerState == "paused"
    third = server.visit("wire")
    assert third.producerState == "paused"
    peer.transport.drain()
    assert [v.producerState for v in (first, second, third)] == ["producing"] * 3
    messages = peer.new_messages()
    assert messages[0] == data(one, chunk)


def test_visitor_of_a_closing_tunnel_gets_503(server):
    peer = server.open_tunnel("wire")
    peer.send(b"\x13")  # a protocol error: the server starts the closing handshake
    assert peer.new_frames()[0].close_code == CLOSE_PROTOCOL_ERROR
    visitor = server.visit("wire")
    settle(server.clock)
    assert_503(visitor)
    assert peer.new_frames() == []
