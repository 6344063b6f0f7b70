"""The client's tunnel protocol in memory: a real WebSocket handshake over a memory
transport, server messages in, target connections made on a memory reactor."""

import io
import struct

import pytest
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure

from tests.support.memory import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    MemoryServer,
    MemoryTransport,
    close_payload,
    connect,
    encode_frame,
    settle,
    websocket_accept,
)
from tpot.client.conversation import MAX_PENDING_BYTES
from tpot.client.session import PING_INTERVAL, TunnelClientFactory
from tpot.client.settings import client_settings
from tpot.client.visitors import VisitorOptions
from tpot.protocol import codec


def opened(conversation_id, port=40001):
    return b"\x11H" + struct.pack("<H", conversation_id) + b"\x7f\x00\x00\x01" + struct.pack("<H", port)


def data(conversation_id, payload):
    return b"\x12" + struct.pack("<H", conversation_id) + b"D" + payload


def signal(conversation_id, code):
    return b"\x12" + struct.pack("<H", conversation_id) + code


class Client:
    """A TunnelClientProtocol connected to a scripted server end."""

    def __init__(self, clock, target="8080", log=False, **options):
        self.clock = clock
        self.out = io.StringIO()
        # Byte-exact expectations below assume no X-Forwarded-* unless a test asks for them.
        options.setdefault("no_forwarded_headers", True)
        self.settings = client_settings(
            target, server="http://localhost:3000", subdomain="wire", env={}, config={}, **options
        )
        self.greetings = []
        self.closes = []
        self.unsupported = []
        self.factory = TunnelClientFactory(
            self.settings, clock, {}, self.greetings.append, lambda *args: self.closes.append(args),
            on_unsupported=self.unsupported.append,
            # The request log and visitor policy only for tests of them.
            visitors=VisitorOptions.for_settings(self.settings, clock, self.out) if log or self.settings.allow_ip else None,
        )
        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3000))
        self.transport = connect(self.protocol, MemoryTransport(clock, peer=("127.0.0.1", 3000)))
        self.reader = FrameReader()
        self._seen = 0
        self.targets = []

    def request(self):
        return self.transport.value().split(b"\r\n\r\n", 1)[0].decode("latin-1")

    def answer_upgrade(self, status=101, headers=()):
        lines = self.request().split("\r\n")
        key = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-key:"))
        self._seen = len(self.transport.value())
        if status == 101:
            head = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {websocket_accept(key)}\r\n"
                + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
            )
        else:
            body = "taken\n"
            head = f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
        self.transport.receive(head.encode("latin-1"))

    def server_sends(self, payload, opcode=BINARY):
        self.transport.receive(encode_frame(opcode, payload, mask=False))

    def frames(self):
        new = self.transport.value()[self._seen:]
        self._seen += len(new)
        frames = self.reader.feed(new)
        assert all(frame.masked for frame in frames), frames
        return frames

    def messages(self):
        frames = self.frames()
        assert all(frame.opcode == BINARY and frame.fin for frame in frames), frames
        return [frame.payload for frame in frames]

    def connect_target(self, index=-1):
        """Complete the index-th target connection attempt; returns the target's transport."""
        host, port, factory, _, _ = self.clock.tcpClients[index]
        transport = MemoryTransport(self.clock, peer=(host, port))
        connect(factory.buildProtocol(IPv4Address("TCP", host, port)), transport)
        settle(self.clock)
        return transport

    def refuse_target(self, index=-1):
        factory = self.clock.tcpClients[index][2]
        factory.clientConnectionFailed(self.clock.connectors[index], Failure(error.ConnectionRefusedError()))
        # HostnameEndpoint notices on its next attempt tick that no address is left.
        self.clock.advance(0.3)
        settle(self.clock)


@pytest.fixture
def client(clock):
    client = Client(clock)
    client.answer_upgrade()
    client.server_sends(b"\x11GTPoT/1 wire")
    return client


def test_upgrade_request_is_what_the_server_expects(clock):
    client = Client(clock)
    lines = client.request().split("\r\n")
    assert lines[0] == "GET /create-tpot?subdomain=wire HTTP/1.1"
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in lines[1:]}
    assert headers["host"] == "localhost:3000"
    assert headers["upgrade"].lower() == "websocket"
    assert headers["sec-websocket-version"] == "13"
    assert "sec-websocket-extensions" not in headers


def test_greeting_reports_the_name(client):
    assert client.greetings == ["wire"]
    assert client.closes == []


def test_refused_upgrade_reports_the_status(clock):
    client = Client(clock)
    client.answer_upgrade(409)
    settle(clock)
    assert client.transport.lost
    assert client.closes and client.closes[0][0] == 409
    assert client.greetings == []


def test_open_connects_to_the_target(client, clock):
    client.server_sends(opened(1))
    assert [(host, port) for host, port, *_ in clock.tcpClients] == [("127.0.0.1", 8080)]
    assert 1 in client.protocol.conversations


def test_data_before_the_target_connects_is_held_then_written_with_host_rewritten(client):
    client.server_sends(opened(1))
    client.server_sends(data(1, b"GET / HTTP/1.1\r\nHost: wire.localhost:3000\r\nAccept: */*\r\n\r\n"))
    client.server_sends(data(1, b"POST /x HTTP/1.1\r\nhost: wire.localhost:3000\r\nContent-Length: 4\r\n\r\nbo"))
    target = client.connect_target()
    assert target.value() == (
        b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n"
        b"POST /x HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 4\r\n\r\nbo"
    )
    client.server_sends(data(1, b"dy"))
    assert target.value().endswith(b"\r\n\r\nbody")
    assert client.messages() == []


def test_forwarded_headers_carry_the_visitor_on_every_keep_alive_request(clock):
    client = Client(clock, no_forwarded_headers=False)
    client.answer_upgrade()
    client.server_sends(opened(1))
    target = client.connect_target()
    client.server_sends(data(1, b"GET /a HTTP/1.1\r\nHost: wire.localhost:3000\r\nX-Forwarded-Proto: spoofed\r\n\r\n"))
    client.server_sends(data(1, b"GET /b HTTP/1.1\r\nHost: wire.localhost:3000\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"))
    first, second = target.value().split(b"\r\n\r\n")[:2]
    assert first.split(b"\r\n") == [
        b"GET /a HTTP/1.1", b"Host: localhost:8080", b"X-Forwarded-For: 127.0.0.1",
        b"X-Forwarded-Proto: http", b"X-Forwarded-Host: wire.localhost:3000",
    ]
    assert b"X-Forwarded-For: 10.1.2.3, 127.0.0.1" in second.split(b"\r\n")


def ipv6_opened(conversation_id, address, port=40001):
    """An open for an IPv6 visitor as a server sends it with the ipv6 extension (22 bytes)."""
    return codec.encode(codec.OpenHTTP(conversation_id, address, port), ipv6=True)


def test_an_ipv6_visitor_reaches_the_target_in_x_forwarded_for(clock):
    client = Client(clock, no_forwarded_headers=False, allow_ip=["2001:db8::/32"])
    client.answer_upgrade()
    client.server_sends(ipv6_opened(1, "2001:db8::7"))
    target = client.connect_target()
    client.server_sends(data(1, b"GET / HTTP/1.1\r\nHost: wire.localhost:3000\r\n\r\n"))
    assert b"X-Forwarded-For: 2001:db8::7" in target.value().split(b"\r\n")


def test_an_ipv6_visitor_outside_allow_ip_gets_403_and_the_target_nothing(clock):
    client = Client(clock, allow_ip=["2001:db8::/32", "127.0.0.0/8"])
    client.answer_upgrade()
    client.messages()
    client.server_sends(ipv6_opened(1, "2001:db9::7"))
    client.server_sends(data(1, b"GET / HTTP/1.1\r\nHost: wire.localhost:3000\r\n\r\n"))
    settle(clock)
    refusal, close = client.messages()
    assert refusal.startswith(data(1, b"HTTP/1.1 403 Forbidden\r\n")) and close == signal(1, b"X")
    assert clock.tcpClients == []


def test_http_host_option_and_no_rewrite(clock):
    for options, expected in (({"http_host": "app.test"}, b"Host: app.test"),
                              ({"no_host_rewrite": True}, b"Host: wire.localhost:3000")):
        client = Client(clock, **options)
        client.answer_upgrade()
        client.server_sends(opened(1))
        target = client.connect_target()
        client.server_sends(data(1, b"GET / HTTP/1.1\r\nHost: wire.localhost:3000\r\n\r\n"))
        assert expected + b"\r\n" in target.value()


def test_target_data_goes_back_as_data_messages(client):
    client.server_sends(opened(7))
    target = client.connect_target()
    target.receive(b"HTTP/1.1 200 OK\r\n")
    target.receive(bytes(range(256)) * 300)
    assert client.messages() == [data(7, b"HTTP/1.1 200 OK\r\n"), data(7, bytes(range(256)) * 300)]


def test_unreachable_target_sends_n(client):
    client.server_sends(opened(1))
    client.server_sends(data(1, b"GET / HTTP/1.1\r\n\r\n"))
    client.refuse_target()
    assert client.messages() == [signal(1, b"N")]
    assert 1 not in client.protocol.conversations


def test_server_close_closes_the_target(client):
    client.server_sends(opened(1))
    target = client.connect_target()
    client.server_sends(data(1, b"GET / HTTP/1.1\r\n\r\n"))
    client.server_sends(signal(1, b"X"))
    settle(client.clock)
    assert target.lost
    assert target.value() == b"GET / HTTP/1.1\r\n\r\n"
    assert client.messages() == []  # no X echoed back
    assert 1 not in client.protocol.conversations


def test_server_close_before_the_target_connects(client):
    client.server_sends(opened(1))
    client.server_sends(data(1, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
    client.server_sends(signal(1, b"X"))
    target = client.connect_target()
    settle(client.clock)
    assert target.value() == b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n"
    assert target.lost
    target_late = client.messages()
    assert target_late == []


def test_target_close_sends_x(client):
    client.server_sends(opened(1))
    target = client.connect_target()
    target.receive(b"HTTP/1.1 200 OK\r\n\r\n")
    target.peer_closes()
    assert client.messages() == [data(1, b"HTTP/1.1 200 OK\r\n\r\n"), signal(1, b"X")]
    assert 1 not in client.protocol.conversations
    client.server_sends(data(1, b"late"))
    assert target.value() == b""


def test_server_pause_and_resume_the_target(client):
    client.server_sends(opened(1))
    target = client.connect_target()
    client.server_sends(signal(1, b"P"))
    assert target.producerState == "paused"
    target.receive(b"waiting")
    assert client.messages() == []
    client.server_sends(signal(1, b"C"))
    assert target.producerState == "producing"
    settle(client.clock)
    assert client.messages() == [data(1, b"waiting")]


def test_pause_before_the_target_connects_applies_once_connected(client):
    client.server_sends(opened(1))
    client.server_sends(signal(1, b"P"))
    target = client.connect_target()
    assert target.producerState == "paused"
    client.server_sends(signal(1, b"C"))
    assert target.producerState == "producing"


def test_full_target_socket_sends_pause_and_resume(client):
    client.server_sends(opened(1))
    target = client.connect_target()
    target.producer.pauseProducing()
    assert client.messages() == [signal(1, b"P")]
    target.producer.resumeProducing()
    assert client.messages() == [signal(1, b"C")]


def test_backed_up_websocket_pauses_every_target(client):
    client.server_sends(opened(1))
    client.server_sends(opened(2, 40002))
    targets = [client.connect_target(0), client.connect_target(1)]
    client.transport.producer.pauseProducing()
    assert [t.producerState for t in targets] == ["paused", "paused"]
    client.server_sends(opened(3, 40003))
    late = client.connect_target(2)
    assert late.producerState == "paused"
    client.transport.producer.resumeProducing()
    assert [t.producerState for t in targets + [late]] == ["producing"] * 3


def test_a_backed_up_websocket_is_still_read(client):
    # The server stops reading a backed-up tunnel (flow.WebSocketBackpressure registered with reading=);
    # were the client to stop too, two full buffers would wait for each other for ever.
    client.server_sends(opened(1))
    target = client.connect_target()
    client.transport.producer.pauseProducing()
    assert client.transport.producerState == "producing"
    client.server_sends(data(1, b"GET /still-read HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert target.value().startswith(b"GET /still-read HTTP/1.1\r\n")


def test_too_much_held_data_pauses_the_conversation_until_connected(client):
    client.server_sends(opened(1))
    chunk = b"x" * (64 * 1024)
    client.server_sends(data(1, b"PUT / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n"))
    for _ in range(MAX_PENDING_BYTES // len(chunk) + 1):
        client.server_sends(data(1, chunk))
    assert client.messages() == [signal(1, b"P")]
    target = client.connect_target()
    assert client.messages() == [signal(1, b"C")]
    assert target.value().endswith(chunk)


def test_messages_for_unknown_ids_are_ignored(client):
    for message in (data(5, b"x"), signal(5, b"P"), signal(5, b"C"), signal(5, b"X")):
        client.server_sends(message)
    assert client.messages() == []
    assert not client.transport.disconnecting


def test_reused_id_replaces_a_stale_conversation(client):
    client.server_sends(opened(1))
    first = client.connect_target()
    client.server_sends(opened(1, 40009))
    settle(client.clock)
    assert first.lost
    second = client.connect_target()
    client.server_sends(data(1, b"GET /new HTTP/1.1\r\n\r\n"))
    assert second.value() == b"GET /new HTTP/1.1\r\n\r\n"
    assert client.messages() == []


@pytest.mark.parametrize(
    "payload, opcode",
    [(b"\x13", BINARY), (b"\x12\x01\x00N", BINARY), (b"\x11Z", BINARY), (b"\x11G", BINARY), (b"\x11GTPoT/1 wire", TEXT)],
    ids=["type", "no-connect-from-server", "control", "short-greeting", "text"],
)
def test_malformed_server_message_closes_with_4180(client, payload, opcode):
    client.server_sends(opened(1))
    target = client.connect_target()
    client.server_sends(payload, opcode)
    frames = client.frames()
    assert len(frames) == 1 and frames[0].opcode == CLOSE and frames[0].close_code == 4180
    client.server_sends(close_payload(4180), CLOSE)
    settle(client.clock)
    client.transport.peer_closes()
    settle(client.clock)
    assert target.lost
    assert client.closes and client.closes[0][1] == 4180


def test_nothing_the_server_sends_after_a_malformed_message_is_acted_on(client, clock):
    client.server_sends(opened(1))
    target = client.connect_target()
    client.server_sends(data(1, b"GET /before HTTP/1.1\r\n\r\n"))
    client.server_sends(b"\x13")
    client.server_sends(data(1, b"GET /after HTTP/1.1\r\n\r\n"))
    client.server_sends(signal(1, b"X"))
    client.server_sends(opened(2))
    assert target.value().startswith(b"GET /before ") and b"after" not in target.value()
    assert not target.disconnecting
    assert len(clock.tcpClients) == 1
    assert [frame.close_code for frame in client.frames()] == [4180]


def test_half_close_in_an_http_tunnel_closes_with_4180(client):
    client.server_sends(opened(1))
    target = client.connect_target()
    client.server_sends(signal(1, b"E"))
    assert [frame.close_code for frame in client.frames()] == [4180]
    assert not target.write_closed


def test_websocket_closing_closes_every_target(client):
    client.server_sends(opened(1))
    client.server_sends(opened(2, 40002))
    targets = [client.connect_target(0), client.connect_target(1)]
    client.transport.peer_closes()
    settle(client.clock)
    assert all(t.lost for t in targets)
    assert client.protocol.conversations == {}
    assert len(client.closes) == 1 and client.closes[0][0] is None


def test_client_pings_every_15_s(client, clock):
    client.frames()
    clock.advance(PING_INTERVAL)
    pings = [f for f in client.frames() if f.opcode == PING]
    assert len(pings) == 1
    client.server_sends(pings[0].payload, PONG)
    clock.advance(PING_INTERVAL)
    assert [f.opcode for f in client.frames()] == [PING]


# Our client against our server, both in memory.


class Pipe:
    """Moves bytes between two memory transports until neither has anything new."""

    def __init__(self, one, other, clock):
        self.ends = [[one, 0], [other, 0]]
        self.clock = clock

    def pump(self):
        for _ in range(1000):
            moved = False
            for source, sink in ((self.ends[0], self.ends[1]), (self.ends[1], self.ends[0])):
                new = source[0].value()[source[1]:]
                if new and not sink[0].lost:
                    source[1] += len(new)
                    sink[0].receive(new)
                    moved = True
            settle(self.clock)
            if not moved:
                return
        raise AssertionError("the two ends keep talking")


def test_our_client_against_our_server(clock):
    server = MemoryServer(clock=clock)
    client = Client(clock)
    pipe = Pipe(server.connect(), client.transport, clock)
    pipe.pump()
    assert client.greetings == ["wire"]

    visitor = server.visit("wire", b"GET /hello HTTP/1.1\r\nHost: wire.localhost\r\n\r\n", peer=("127.0.0.1", 41000))
    pipe.pump()
    target = client.connect_target()
    pipe.pump()
    assert target.value() == b"GET /hello HTTP/1.1\r\nHost: localhost:8080\r\n\r\n"
    target.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    target.peer_closes()
    pipe.pump()
    assert visitor.value() == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    assert visitor.lost

    refused = server.visit("wire")
    pipe.pump()
    attempts = len(clock.tcpClients)
    client.refuse_target()  # the address that worked before is tried first, directly
    pipe.pump()
    assert len(clock.tcpClients) == attempts + 1  # then the name is resolved again
    client.refuse_target()
    pipe.pump()
    assert refused.value().startswith(b"HTTP/1.1 502 ") and refused.lost


def test_later_conversations_connect_to_the_address_that_worked(client):
    client.server_sends(opened(1))
    client.connect_target()
    resolved_attempt = client.clock.tcpClients[-1]
    client.server_sends(opened(2))
    direct_attempt = client.clock.tcpClients[-1]
    assert direct_attempt is not resolved_attempt
    assert direct_attempt[:2] == ("127.0.0.1", 8080)


def test_id_reused_right_after_a_close_belongs_to_the_new_conversation(client):
    client.server_sends(opened(1))
    first = client.connect_target()
    # X and a new H for the same id arrive before the old target has finished closing.
    client.transport.receive(
        encode_frame(BINARY, signal(1, b"X"), mask=False) + encode_frame(BINARY, opened(1, 40002), mask=False)
    )
    settle(client.clock)
    assert first.lost
    second = client.connect_target()
    client.server_sends(data(1, b"GET / HTTP/1.1\r\n\r\n"))
    assert second.value() == b"GET / HTTP/1.1\r\n\r\n"
    second.receive(b"answer")
    second.peer_closes()
    assert client.messages() == [data(1, b"answer"), signal(1, b"X")]


def test_refused_target_after_server_close_sends_nothing(client):
    client.server_sends(opened(1))
    client.server_sends(signal(1, b"X"))
    client.server_sends(opened(1, 40002))
    client.refuse_target(0)
    assert client.messages() == []
    assert 1 in client.protocol.conversations


def test_server_close_reaches_a_target_whose_buffer_was_full(client):
    client.server_sends(opened(1))
    target = client.connect_target()
    target.hold()
    client.server_sends(data(1, b"PUT / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"))
    client.server_sends(data(1, b"b" * 100_000))
    assert signal(1, b"P") in client.messages()
    client.server_sends(signal(1, b"X"))
    settle(client.clock)
    assert not target.lost
    target.drain()
    settle(client.clock)
    assert target.lost and not target.aborted
    assert target.value().endswith(b"b" * 100_000)
    assert client.messages() == []


def test_slow_visitor_download_through_our_client_and_server(clock):
    """A visitor that stops reading: pause reaches the target, every byte arrives, and
    the visitor's connection closes once it has read them."""
    server = MemoryServer(clock=clock)
    client = Client(clock, target="8080")
    pipe = Pipe(server.connect(), client.transport, clock)
    pipe.pump()
    visitor = server.visit("wire", b"GET /big HTTP/1.1\r\nHost: wire.localhost\r\n\r\n")
    visitor.hold()
    pipe.pump()
    target = client.connect_target()
    pipe.pump()
    body = bytes(range(256)) * 4096  # 1 MiB
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    offset, paused_seen = 0, False
    while offset < len(answer):
        if target.producerState == "producing":
            target.receive(answer[offset:offset + 16384])
            offset += 16384
        else:
            paused_seen = True
            visitor.drain()
            visitor.hold()
        pipe.pump()
    target.peer_closes()
    pipe.pump()
    assert paused_seen
    visitor.drain()
    pipe.pump()
    assert visitor.value() == answer
    assert visitor.lost and not visitor.aborted


# TCP tunnels (`tpot tcp`): raw conversations only, and only where the server granted tcp.

SECRET = "s" * 32


def tcp_client(clock, granted="reclaim, ipv6, tcp", log=False):
    client = Client(clock, target="2222", kind="tcp", access_secret=SECRET, log=log)
    client.answer_upgrade(headers=[("TPoT-Extensions", granted)])
    client.server_sends(b"\x11GTPoT/1 wire")
    return client


def raw_opened(conversation_id, port=40001):
    return b"\x11R" + opened(conversation_id, port)[2:]


def test_tcp_tunnel_relays_raw_bytes_untouched(clock):
    client = tcp_client(clock)
    client.server_sends(raw_opened(1))
    assert [(host, port) for host, port, *_ in clock.tcpClients] == [("127.0.0.1", 2222)]
    stream = b"GET / HTTP/1.1\r\nHost: wire.localhost:3000\r\n\r\nSSH-2.0-x\r\n"
    client.server_sends(data(1, stream))
    target = client.connect_target()
    assert target.value() == stream
    target.protocol.dataReceived(b"SSH-2.0-server\r\n")
    assert client.messages() == [data(1, b"SSH-2.0-server\r\n")]


def test_tcp_tunnel_refuses_http_visitors_without_touching_the_target(clock):
    client = tcp_client(clock)
    client.server_sends(opened(1))
    assert clock.tcpClients == []
    assert client.messages() == [signal(1, b"N")]
    assert 1 not in client.protocol.conversations


def test_http_tunnel_refuses_raw_conversations(client, clock):
    client.server_sends(raw_opened(1))
    assert clock.tcpClients == []
    assert client.messages() == [signal(1, b"N")]


def test_tcp_not_granted_closes_the_tunnel_and_reports_it(clock):
    client = Client(clock, target="2222", kind="tcp", access_secret=SECRET)
    client.answer_upgrade(headers=[("TPoT-Extensions", "reclaim")])
    frames = client.frames()
    assert [frame.opcode for frame in frames] == [CLOSE] and frames[0].close_code == 1000
    # Whatever such a server sends next (its greeting, a visitor) is not acted on.
    client.server_sends(b"\x11GTPoT/1 wire")
    client.server_sends(opened(1))
    assert client.greetings == [] and clock.tcpClients == []
    client.server_sends(close_payload(1000), opcode=CLOSE)
    client.transport.peer_closes()
    settle(clock)
    assert client.unsupported == [{"tcp"}] and client.closes == []


def test_a_pool_not_granted_closes_the_tunnel_and_reports_it(clock):
    client = Client(clock, pool="pool-" * 7)
    client.answer_upgrade(headers=[("TPoT-Extensions", "reclaim, ipv6")])
    frames = client.frames()
    assert [frame.opcode for frame in frames] == [CLOSE] and frames[0].close_code == 1000
    client.server_sends(close_payload(1000), opcode=CLOSE)
    client.transport.peer_closes()
    settle(clock)
    assert client.unsupported == [{"pool"}] and client.closes == []


def test_a_pool_granted_stays_open(clock):
    client = Client(clock, pool="pool-" * 7)
    client.answer_upgrade(headers=[("TPoT-Extensions", "reclaim, ipv6, pool")])
    assert client.frames() == []
    assert client.unsupported == []


def test_tcp_tunnel_logs_each_connection_when_it_ends(clock):
    client = tcp_client(clock, log=True)
    client.server_sends(raw_opened(1, port=40001))
    client.refuse_target()
    assert client.out.getvalue().startswith("TCP 127.0.0.1:40001 → target unreachable  0 B in  0 B out  ")
    client.server_sends(raw_opened(2, port=40002))
    client.server_sends(data(2, b"x" * 2048))
    target = client.connect_target()
    clock.advance(1.5)
    target.protocol.dataReceived(b"y" * 10)
    target.peer_closes()
    settle(clock)
    assert client.out.getvalue().splitlines()[1] == "TCP 127.0.0.1:40002 → closed  2.0 KiB in  10 B out  1500 ms"


def test_raw_half_close_from_the_connecting_side_shuts_only_writing(clock):
    client = tcp_client(clock)
    client.server_sends(raw_opened(1))
    client.server_sends(data(1, b"query"))
    client.server_sends(signal(1, b"E"))  # before the target is even connected
    target = client.connect_target()
    assert target.value() == b"query" and target.write_closed and not target.disconnecting
    target.protocol.dataReceived(b"answer")  # the target still answers
    target.peer_half_closes()  # and then ends its side too: both directions are done
    settle(clock)
    assert client.messages() == [data(1, b"answer"), signal(1, b"E"), signal(1, b"X")]
    assert target.lost


def test_raw_half_close_from_the_target_keeps_the_other_direction(clock):
    client = tcp_client(clock)
    client.server_sends(raw_opened(1))
    target = client.connect_target()
    target.protocol.dataReceived(b"banner")
    target.peer_half_closes()
    assert client.messages() == [data(1, b"banner"), signal(1, b"E")]
    client.server_sends(data(1, b"more"))
    assert target.value() == b"more" and not target.disconnecting
    client.server_sends(signal(1, b"E"))
    settle(clock)
    assert target.lost and client.messages() == [signal(1, b"X")]


def test_http_targets_end_on_their_end_of_stream_as_before(client, clock):
    client.server_sends(opened(1))
    target = client.connect_target()
    target.peer_half_closes()
    settle(clock)
    assert client.messages() == [signal(1, b"X")]


def test_raw_half_close_to_a_full_target_is_not_held_back_by_its_pause(clock):
    # Twisted resumes a paused producer when the buffer drains instead of sending the FIN:
    # the producer must be gone (and the server's pause lifted) before the half-close.
    client = tcp_client(clock)
    client.server_sends(raw_opened(1))
    target = client.connect_target()
    target.hold()
    client.server_sends(data(1, b"x" * 70_000))
    assert client.messages() == [signal(1, b"P")]
    client.server_sends(signal(1, b"E"))
    assert target.producer is None and target.write_closed
    assert client.messages() == [signal(1, b"C")]
