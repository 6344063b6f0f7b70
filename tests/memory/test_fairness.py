"""One tunnel's WebSocket takes turns with the other sockets (frames.MESSAGES_PER_TURN), and
its idle messages are held to a budget (tpot.protocol.budget): throttled, then closed."""

from tests.support.memory import CLOSE, PING, PONG, data, encode_frame, settle, signal, visit
from tpot.protocol.budget import IDLE_BURST, IDLE_RATE, PATIENCE, THROTTLE
from tpot.protocol.codec import CLOSE_TOO_MANY_MESSAGES
from tpot.protocol.frames import MESSAGES_PER_TURN

MORE = MESSAGES_PER_TURN * 2 + 50  # two whole turns and part of a third


def data_frames(conversation_id, count):
    return b"".join(encode_frame(0x2, data(conversation_id, b"%d," % i)) for i in range(count))


def idle_frames(count, first_id=30000):
    # Pauses and resumes for ids that are not open: valid, and they relay nothing.
    return b"".join(encode_frame(0x2, signal(first_id + i % 1000, b"PC"[i % 2:i % 2 + 1])) for i in range(count))


def expected(count):
    return b"".join(b"%d," % i for i in range(count))


def tunnel_with_visitor(server, port=41000):
    peer = server.open_tunnel("fair")
    visitor, conversation_id = visit(server, peer, port)
    return peer, visitor, conversation_id


def test_a_read_of_many_messages_is_taken_a_turn_at_a_time(server):
    peer, visitor, conversation_id = tunnel_with_visitor(server)
    peer.transport.receive(data_frames(conversation_id, MORE))
    assert visitor.value() == expected(MESSAGES_PER_TURN)
    # The socket is not read until the buffer is empty; what comes meanwhile waits.
    assert peer.transport.producerState == "paused"
    peer.transport.receive(encode_frame(0x2, data(conversation_id, b"later")))
    assert visitor.value() == expected(MESSAGES_PER_TURN)
    # The next turns: a zero-delay call each (Clock runs them in one go, a reactor one a turn).
    assert [call.getTime() for call in server.clock.getDelayedCalls()
            if call.func == peer.protocol._lean_next_turn] == [server.clock.seconds()]
    settle(server.clock)
    assert visitor.value() == expected(MORE) + b"later"
    assert peer.transport.producerState == "producing"
    assert not [call for call in server.clock.getDelayedCalls() if call.func == peer.protocol._lean_next_turn]


def test_a_turn_counts_autobahns_frames_too(server):
    peer, _, _ = tunnel_with_visitor(server)
    peer.new_frames()
    peer.transport.receive(encode_frame(PING, b"p") * MORE)
    # A ping takes Autobahn two steps (its header, then its payload).
    first = [frame.opcode for frame in peer.new_frames()]
    assert first == [PONG] * (MESSAGES_PER_TURN // 2)
    settle(server.clock)
    assert [frame.opcode for frame in peer.new_frames()] == [PONG] * (MORE - len(first))


def test_a_message_that_closes_mid_turn_leaves_the_rest_to_autobahn(server):
    peer, visitor, conversation_id = tunnel_with_visitor(server)
    peer.transport.receive(data_frames(conversation_id, 10) + encode_frame(0x2, b"\x13bad")
                           + data_frames(conversation_id, MORE))
    settle(server.clock)
    assert visitor.value() == expected(10)
    assert [frame.close_code for frame in peer.new_frames() if frame.opcode == CLOSE] == [4180]


def test_idle_messages_within_the_burst_are_not_held(server):
    peer, visitor, conversation_id = tunnel_with_visitor(server)
    peer.transport.receive(idle_frames(IDLE_BURST - 10) + encode_frame(0x2, data(conversation_id, b"then data")))
    settle(server.clock)
    assert visitor.value() == b"then data"
    assert peer.transport.producerState == "producing"


def test_idle_messages_beyond_the_burst_hold_the_tunnel_for_a_while(server):
    peer, visitor, conversation_id = tunnel_with_visitor(server)
    peer.transport.receive(idle_frames(IDLE_BURST + 10) + encode_frame(0x2, data(conversation_id, b"then data")))
    settle(server.clock)
    assert visitor.value() == b""
    assert peer.transport.producerState == "paused"
    server.clock.advance(THROTTLE)
    settle(server.clock)
    assert visitor.value() == b"then data"
    assert peer.transport.producerState == "producing"


def test_data_for_a_live_conversation_costs_no_budget(server):
    peer, visitor, conversation_id = tunnel_with_visitor(server)
    peer.transport.receive(data_frames(conversation_id, IDLE_BURST + 10))
    settle(server.clock)
    assert visitor.value() == expected(IDLE_BURST + 10)
    assert peer.transport.producerState == "producing"


def test_a_flood_kept_up_is_throttled_then_closed_with_4429(server):
    peer, visitor, conversation_id = tunnel_with_visitor(server)
    step, closed_at = 0.05, None
    burst = idle_frames(2000)  # 40 000 a second offered, eight times the rate
    for _ in range(int((PATIENCE + 5) / step)):
        if peer.transport.producerState == "producing":
            peer.transport.receive(burst)
        settle(server.clock)
        closes = [frame for frame in peer.new_frames() if frame.opcode == CLOSE]
        if closes:
            assert [frame.close_code for frame in closes] == [CLOSE_TOO_MANY_MESSAGES]
            closed_at = server.clock.seconds()
            break
        server.clock.advance(step)
    assert closed_at is not None, "the flood was never closed"
    assert PATIENCE <= closed_at <= PATIENCE + 1
    peer.close(CLOSE_TOO_MANY_MESSAGES)
    settle(server.clock)
    assert visitor.lost  # its visitor goes with the tunnel


def test_an_honest_pace_of_pauses_and_resumes_is_never_held(server):
    peer, visitor, conversation_id = tunnel_with_visitor(server)
    step = 0.1
    pairs = int(IDLE_RATE * step * 0.9) // 2
    pace = (encode_frame(0x2, signal(conversation_id, b"P")) + encode_frame(0x2, signal(conversation_id, b"C"))) * pairs
    for _ in range(int((PATIENCE + 5) / step)):
        peer.transport.receive(pace)
        settle(server.clock)
        assert peer.transport.producerState == "producing"
        server.clock.advance(step)
    peer.transport.receive(encode_frame(0x2, data(conversation_id, b"still here")))
    assert visitor.value() == b"still here"
    assert not [frame for frame in peer.new_frames() if frame.opcode == CLOSE]


def test_the_client_takes_turns_too(server):
    from tests.memory.test_session import Client, opened
    from tpot.protocol import frames

    client = Client(server.clock, target="127.0.0.1:8080")
    client.answer_upgrade()
    client.transport.receive(b"".join(frames.message_frame(b"\x11GTPoT/1 wire") + frames.message_frame(opened(1))))
    target = client.connect_target()
    target.clear()
    client.transport.receive(b"".join(b"".join(frames.data_frame(1, b"%d," % i)) for i in range(MORE)))
    assert target.value() == expected(MESSAGES_PER_TURN)
    assert client.transport.producerState == "paused"
    settle(server.clock)
    assert target.value() == expected(MORE)
    assert client.transport.producerState == "producing"


def test_turns_and_a_backed_up_websocket_pause_reading_each_for_its_own_reason(server):
    peer, visitor, conversation_id = tunnel_with_visitor(server)
    tunnel = peer.protocol
    peer.transport.receive(data_frames(conversation_id, MORE))
    tunnel.backpressure.pauseProducing()  # its send buffer filled meanwhile
    settle(server.clock)
    assert visitor.value() == expected(MORE)
    assert peer.transport.producerState == "paused"  # the turns are over, the buffer still full
    tunnel.backpressure.resumeProducing()
    assert peer.transport.producerState == "producing"
