"""tpot.protocol.frames, our own framing of the hot path, checked against Autobahn's: frames we build
are parsed by plain Autobahn peers, frames Autobahn builds are parsed by us, and the
tunnel protocols hand anything unusual back to Autobahn."""

import os
import struct

import pytest
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.address import IPv4Address

from tests.support.memory import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    MemoryServer,
    MemoryTransport,
    connect,
    encode_frame,
    settle,
    upgrade_request,
    use_clock,
    websocket_accept,
)
from tests.support.memory import apply_mask as reference_mask
from tpot.protocol import codec, frames

SIZES = [1, 3, 4, 5, 125, 126, 127, 1000, 1023, 1024, 4091, 4092, 4095, 4096, 65531, 65535, 65536, 70000, 300_000]
LIMIT = 1024 * 1024


@pytest.fixture
def clock():
    server = MemoryServer()
    restore = use_clock(server.clock)
    yield server.clock
    restore()


class Recording:
    def onOpen(self):
        self.messages = []

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))


class RecordingServer(Recording, WebSocketServerProtocol):
    pass


class RecordingClient(Recording, WebSocketClientProtocol):
    pass


def options(factory):
    factory.setProtocolOptions(maxFramePayloadSize=LIMIT, maxMessagePayloadSize=LIMIT, failByDrop=False)
    return factory


def autobahn_server(clock):
    """A plain Autobahn server end, open; it must unmask what we send as a client."""
    factory = options(WebSocketServerFactory("ws://localhost"))
    factory.protocol = RecordingServer
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = connect(protocol, MemoryTransport(clock))
    transport.receive(upgrade_request("/", host="localhost"))
    settle(clock)
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    transport.clear()
    return protocol, transport


def autobahn_client(clock):
    """A plain Autobahn client end, open; it must read what we send as a server."""
    factory = options(WebSocketClientFactory("ws://localhost:3000/"))
    factory.protocol = RecordingClient
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3000))
    transport = connect(protocol, MemoryTransport(clock))
    settle(clock)
    request = transport.value().decode("latin-1")
    key = next(line.split(":", 1)[1].strip() for line in request.split("\r\n")
               if line.lower().startswith("sec-websocket-key:"))
    transport.clear()
    transport.receive((
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {websocket_accept(key)}\r\n\r\n"
    ).encode("latin-1"))
    settle(clock)
    assert protocol.state == protocol.STATE_OPEN
    return protocol, transport


# Pure functions.


@pytest.mark.parametrize("size", [0, *SIZES])
def test_apply_mask_is_the_xor_of_the_repeated_key(size):
    key, data = os.urandom(4), os.urandom(size)
    assert frames.apply_mask(key, data) == reference_mask(data, key)
    assert frames.apply_mask(key, memoryview(data)) == reference_mask(data, key)
    assert frames.apply_mask(key, frames.apply_mask(key, data)) == data


@pytest.mark.parametrize("length, size", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (2**40, 10)])
def test_header_uses_the_minimal_length_encoding(length, size):
    head = frames.header(length)
    assert len(head) == size and head[0] == 0x82 and not head[1] & 0x80
    assert frames.header(length, masked=True)[1] & 0x80


def test_data_frame_is_the_frame_of_the_encoded_message():
    for size in SIZES:
        data = os.urandom(size)
        expected = b"".join(frames.message_frame(codec.encode_data(7, data)))
        assert b"".join(frames.data_frame(7, data)) == expected
        key = os.urandom(4)
        assert b"".join(frames.data_frame(7, data, key)) == b"".join(frames.message_frame(codec.encode_data(7, data), key))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_next_binary_frame_reads_what_autobahn_writes(clock, size, masked):
    protocol, transport = autobahn_client(clock) if masked else autobahn_server(clock)
    payloads = [os.urandom(size), b"\x12\x01\x00Dtail"]
    for payload in payloads:
        protocol.sendMessage(payload, isBinary=True)
    wire = transport.value()
    position = 0
    for payload in payloads:
        # Every proper prefix of the frame is incomplete.
        for cut in sorted({position, position + 1, position + 2, position + 5, len(wire) - 1}):
            if cut < position + len(frames.header(len(payload))) + len(payload):
                assert frames.next_binary_frame(wire[:cut], position, masked, LIMIT) == frames.INCOMPLETE
        key, start, end = frames.next_binary_frame(wire, position, masked, LIMIT)
        assert (key is not None) == masked
        assert (frames.apply_mask(key, wire[start:end]) if masked else wire[start:end]) == payload
        position = end
    assert position == len(wire)


@pytest.mark.parametrize("frame", [
    encode_frame(TEXT, b"text", mask=False),
    encode_frame(PING, b"", mask=False),
    encode_frame(CLOSE, struct.pack("!H", 1000), mask=False),
    encode_frame(BINARY, b"part", fin=False, mask=False),
    encode_frame(0, b"continued", mask=False),
    encode_frame(BINARY, b"", mask=False),
    encode_frame(BINARY, b"masked"),  # masked where unmasked is expected
    bytes([0xC2, 4]) + b"rsv1",  # a reserved bit
    bytes([0x82, 126, 0, 5]) + b"short",  # 16-bit length for a 7-bit size
    bytes([0x82, 127]) + struct.pack("!Q", 200) + b"x" * 200,  # 64-bit length for a 16-bit size
    bytes([0x82, 127]) + struct.pack("!Q", 2**63),  # beyond any limit
    bytes([0x82, 126]) + struct.pack("!H", 2000) + b"x" * 2000,  # beyond the limit given
])
def test_next_binary_frame_leaves_anything_else_to_autobahn(frame):
    assert frames.next_binary_frame(frame, 0, False, 1000) == frames.OTHER


# Frames we build, read by Autobahn.


@pytest.mark.parametrize("masked", [False, True])
def test_autobahn_reads_the_frames_we_build(clock, masked):
    protocol, transport = autobahn_server(clock) if masked else autobahn_client(clock)
    expected = []
    wire = []
    for size in SIZES:
        payload = os.urandom(size)
        mask = frames.new_mask() if masked else None
        wire += frames.message_frame(payload, mask)
        expected.append(payload)
        data = os.urandom(size)
        wire += frames.data_frame(size % 32768, data, frames.new_mask() if masked else None)
        expected.append(codec.encode_data(size % 32768, data))
    stream = b"".join(wire)
    # All at once, then in uneven pieces.
    transport.receive(stream)
    for start in range(0, len(stream), 7919):
        transport.receive(stream[start:start + 7919])
    assert protocol.messages == [(payload, True) for payload in expected * 2]
    assert protocol.state == protocol.STATE_OPEN
    assert transport.value() == b""  # no close, no complaint


# The tunnel's protocols: the lean path in use, and Autobahn for everything else.


def server_peer(server):
    peer = server.open_tunnel("wire")
    visitor = server.visit("wire")
    messages = peer.new_messages()
    conversation_id = struct.unpack("<H", messages[0][2:4])[0]
    return peer, visitor, conversation_id


def test_both_ends_take_the_lean_path_once_open(clock):
    server = MemoryServer(clock=clock)
    peer, _, _ = server_peer(server)
    assert peer.protocol._lean and not peer.protocol._lean_mask_out and peer.protocol._lean_masked_in
    protocol, _ = autobahn_client(clock)
    assert not getattr(protocol, "_lean", False)  # a plain Autobahn protocol is untouched


def test_server_relays_data_frames_in_one_chunk_or_byte_by_byte_with_pings_between(clock):
    server = MemoryServer(clock=clock)
    peer, visitor, conversation_id = server_peer(server)
    pieces = [os.urandom(size) for size in (1, 200, 5000, 70000)]
    stream = b""
    for piece in pieces:
        stream += encode_frame(BINARY, codec.encode_data(conversation_id, piece))
        stream += encode_frame(PING, b"hi")
    peer.transport.receive(stream)
    peer.transport.receive_in_pieces(stream[:3000], 1)
    peer.transport.receive(stream[3000:])
    settle(clock)
    assert visitor.value() == b"".join(pieces) * 2
    replies = peer.new_frames()
    assert [frame.opcode for frame in replies] == [PONG] * 8
    assert all(frame.payload == b"hi" for frame in replies)


def test_server_reassembles_a_fragmented_message_through_autobahn(clock):
    server = MemoryServer(clock=clock)
    peer, visitor, conversation_id = server_peer(server)
    message = codec.encode_data(conversation_id, b"fragmented data")
    peer.transport.receive(
        encode_frame(BINARY, message[:6], fin=False)
        + encode_frame(0, message[6:])
        + encode_frame(BINARY, codec.encode_data(conversation_id, b", then whole"))
    )
    assert visitor.value() == b"fragmented data, then whole"


@pytest.mark.parametrize("frame, close_code", [
    (encode_frame(BINARY, b"\x12\x01\x00D", mask=False), 1002),  # unmasked from a client: RFC 6455's protocol error
    (encode_frame(TEXT, b"\x12\x01\x00Dtext"), codec.CLOSE_PROTOCOL_ERROR),  # TPoT/1 is binary only
    (encode_frame(BINARY, b"\x12\x01"), codec.CLOSE_PROTOCOL_ERROR),  # truncated message
    (encode_frame(BINARY, b"\x13\x01\x00D"), codec.CLOSE_PROTOCOL_ERROR),  # unknown type
    (encode_frame(BINARY, b"x" * (codec.MAX_MESSAGE_SIZE + 1)), codec.CLOSE_PROTOCOL_ERROR),  # too large
], ids=["unmasked", "text", "truncated", "unknown-type", "too-large"])
def test_server_closes_on_a_bad_frame_and_relays_nothing_after_it(clock, frame, close_code):
    server = MemoryServer(clock=clock)
    peer, visitor, conversation_id = server_peer(server)
    peer.transport.receive(
        encode_frame(BINARY, codec.encode_data(conversation_id, b"before"))
        + frame
        + encode_frame(BINARY, codec.encode_data(conversation_id, b"after"))
    )
    settle(clock)
    assert visitor.value().startswith(b"before") and b"after" not in visitor.value()
    closes = [frame for frame in peer.new_frames() if frame.opcode == CLOSE]
    assert [close.close_code for close in closes] == [close_code]


def test_server_data_and_signals_are_sent_as_single_unmasked_frames(clock):
    server = MemoryServer(clock=clock)
    peer, visitor, conversation_id = server_peer(server)
    visitor.protocol.dataReceived(b"x" * 70000)
    visitor.peer_closes()
    settle(clock)
    assert peer.new_messages() == [codec.encode_data(conversation_id, b"x" * 70000),
                                   codec.encode(codec.Close(conversation_id))]


def test_lean_path_is_off_with_frame_logging(clock):
    server = MemoryServer(clock=clock)
    server.tunnels.logFrames = True  # copied to each protocol as it connects
    peer, visitor, conversation_id = server_peer(server)
    assert not peer.protocol._lean
    peer.send(codec.encode_data(conversation_id, b"via Autobahn"))
    assert visitor.value() == b"via Autobahn"


def test_client_reads_our_frames_and_masks_its_own(clock):
    from tests.memory.test_session import Client, opened

    client = Client(clock, target="127.0.0.1:8080")
    client.answer_upgrade()
    assert client.protocol._lean and client.protocol._lean_mask_out and not client.protocol._lean_masked_in
    client.transport.receive(b"".join(frames.message_frame(b"\x11GTPoT/1 wire") + frames.message_frame(opened(1))))
    assert client.greetings == ["wire"]
    target = client.connect_target()
    body = os.urandom(100_000)
    client.transport.receive(b"".join(frames.data_frame(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")))
    target.protocol.dataReceived(body)
    target.protocol.dataReceived(b"end")
    reader = FrameReader()
    sent = reader.feed(client.transport.value()[client._seen:])
    assert all(frame.masked and frame.opcode == BINARY and frame.fin for frame in sent)
    assert [frame.payload for frame in sent] == [codec.encode_data(1, body), codec.encode_data(1, b"end")]
    assert target.value() == b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
