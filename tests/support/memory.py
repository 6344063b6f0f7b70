"""In-memory plumbing for protocol tests: a transport, WebSocket frames, a whole server.

Nothing here opens a socket.  `MemoryTransport` behaves like a TCP transport where it
matters to the code under test: closing is asynchronous (the protocol hears
`connectionLost` on the next turn of the clock, after its registered producer is
stopped), writes after the connection is gone are dropped, and bytes the peer sends while
the transport is paused wait until it is resumed.  Run pending zero-delay calls with
`settle(clock)`.

Its send buffer follows Twisted's `FileDescriptor`: while the peer is not reading
(`hold()`), writes pile up; beyond `bufferSize` a registered streaming producer is paused
(on every such write, as Twisted does) and resumed when the buffer drains (`drain()`).
Like Twisted, `loseConnection` with a producer that was paused at that moment does not
close the connection: the drained buffer resumes the producer instead, and the
connection closes only once the producer is unregistered or writes more.
"""

import base64
import hashlib
import os
import struct

import txaio
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHalfCloseableProtocol, ITCPTransport
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.python.failure import Failure
from zope.interface import implementer

from tpot.server.authenticator import Authenticator
from tpot.server.memory_store import MemoryNameStore
from tpot.server.router import RouterFactory
from tpot.server.table import TunnelTable
from tpot.server.tunnel import TunnelFactory

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def settle(clock, limit=1000):
    """Run every call that is due now (closes, flushes), including ones they schedule."""
    for _ in range(limit):
        now = clock.seconds()
        if not any(call.getTime() <= now for call in clock.getDelayedCalls()):
            return
        clock.advance(0)
    raise AssertionError("calls keep scheduling themselves at the current time")


def use_clock(clock):
    """Point txaio (Autobahn's timers) at `clock`; returns a function restoring the old loop
    and checking that nothing was scheduled on the real reactor meanwhile."""
    from twisted.internet import reactor

    txaio.use_twisted()
    previous = txaio.config.loop
    txaio.config.loop = clock
    before = set(reactor.getDelayedCalls())

    def restore():
        txaio.config.loop = previous
        leaked = [call for call in reactor.getDelayedCalls() if call not in before]
        for call in leaked:
            call.cancel()
        assert not leaked, f"calls left on the real reactor: {leaked}"

    return restore


def tcp_address(host, port):
    """The address a TCP transport reports: IPv6 ones (`::ffff:a.b.c.d` from a dual-stack
    socket too) are IPv6Address."""
    return (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)


@implementer(ITCPTransport)
class MemoryTransport(StringTransportWithDisconnection):
    """A StringTransport that closes, pauses and delivers like a TCP connection would
    (an ITCPTransport: Nagle and keep-alive are recorded, tests/memory/test_interfaces.py
    verifies the declaration)."""

    bufferSize = 65536
    no_delay = False
    keep_alive = False

    def __init__(self, clock, peer=("127.0.0.1", 40000), host=("127.0.0.1", 3000)):
        super().__init__(
            hostAddress=tcp_address(*host), peerAddress=tcp_address(*peer), lenient=True
        )
        self.clock = clock
        self.inbound = []
        self.lost = False
        self.lost_reason = None
        self.aborted = False
        self.stopped_producer = None
        self.held = False
        self.write_closed = False
        self.buffered = 0
        self.producerPaused = False
        self._closing = None

    # The remote peer's actions.

    def receive(self, data):
        """The peer sent `data`: delivered now, or once reading resumes."""
        assert not self.lost, "the connection is gone"
        if self.producerState == "producing" and not self.inbound:
            self.protocol.dataReceived(data)
        else:
            self.inbound.append(data)

    def receive_in_pieces(self, data, size=1):
        for start in range(0, len(data), size):
            self.receive(data[start:start + size])

    def peer_closes(self):
        """The peer closed its end (a FIN): the protocol hears it now."""
        self._lose(error.ConnectionDone("the peer closed"))

    def hold(self):
        """The peer stops reading: what is written from now on stays in the send buffer."""
        self.held = True

    def drain(self):
        """The peer reads everything: the send buffer empties (Twisted's doWrite)."""
        self.held = False
        self.buffered = 0
        self._buffer_empty()

    # ITransport, as the code under test sees it.

    def write(self, data):
        if self.lost:
            return
        super().write(data)
        if self.held and data:
            self.buffered += len(data)
            if self.producer is not None and self.streaming and self.buffered > self.bufferSize:
                self.producerPaused = True
                self.producer.pauseProducing()

    def writeSequence(self, data):
        self.write(b"".join(data))

    def getTcpNoDelay(self):
        return self.no_delay

    def setTcpNoDelay(self, enabled):
        self.no_delay = bool(enabled)

    def getTcpKeepAlive(self):
        return self.keep_alive

    def setTcpKeepAlive(self, enabled):
        self.keep_alive = bool(enabled)

    def loseConnection(self):
        if self.lost or self.disconnecting:
            return
        self.disconnecting = True
        self._schedule_write_check()

    def loseWriteConnection(self):
        """A half-close: our FIN goes after what is written; reading goes on."""
        self.write_closed = True

    def peer_half_closes(self):
        """The peer's FIN with its side still reading: a half-closeable protocol hears
        readConnectionLost, any other the end of the connection."""
        if IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        else:
            self.peer_closes()

    def abortConnection(self):
        if self.lost:
            return
        self.aborted = True
        self.disconnecting = True
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        self._closing = self.clock.callLater(0, self._lose, error.ConnectionAborted())

    def registerProducer(self, producer, streaming):
        if self.lost:
            producer.stopProducing()
            return
        super().registerProducer(producer, streaming)

    def unregisterProducer(self):
        # Like a real transport: unregistering when nothing is registered is harmless, and
        # a connection waiting to close can now close.
        self.producer = None
        self.streaming = None
        if self.disconnecting and not self.lost:
            self._schedule_write_check()

    def resumeProducing(self):
        super().resumeProducing()
        if self.inbound:
            self.clock.callLater(0, self._flush)

    # Internals.

    def _schedule_write_check(self):
        if not (self.held and self.buffered):
            self.clock.callLater(0, self._write_check)

    def _write_check(self):
        if not (self.held and self.buffered):
            self._buffer_empty()

    def _buffer_empty(self):
        if self.lost:
            return
        if self.producer is not None and (not self.streaming or self.producerPaused):
            self.producerPaused = False
            self.producer.resumeProducing()
        elif self.disconnecting:
            self._lose(error.ConnectionDone("closed"))

    def _flush(self):
        while self.inbound and self.producerState == "producing" and not self.lost:
            self.protocol.dataReceived(self.inbound.pop(0))

    def _lose(self, reason):
        if self.lost:
            return
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        self.lost = True
        self.lost_reason = reason
        self.connected = False
        if self.producer is not None:
            self.stopped_producer = self.producer
            self.producer.stopProducing()
            self.producer = None
        self.protocol.connectionLost(Failure(reason))


def connect(protocol, transport):
    """Attach a protocol to a transport the way a reactor does."""
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


# WebSocket frames, RFC 6455 section 5.2.


def encode_frame(opcode, payload=b"", fin=True, mask=True):
    """One frame; client frames are masked (a random key unless `mask` is 4 bytes)."""
    payload = bytes(payload)
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return header + payload
    key = mask if isinstance(mask, bytes) else os.urandom(4)
    return header + key + apply_mask(payload, key)


def apply_mask(payload, key):
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big") if payload else b""


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, opcode, payload, masked):
        self.fin = fin
        self.opcode = opcode
        self.payload = payload
        self.masked = masked

    @property
    def close_code(self):
        assert self.opcode == CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    def __repr__(self):
        return f"Frame(opcode={self.opcode:#x}, fin={self.fin}, masked={self.masked}, payload={self.payload!r})"


class FrameReader:
    """Splits a byte stream into frames, whatever the chunking."""

    def __init__(self):
        self.buffer = b""

    def feed(self, data):
        self.buffer += data
        frames = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self):
        buf = self.buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        assert first & 0x70 == 0, f"reserved bits set in {first:#x}"
        offset = 2
        length = second & 0x7F
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, 2)
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, 2)
            offset = 10
        masked = bool(second & 0x80)
        key = None
        if masked:
            if len(buf) < offset + 4:
                return None
            key = buf[offset:offset + 4]
            offset += 4
        if len(buf) < offset + length:
            return None
        payload = buf[offset:offset + length]
        if masked:
            payload = apply_mask(payload, key)
        self.buffer = buf[offset + length:]
        return Frame(bool(first & 0x80), first & 0x0F, payload, masked)


def websocket_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID).digest()).decode("ascii")


def upgrade_request(target="/create-tpot", host="localhost", key=None, headers=(), version="1.1", method="GET"):
    key = key or base64.b64encode(os.urandom(16)).decode("ascii")
    lines = [
        f"{method} {target} HTTP/{version}",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def visitor_request(name, path="/", domain="localhost", extra=b""):
    return f"GET {path} HTTP/1.1\r\nHost: {name}.{domain}\r\n\r\n".encode("latin-1") + extra


class HTTPResponse:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name):
        values = [value for key, value in self.headers if key == name.lower()]
        return values[0] if values else None


def parse_response(data):
    """One HTTP response: status, lower-cased headers, and whatever follows the head."""
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {data!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return HTTPResponse(int(status), reason, headers, body)


class WebSocketPeer:
    """The client end of a tunnel's WebSocket, as seen by a test: send frames, read frames."""

    def __init__(self, transport):
        self.transport = transport
        self.reader = FrameReader()
        self.response = None
        self._seen = 0
        self.frames = []  # everything read so far

    def _read(self):
        data = self.transport.value()[self._seen:]
        self._seen += len(data)
        if self.response is None:
            self.reader.buffer += data
            head, separator, rest = self.reader.buffer.partition(b"\r\n\r\n")
            if not separator:
                return []
            self.response = parse_response(head + b"\r\n\r\n")
            self.reader.buffer = b""
            data = rest
        new = self.reader.feed(data)
        self.frames.extend(new)
        return new

    def new_frames(self):
        """Frames the server wrote since the last call."""
        return self._read()

    def new_messages(self):
        """Payloads of new binary frames; any other frame fails the test."""
        frames = self._read()
        assert all(frame.opcode == BINARY and frame.fin and not frame.masked for frame in frames), frames
        return [frame.payload for frame in frames]

    def send(self, payload, opcode=BINARY, fin=True):
        self.transport.receive(encode_frame(opcode, payload, fin=fin))

    def ping(self, payload=b""):
        self.send(payload, PING)

    def close(self, code=1000, reason=b""):
        self.send(close_payload(code, reason), CLOSE)

    @property
    def protocol(self):
        return handed_over(self.transport)


def handed_over(transport):
    """The protocol the router handed a connection to (the router stays as a forwarder)."""
    protocol = transport.protocol
    return getattr(protocol, "_next", None) or protocol


# The auth key and clock of the `keyed` fixture (conftest.py).
SERVER_KEY = "k" * 40
NOW_MS = 1_800_000_000_000


class MemoryServer:
    """A whole TPoT server (name store, tunnel table, authenticator, tunnels, router) on a memory clock."""

    def __init__(self, domain="localhost", key=None, clock_ms=None, clock=None):
        self.clock = clock or MemoryReactorClock()
        self.store = MemoryNameStore(clock=self.clock)
        self.table = TunnelTable()
        self.authenticator = Authenticator(
            key,
            lambda f, *args: defer.maybeDeferred(f, *args),
            clock_ms=clock_ms or (lambda: int(self.clock.seconds() * 1000)),
        )
        self.tunnels = TunnelFactory(self.store, self.table, self.clock)
        self.router = RouterFactory(domain, self.store, self.table, self.authenticator, self.tunnels, self.clock)
        self.domain = domain
        self._next_port = 50000

    def connect(self, data=None, peer=None):
        """A new TCP connection to the server's port, optionally sending `data`."""
        if peer is None:
            self._next_port += 1
            peer = ("127.0.0.1", self._next_port)
        transport = MemoryTransport(self.clock, peer=peer)
        address = transport.getPeer()
        connect(self.router.buildProtocol(address), transport)
        if data is not None:
            transport.receive(data)
        return transport

    def open_tunnel(self, name=None, headers=(), peer=None):
        """Upgrade to a tunnel; returns the WebSocketPeer after checking the 101 and greeting."""
        target = "/create-tpot" + (f"?subdomain={name}" if name else "")
        transport = self.connect(upgrade_request(target, host=self.domain, headers=headers), peer=peer)
        settle(self.clock)
        peer = WebSocketPeer(transport)
        greeting = peer.new_messages()
        assert peer.response is not None and peer.response.status == 101, transport.value()
        assert len(greeting) == 1 and greeting[0].startswith(b"\x11GTPoT/1 "), greeting
        peer.name = greeting[0][len(b"\x11GTPoT/1 "):].decode("ascii")
        return peer

    def tunnel_serving(self, name):
        """The live tunnel visitors of `name` reach now (by the store's route), or None."""
        routes = self.store.lookup(name).result
        return self.table.get(routes[0].lease) if routes else None

    def visit(self, name, data=None, peer=None):
        """A visitor connection to NAME.DOMAIN, sending `data` (a simple GET by default)."""
        transport = self.connect(visitor_request(name, domain=self.domain) if data is None else data, peer=peer)
        settle(self.clock)
        return transport


def new_clock():
    return MemoryReactorClock()


# TPoT/1 messages as the server sends them, and a checked visit.


def opened(conversation_id, port, address=b"\x7f\x00\x00\x01"):
    return b"\x11H" + struct.pack("<H", conversation_id) + address + struct.pack("<H", port)


def data(conversation_id, payload):
    return b"\x12" + struct.pack("<H", conversation_id) + b"D" + payload


def signal(conversation_id, code):
    return b"\x12" + struct.pack("<H", conversation_id) + code


def visit(server, peer, port, request=None):
    """A visitor of `peer`'s tunnel from 127.0.0.1:`port`: checks the server announced it
    and relayed its request; (transport, conversation id)."""
    request = request or visitor_request(peer.name, path=f"/from-{port}")
    transport = server.visit(peer.name, request, peer=("127.0.0.1", port))
    messages = peer.new_messages()
    assert len(messages) == 2, messages
    conversation_id = struct.unpack("<H", messages[0][2:4])[0]
    assert messages == [opened(conversation_id, port), data(conversation_id, request)]
    return transport, conversation_id
