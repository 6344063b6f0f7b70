"""The connecting side of a TCP tunnel: `GET /connect-tpot?subdomain=NAME` on the bare domain.

The router checks the request (tpot.server.requests.check_connect_request), finds the tunnel and checks
the proof of its access secret, then hands the connection to a `ConnectProtocol`: a
WebSocket whose binary messages carry one raw conversation (`R`) of the tunnel, without
TPoT framing.  Towards its tunnel it behaves like a visitor (tpot.server.visitor.VisitorProtocol):
the same flow control, pause allowance and idle timeout; its ends are WebSocket closes
where a visitor gets error pages.
"""

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from tpot.http.addresses import format_address
from tpot.protocol.codec import CLOSE_NO_CONNECT, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TUNNEL_GONE
from tpot.protocol.flow import PEER, WEBSOCKET, PausesPeer, ReadPauses, UnregisterOnDrop, no_delay
from tpot.protocol.frames import OversizeFails, fail_connection, is_open
from tpot.server.timers import SilenceTimer
from tpot.server.tunnel import SERVER_PROTOCOL_OPTIONS
from tpot.server.visitor import ConversationRefused

# Why the connecting side is not read: our buffer towards it is full (besides PEER and WEBSOCKET).
BACKED_UP = "backed up"
NO_CONNECT = "The tunnel's client could not reach its target."
TUNNEL_GONE = "The tunnel closed."
# The tunnel client takes messages of at most 1 MiB, TPoT head included: data from the
# connecting side goes on in pieces of at most a socket read's worth, as a visitor's does.
MAX_PIECE = 64 * 1024
# Our close frame waits behind whatever the connecting side has not read yet; Autobahn's
# usual 5 s for the answer would cut a slow reader off before the end of the stream.
CLOSE_HANDSHAKE_TIMEOUT = 30


class ConnectProtocol(PausesPeer, UnregisterOnDrop, OversizeFails, WebSocketServerProtocol):
    """One connection to a TCP tunnel, relayed as one raw conversation."""

    # A txaio logger, so that Autobahn's per-frame debug logging follows the global level.
    log = txaio.make_logger()

    def __init__(self, tunnel, name, clock, idle_timeout=None, address=("", 0), proved=None):
        super().__init__()
        self.tunnel = tunnel
        self.name = name
        self.proved = proved  # what the connecting side proved, for the log
        self.clock = clock
        self.address = address
        self.idle = SilenceTimer(clock, idle_timeout, self._idle_too_long)
        self.reading = ReadPauses()
        self.id = None
        self.opened_at = None
        self.bytes_up = 0
        self.bytes_down = 0
        self._remote_closed = False
        self._done_sending = False  # the connecting side sent its end of stream
        self._close_when_drained = None

    # Autobahn callbacks.

    def onOpen(self):
        try:
            self.id = self.tunnel.open_conversation(self, *self.address, raw=True)
        except ConversationRefused as refusal:
            self.sendClose(CLOSE_TUNNEL_GONE, str(refusal))
            return
        self.transport.registerProducer(self, True)
        # Autobahn's tcpNoDelay option never reaches the socket (see flow.WebSocketBackpressure).
        no_delay(self.transport)
        self.reading.attach(self.transport)
        self.idle.start()
        self.opened_at = self.clock.seconds()
        self.log.info(
            "connection to tunnel {name} from {peer} opened (with the {proved})",
            name=self.name, peer=self._peer(), proved=self.proved,
        )

    def onMessage(self, payload, isBinary):
        if not isBinary:
            fail_connection(self, CLOSE_PROTOCOL_ERROR, "text message: the stream goes in binary messages")
            return
        if self.id is None or self._remote_closed or self._done_sending:
            return
        if not payload:
            # The connecting side's end of stream (a half-close): it still reads.
            self._done_sending = True
            self.tunnel.send_half_close(self.id)
            return
        self.idle.touch()
        self.bytes_up += len(payload)
        for start in range(0, len(payload), MAX_PIECE):
            self.tunnel.send_data(self.id, payload[start:start + MAX_PIECE])

    def onClose(self, wasClean, code, reason):
        self.idle.stop()
        self.release_unacked()
        if self.id is None:
            return
        self.tunnel.conversation_ended(self.id, notify=not self._remote_closed)
        self.id = None
        self.log.info(
            "connection to tunnel {name} from {peer} closed ({code}) after {duration:.1f} s,"
            " {up} bytes up, {down} bytes down",
            name=self.name, peer=self._peer(), code=code, duration=self.clock.seconds() - self.opened_at,
            up=self.bytes_up, down=self.bytes_down,
        )

    # What the tunnel tells us.

    def deliver(self, payload):
        self.idle.touch()
        if self.ignored_pause(len(payload)):
            return
        if is_open(self):
            self.bytes_down += len(payload)
            self.sendMessage(payload, isBinary=True)

    def pause_reading(self, why):
        self.reading.pause(why)

    def resume_reading(self, why):
        self.reading.resume(why)

    def peer_done_sending(self):
        """The service's end of stream: an empty message, after everything before it."""
        if is_open(self):
            self.sendMessage(b"", isBinary=True)

    def remote_closed(self):
        self._close(CLOSE_NORMAL, "the tunnel's target closed the connection")

    def no_connect(self):
        self._close(CLOSE_NO_CONNECT, NO_CONNECT)

    def tunnel_lost(self):
        self._close(CLOSE_TUNNEL_GONE, TUNNEL_GONE)

    def cut_off(self):
        """The tunnel's client sent too much while paused: drop the connection, and with it
        what its buffer holds."""
        self.dropConnection(abort=True)

    # Internals.

    def pauseProducing(self):
        # Our buffer towards the connecting side is full: the client is asked to pause, and
        # the connecting side is not read meanwhile either, so that what it sends without
        # reading (pings, whose pongs would queue here) stays in its own socket.
        super().pauseProducing()
        self.reading.pause(BACKED_UP)

    def resumeProducing(self):
        self.reading.resume(BACKED_UP)
        super().resumeProducing()
        if self._close_when_drained is not None:
            code, reason = self._close_when_drained
            self._close_when_drained = None
            self.sendClose(code, reason)

    def _close(self, code, reason):
        """Close after what the connecting side has still to read (the tunnel's side is done)."""
        self._remote_closed = True
        # The tunnel's pauses end with its conversation, and the connecting side must be
        # read for its half of the closing handshake (what else it sends is dropped).
        self.reading.resume(PEER)
        self.reading.resume(WEBSOCKET)
        if self.send_buffer_full():
            # A close frame now would wait behind a full buffer; resumeProducing sends it.
            self._close_when_drained = (code, reason)
        else:
            self.sendClose(code, reason)

    def _idle_too_long(self, idle_for):
        self.log.info("closing connection to tunnel {name} idle for {s:.0f} s", name=self.name, s=idle_for)
        self.sendClose(CLOSE_NORMAL, "idle for too long")

    def _peer(self):
        return format_address(self.address)


class ConnectFactory(WebSocketServerFactory):
    """Builds connection protocols for `/connect-tpot` requests the router has accepted."""

    def __init__(self, clock, url="ws://localhost/connect-tpot"):
        super().__init__(url)
        self.clock = clock
        self.setProtocolOptions(**{**SERVER_PROTOCOL_OPTIONS, "closeHandshakeTimeout": CLOSE_HANDSHAKE_TIMEOUT})

    def build_connection(self, tunnel, name, address, idle_timeout=None, proved=None):
        protocol = ConnectProtocol(tunnel, name, self.clock, idle_timeout, address, proved)
        protocol.factory = self
        return protocol
