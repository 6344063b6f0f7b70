"""Replay the captured reference session against our server, in memory.

The fixture holds what the reference client sent and what the reference server answered.
We play the client's side (its upgrade and its frames) and the visitors' side (their
connections, implied by the server's new-conversation and data messages) against our
server, and check that it answers the reference client exactly as the reference server did.
"""

import base64
import copy
import struct

import pytest

from tests.support.fixtures import SESSION
from tests.support.memory import BINARY, PING, PONG, MemoryServer, WebSocketPeer, settle, use_clock
from tpot.protocol import codec


def load_session():
    return copy.deepcopy(SESSION)


def header_of(head, name):
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def authorization_timestamp(head):
    encoded = header_of(head, "authorization").split(" ", 1)[1]
    return int(base64.b64decode(encoded).decode("ascii").split("\n")[1])


def frames_of(events, side):
    return [e for e in events if e["from"] == side and "ws_opcode" in e]


@pytest.fixture
def session():
    return load_session()


@pytest.fixture
def replay(session):
    """Play the whole session; returns what each visitor saw and what the server sent."""
    events = session["events"]
    upgrade = events[0]["http_head"]
    server = MemoryServer(key=session["auth_key"], clock_ms=lambda: authorization_timestamp(upgrade))
    restore = use_clock(server.clock)
    try:
        yield Replay(server, events).run()
    finally:
        restore()


class Replay:
    def __init__(self, server, events):
        self.server = server
        self.events = events
        self.visitors = {}  # conversation id -> visitor transport
        self.sent_to_visitor = {}  # conversation id -> what the client sent for it
        self.unconsumed_heads = {}
        self.mismatches = []
        self.greeting = None
        self.response = None

    def run(self):
        upgrade, answer = self.events[0], self.events[1]
        assert upgrade["from"] == "client" and answer["from"] == "server"
        transport = self.server.connect(upgrade["http_head"].encode("latin-1") + b"\r\n\r\n", peer=("127.0.0.1", 3456))
        settle(self.server.clock)
        self.client = WebSocketPeer(transport)
        self.pending = list(self.client.new_frames())
        self.recorded_response = answer["http_head"]
        self.response = self.client.response
        for index, event in enumerate(self.events[2:], start=2):
            if event["from"] == "server":
                self.server_event(index, event)
            else:
                self.client_event(event)
            settle(self.server.clock)
        self.left_over = self.pending + self.client.new_frames()
        return self

    def next_server_frame(self):
        if not self.pending:
            self.pending = list(self.client.new_frames())
        assert self.pending, "the server sent nothing where the reference server sent a frame"
        return self.pending.pop(0)

    def server_event(self, index, event):
        payload = bytes.fromhex(event["payload_hex"])
        if event["ws_opcode"] == BINARY:
            self.visitor_action(index, payload)
        frame = self.next_server_frame()
        assert not frame.masked and frame.fin
        assert (frame.opcode, frame.payload) == (event["ws_opcode"], payload), (index, frame)

    def visitor_action(self, index, payload):
        """Make a visitor do what caused the reference server to send `payload`."""
        message = codec.decode(payload, codec.FROM_SERVER)
        if isinstance(message, codec.OpenHTTP):
            # A visitor connected and sent its head: the first data message of that id.
            head = self.first_data(index, message.id)
            transport = self.server.connect(head, peer=(message.host, message.port))
            self.visitors[message.id] = transport
            self.sent_to_visitor[message.id] = b""
            self.unconsumed_heads[message.id] = head
        elif isinstance(message, codec.Data):
            if self.unconsumed_heads.get(message.id) == message.payload:
                del self.unconsumed_heads[message.id]  # already sent when it connected
            else:
                self.visitors[message.id].receive(message.payload)
        elif isinstance(message, codec.Close):
            self.visitors[message.id].peer_closes()
        # Greeting: nothing to do, it follows the upgrade.

    def first_data(self, index, conversation_id):
        for event in self.events[index + 1:]:
            if event["from"] == "server" and event.get("ws_opcode") == BINARY:
                message = codec.decode(bytes.fromhex(event["payload_hex"]), codec.FROM_SERVER)
                if isinstance(message, codec.Data) and message.id == conversation_id:
                    return message.payload
        raise AssertionError(f"no request head for conversation {conversation_id}")

    def client_event(self, event):
        payload = bytes.fromhex(event["payload_hex"])
        assert event["masked"], "client frames are masked"
        self.client.send(payload, event["ws_opcode"])
        if event["ws_opcode"] == BINARY:
            message = codec.decode(payload, codec.FROM_CLIENT)
            if isinstance(message, codec.Data):
                self.sent_to_visitor[message.id] += message.payload


def test_upgrade_is_answered_like_the_reference(replay):
    recorded = replay.recorded_response.split("\r\n")
    assert recorded[0].startswith("HTTP/1.1 101 ")
    assert replay.response.status == 101
    for name in ("upgrade", "connection", "sec-websocket-accept"):
        assert replay.response.header(name).lower() == header_of(replay.recorded_response, name).lower()
    # The reference server did not take up the offered permessage-deflate; neither do we.
    assert header_of(replay.recorded_response, "sec-websocket-extensions") is None
    assert replay.response.header("sec-websocket-extensions") is None


def test_every_server_frame_matches_the_recording(replay, session):
    # Each server event was compared as it was replayed; nothing extra may follow.
    assert replay.left_over == []
    recorded = [bytes.fromhex(e["payload_hex"]) for e in frames_of(session["events"], "server")]
    assert recorded[0] == b"\x11GTPoT/1 wire"
    openings = [codec.decode(p, codec.FROM_SERVER) for p in recorded if p[:2] == b"\x11H"]
    assert [(m.id, m.host) for m in openings] == [(1, "127.0.0.1"), (2, "127.0.0.1"), (3, "127.0.0.1")]
    assert replay.client.frames[0].payload == b"\x11GTPoT/1 wire"


def test_visitors_receive_the_client_data_byte_for_byte(replay, session):
    expected = {}
    for event in frames_of(session["events"], "client"):
        if event["ws_opcode"] == BINARY:
            message = codec.decode(bytes.fromhex(event["payload_hex"]), codec.FROM_CLIENT)
            if isinstance(message, codec.Data):
                expected[message.id] = expected.get(message.id, b"") + message.payload
    assert set(expected) == {1, 2, 3}
    for conversation_id, transport in replay.visitors.items():
        assert transport.value() == expected[conversation_id]
        assert transport.value() == replay.sent_to_visitor[conversation_id]
    assert replay.visitors[1].value().count(b"HTTP/1.1 200 OK") == 2
    assert replay.visitors[2].value().startswith(b"HTTP/1.1 405 ")
    assert replay.visitors[3].value().startswith(b"HTTP/1.1 404 ")


def test_closes_match_the_recording(replay):
    # Conversation 1: the visitor closed, the server said X (checked frame by frame).
    # Conversations 2 and 3: the client said X, so the server closed those visitors.
    assert all(transport.lost for transport in replay.visitors.values())
    assert not replay.visitors[2].aborted and not replay.visitors[3].aborted
    protocol = replay.client.protocol
    assert protocol.conversations == {}
    assert not replay.client.transport.lost
    assert replay.server.tunnel_serving("wire") is protocol


def test_ping_is_answered_with_pong(replay, session):
    pings = [e for e in frames_of(session["events"], "client") if e["ws_opcode"] == PING]
    pongs = [f for f in replay.client.frames if f.opcode == PONG]
    assert len(pings) == len(pongs) == 1
    assert pongs[0].payload == bytes.fromhex(pings[0]["payload_hex"])


def test_the_recorded_authorization_needs_the_right_key(session):
    """The fixture's header is only accepted with its own key (our check is real)."""
    events = session["events"]
    upgrade = events[0]["http_head"]
    server = MemoryServer(key="t" * 40, clock_ms=lambda: authorization_timestamp(upgrade))
    restore = use_clock(server.clock)
    try:
        transport = server.connect(upgrade.encode("latin-1") + b"\r\n\r\n")
        settle(server.clock)
        assert transport.value().startswith(b"HTTP/1.1 401 ")
        assert transport.lost
    finally:
        restore()


def test_the_recorded_authorization_is_stale_today(session):
    upgrade = session["events"][0]["http_head"]
    stamp = authorization_timestamp(upgrade)
    server = MemoryServer(key=session["auth_key"], clock_ms=lambda: stamp + 61_000)
    restore = use_clock(server.clock)
    try:
        transport = server.connect(upgrade.encode("latin-1") + b"\r\n\r\n")
        settle(server.clock)
        assert transport.value().startswith(b"HTTP/1.1 401 ")
    finally:
        restore()


def test_conversation_ports_are_replayed(replay, session):
    recorded = [bytes.fromhex(e["payload_hex"]) for e in frames_of(session["events"], "server")]
    ports = [struct.unpack("<H", p[8:10])[0] for p in recorded if p[:2] == b"\x11H"]
    assert [t.getPeer().port for _, t in sorted(replay.visitors.items())] == ports
