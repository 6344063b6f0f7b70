"""The TPoT/1 message codec, against hand-written bytes and the captured reference session."""

import pytest

from tests.support.fixtures import SESSION
from tpot.protocol import codec
from tpot.protocol.codec import (
    FROM_CLIENT,
    FROM_SERVER,
    Close,
    Data,
    Greeting,
    NoConnect,
    OpenHTTP,
    OpenRaw,
    Pause,
    ProtocolError,
    Resume,
)

BINARY_EVENTS = [event for event in SESSION["events"] if event.get("ws_opcode") == 2]
ALL_MESSAGES = frozenset(FROM_CLIENT | FROM_SERVER)


# Every message with its exact encoding.
ENCODINGS = [
    (Greeting("wire"), b"\x11GTPoT/1 wire"),
    (Greeting("a-very-long-name-0123456"), b"\x11GTPoT/1 a-very-long-name-0123456"),
    (OpenHTTP(1, "127.0.0.1", 51976), b"\x11H\x01\x00\x7f\x00\x00\x01\x08\xcb"),
    (OpenHTTP(32767, "10.20.30.40", 1), b"\x11H\xff\x7f\x0a\x14\x1e\x28\x01\x00"),
    (OpenHTTP(0x0102, "255.255.255.255", 65535), b"\x11H\x02\x01\xff\xff\xff\xff\xff\xff"),
    (Data(1, b"hello"), b"\x12\x01\x00Dhello"),
    (Data(0x1234, b""), b"\x12\x34\x12D"),
    (Data(65535, bytes(range(256))), b"\x12\xff\xffD" + bytes(range(256))),
    (Pause(7), b"\x12\x07\x00P"),
    (Resume(0x0300), b"\x12\x00\x03C"),
    (Close(1), b"\x12\x01\x00X"),
    (NoConnect(42), b"\x12\x2a\x00N"),
]


@pytest.mark.parametrize("message, wire", ENCODINGS, ids=lambda v: repr(v)[:40])
def test_encode_gives_exact_bytes(message, wire):
    assert codec.encode(message) == wire


@pytest.mark.parametrize("message, wire", ENCODINGS, ids=lambda v: repr(v)[:40])
def test_decode_gives_the_message_back(message, wire):
    assert codec.decode(wire, ALL_MESSAGES) == message
    assert codec.decode(codec.encode(message), ALL_MESSAGES) == message


@pytest.mark.parametrize("payload", [b"", b"x", b"\x00" * 1000, bytearray(b"abc"), memoryview(b"mv")])
def test_encode_data_matches_encode(payload):
    assert codec.encode_data(9, payload) == codec.encode(Data(9, bytes(payload)))


@pytest.mark.parametrize("wire", [bytearray(b"\x12\x01\x00Dhi"), memoryview(b"\x12\x01\x00Dhi")])
def test_decode_accepts_buffer_types(wire):
    assert codec.decode(wire, FROM_CLIENT) == Data(1, b"hi")


def test_encode_refuses_non_messages():
    with pytest.raises(TypeError):
        codec.encode("not a message")


# The captured reference session.


def test_fixture_greeting():
    assert codec.decode(bytes.fromhex("114754506f542f312077697265"), FROM_SERVER) == Greeting("wire")


def test_fixture_new_conversations_are_ids_1_2_3_from_localhost():
    opens = [
        codec.decode(bytes.fromhex(event["payload_hex"]), FROM_SERVER)
        for event in BINARY_EVENTS
        if event["payload_hex"].startswith("1148")
    ]
    assert opens == [
        OpenHTTP(1, "127.0.0.1", 0xCB08),
        OpenHTTP(2, "127.0.0.1", 0xCB0E),
        OpenHTTP(3, "127.0.0.1", 0xCB18),
    ]


def test_fixture_conversation_one_carries_two_gets_and_a_close():
    messages = [
        codec.decode(bytes.fromhex(event["payload_hex"]), FROM_SERVER)
        for event in BINARY_EVENTS
        if event["from"] == "server" and event["payload_hex"].startswith("120100")
    ]
    assert [type(m) for m in messages] == [Data, Data, Close]
    assert messages[0].payload.startswith(b"GET /index.html HTTP/1.1\r\nHost: wire.localhost:3002\r\n")
    assert messages[1].payload == b"GET /index.html HTTP/1.1\r\nHost: wire.localhost:3002\r\n\r\n"
    assert messages[2] == Close(1)


@pytest.mark.parametrize(
    "event", BINARY_EVENTS, ids=[f"{i}-{e['from']}-{e['payload_hex'][:8]}" for i, e in enumerate(BINARY_EVENTS)]
)
def test_fixture_messages_decode_for_their_direction_and_reencode_exactly(event):
    wire = bytes.fromhex(event["payload_hex"])
    allowed = FROM_SERVER if event["from"] == "server" else FROM_CLIENT
    message = codec.decode(wire, allowed)
    assert codec.encode(message) == wire


def test_fixture_session_is_a_greeting_then_three_conversations_in_turn():
    decoded = [codec.decode(bytes.fromhex(e["payload_hex"]), FROM_SERVER if e["from"] == "server" else FROM_CLIENT)
               for e in BINARY_EVENTS]
    assert decoded[0] == Greeting("wire")
    assert [(e["from"][0], type(m).__name__, m.id) for e, m in zip(BINARY_EVENTS[1:], decoded[1:])] == [
        ("s", "OpenHTTP", 1), ("s", "Data", 1), ("c", "Data", 1), ("c", "Data", 1), ("s", "Data", 1),
        ("c", "Data", 1), ("s", "Close", 1),
        ("s", "OpenHTTP", 2), ("s", "Data", 2), ("c", "Data", 2), ("c", "Close", 2),
        ("s", "OpenHTTP", 3), ("s", "Data", 3), ("c", "Data", 3), ("c", "Close", 3),
    ]


def test_fixture_client_messages_are_data_and_close():
    kinds = {type(codec.decode(bytes.fromhex(e["payload_hex"]), FROM_CLIENT))
             for e in BINARY_EVENTS if e["from"] == "client"}
    assert kinds == {Data, Close}


# Malformed messages.


@pytest.mark.parametrize(
    "wire, why",
    [
        (b"", "empty"),
        (b"\x00", "unknown type"),
        (b"\x13\x01\x00D", "unknown type"),
        (b"\xff", "unknown type"),
        (b"GET / HTTP/1.1\r\n", "text is not a message"),
        (b"\x11", "control without code"),
        (b"\x11R\x01\x00", "reserved raw conversation code"),
        (b"\x11Z", "unknown control code"),
        (b"\x11g" + b"TPoT/1 x", "control codes are case-sensitive"),
        (b"\x11G", "greeting without version"),
        (b"\x11GTPoT/2 x", "greeting with another version"),
        (b"\x11GTPoT/1x", "greeting without the space"),
        (b"\x11GTPoT/1 \xc3\xa9", "greeting name not ASCII"),
        (b"\x11H", "truncated new-conversation"),
        (b"\x11H\x01\x00\x7f\x00\x00\x01\x08", "truncated new-conversation"),
        (b"\x11H\x01\x00\x7f\x00\x00\x01\x08\xcb\x00", "trailing byte after new-conversation"),
        (b"\x11H\x01\x00" + bytes(16) + b"\x08", "truncated IPv6 new-conversation"),
        (b"\x11H\x01\x00" + bytes(18) + b"\x08", "trailing byte after IPv6 new-conversation"),
        (b"\x11H\x01\x00" + bytes(10) + b"\xff\xff\x7f\x00\x00\x01\x08\xcb", "IPv4-mapped in the IPv6 form"),
        (b"\x12", "truncated conversation"),
        (b"\x12\x01", "truncated conversation"),
        (b"\x12\x01\x00", "conversation without code"),
        (b"\x12\x01\x00Q", "unknown conversation code"),
        (b"\x12\x01\x00d", "conversation codes are case-sensitive"),
        (b"\x12\x01\x00H", "control code in a conversation message"),
        (b"\x12\x01\x00P\x00", "trailing byte after pause"),
        (b"\x12\x01\x00Cxyz", "trailing bytes after resume"),
        (b"\x12\x01\x00X\r\n", "trailing bytes after close"),
        (b"\x12\x01\x00N\x00", "trailing byte after no-connect"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_malformed_messages_raise_protocol_error(wire, why):
    with pytest.raises(ProtocolError):
        codec.decode(wire, ALL_MESSAGES)


@pytest.mark.parametrize("message", [Greeting("wire"), OpenHTTP(1, "127.0.0.1", 80)])
def test_the_server_refuses_control_messages_from_the_client(message):
    with pytest.raises(ProtocolError):
        codec.decode(codec.encode(message), FROM_CLIENT)


def test_the_client_refuses_no_connect_from_the_server():
    with pytest.raises(ProtocolError):
        codec.decode(codec.encode(NoConnect(1)), FROM_SERVER)


@pytest.mark.parametrize("message", [Data(1, b"x"), Pause(1), Resume(1), Close(1), NoConnect(1)])
def test_the_server_accepts_every_conversation_message(message):
    assert codec.decode(codec.encode(message), FROM_CLIENT) == message


@pytest.mark.parametrize("message", [Greeting("n"), OpenHTTP(1, "1.2.3.4", 5), Data(1, b"x"),
                                     Pause(1), Resume(1), Close(1)])
def test_the_client_accepts_what_the_server_may_send(message):
    assert codec.decode(codec.encode(message), FROM_SERVER) == message


def test_data_payload_may_look_like_a_signal():
    assert codec.decode(b"\x12\x05\x00DX", FROM_CLIENT) == Data(5, b"X")


# Visitor addresses.


@pytest.mark.parametrize(
    "host, packed",
    [
        ("127.0.0.1", b"\x7f\x00\x00\x01"),
        ("192.168.1.254", b"\xc0\xa8\x01\xfe"),
        ("::ffff:10.1.2.3", b"\x0a\x01\x02\x03"),
        ("::ffff:7f00:1", b"\x7f\x00\x00\x01"),
        ("::1", bytes(4)),
        ("2001:db8::1", bytes(4)),
        ("fe80::1%eth0", bytes(4)),
        ("not-an-address", bytes(4)),
        ("", bytes(4)),
    ],
)
def test_ipv4_for_wire(host, packed):
    assert codec.ipv4_for_wire(host) == packed


@pytest.mark.parametrize("host, seen", [("::ffff:10.1.2.3", "10.1.2.3"), ("2001:db8::1", "0.0.0.0")])
def test_ipv6_visitors_are_sent_as_ipv4(host, seen):
    wire = codec.encode(OpenHTTP(3, host, 4444))
    assert len(wire) == 10
    assert codec.decode(wire, FROM_SERVER) == OpenHTTP(3, seen, 4444)


# With the ipv6 extension: 22-byte opens for IPv6 visitors (10 bytes otherwise).

IPV6_ENCODINGS = [
    (OpenHTTP(5, "2001:db8::7", 443), b"\x11H\x05\x00\x20\x01\x0d\xb8" + bytes(11) + b"\x07\xbb\x01"),
    (OpenHTTP(0x0102, "::1", 51976), b"\x11H\x02\x01" + bytes(15) + b"\x01\x08\xcb"),
    (OpenRaw(9, "fd00::2", 22), b"\x11R\x09\x00\xfd" + bytes(14) + b"\x02\x16\x00"),
]


@pytest.mark.parametrize("message, wire", IPV6_ENCODINGS, ids=lambda v: repr(v)[:40])
def test_ipv6_opens_carry_the_whole_address(message, wire):
    assert len(wire) == 22
    assert codec.encode(message, ipv6=True) == wire
    assert codec.decode(wire, FROM_SERVER) == message


@pytest.mark.parametrize("message, wire", IPV6_ENCODINGS, ids=lambda v: repr(v)[:40])
def test_without_the_extension_ipv6_opens_are_the_reference_10_bytes(message, wire):
    assert codec.encode(message) == codec.encode(message, ipv6=False) == wire[:4] + bytes(4) + wire[-2:]


@pytest.mark.parametrize("host, seen", [("127.0.0.1", "127.0.0.1"), ("::ffff:10.1.2.3", "10.1.2.3")])
def test_ipv4_visitors_stay_10_bytes_with_the_extension(host, seen):
    wire = codec.encode(OpenHTTP(3, host, 4444), ipv6=True)
    assert wire == codec.encode(OpenHTTP(3, seen, 4444))
    assert codec.decode(wire, FROM_SERVER) == OpenHTTP(3, seen, 4444)
