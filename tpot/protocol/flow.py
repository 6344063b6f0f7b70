"""Flow-control pieces both ends share.

Each conversation reads from one socket (a visitor on the server, a target on the client)
and may be told to stop for several independent reasons: the peer said pause, or the
tunnel's own WebSocket is backed up.  `ReadPauses` keeps those reasons; the socket reads
again only when none is left.  `WebSocketBackpressure` is the producer registered on a
tunnel's WebSocket transport, pausing every conversation of that tunnel while it is full.
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

PEER = "peer"
WEBSOCKET = "websocket"

# What a tunnel's WebSocket may hold unsent before every conversation is paused.  Twisted's
# default (its 64 KiB bufferSize) is less than one data message carrying a full 64 KiB
# read, so the tunnel paused and resumed all its conversations after nearly every read.
# Kept small: it adds to what a peer may still receive after asking for a pause
# (MAX_UNACKED_BYTES), most of which the kernel's socket buffers already hold.
WEBSOCKET_BUFFER = 256 * 1024

# What a client may still send after we asked it to pause (messages in flight); a client
# that goes on beyond this ignores pause, and its conversation is cut.  An honest client
# can have a whole kernel send buffer (Linux tcp_wmem max, 4 MiB by default) plus what sits
# in our receive buffer in flight when the pause is sent, so this must be well above 4 MiB.
MAX_UNACKED_BYTES = 16 * 1024 * 1024


def no_delay(transport):
    """Switch Nagle's algorithm off, where the transport has it (TCP, or TLS over TCP).

    With it on, a small message written while an earlier small one is unacknowledged
    waits for the peer's delayed ACK: 40 ms for a pause, a resume or a request.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


class ReadPauses:
    def __init__(self):
        self.reasons = set()
        self.transport = None

    def attach(self, transport):
        self.transport = transport
        if self.reasons:
            transport.pauseProducing()

    def pause(self, why):
        if not self.reasons and self.transport is not None:
            self.transport.pauseProducing()
        self.reasons.add(why)

    def resume(self, why):
        if why not in self.reasons:
            return
        self.reasons.discard(why)
        if not self.reasons and self.transport is not None:
            self.transport.resumeProducing()


@implementer(IPushProducer)
class WebSocketBackpressure:
    """`conversations` maps ids to objects with pause_reading(why) / resume_reading(why)."""

    def __init__(self, conversations):
        self.conversations = conversations
        self.backed_up = False
        self._first = 0

    def register(self, transport):
        """Become the producer of the tunnel's WebSocket `transport`, tuned for relaying."""
        # Autobahn's tcpNoDelay option never reaches the socket: Autobahn applies it before
        # copying the factory's options to the protocol, and swallows the AttributeError.
        no_delay(transport)
        # Under TLS the write buffer that fills is the wrapped TCP transport's.
        for layer in (transport, getattr(transport, "transport", None)):
            if layer is not None:
                layer.bufferSize = WEBSOCKET_BUFFER
        transport.registerProducer(self, True)

    def admit(self, conversation):
        """A new conversation starts paused while the WebSocket is backed up."""
        if self.backed_up:
            conversation.pause_reading(WEBSOCKET)

    def pauseProducing(self):
        self._set(True)

    def resumeProducing(self):
        self._set(False)

    def stopProducing(self):
        pass

    def _set(self, backed_up):
        self.backed_up = backed_up
        conversations = list(self.conversations.values())
        if not backed_up and conversations:
            # Sockets resumed together are read in the order they were resumed, and the
            # WebSocket may fill again after the first few: a fixed order would let the
            # oldest conversations starve the others for seconds.  Take turns instead.
            self._first = (self._first + 1) % len(conversations)
            conversations = conversations[self._first:] + conversations[:self._first]
        for conversation in conversations:
            if backed_up:
                conversation.pause_reading(WEBSOCKET)
            else:
                conversation.resume_reading(WEBSOCKET)


def shut_down_writing(transport, producer):
    """Half-close `transport` (a FIN once its buffer has drained), whose producer is
    `producer`.  The producer goes first: with one registered, Twisted resumes it when the
    buffer drains instead of sending the FIN, which then never goes.  It is resumed, since
    nothing more will be written for it to hold back."""
    transport.unregisterProducer()
    producer.resumeProducing()
    transport.loseWriteConnection()


@implementer(IPushProducer)
class ReadWhileRoom:
    """The producer on a transport data is relayed to: while its send buffer is full, the
    transport the data comes from is not read (`reading`, its ReadPauses, for `why`)."""

    def __init__(self, reading, why):
        self.reading = reading
        self.why = why

    def pauseProducing(self):
        self.reading.pause(self.why)

    def resumeProducing(self):
        self.reading.resume(self.why)

    def stopProducing(self):
        # The transport is gone: the other is read again (what it brings is dropped), so
        # that its closing handshake is not stuck behind a pause that can never end.
        self.reading.resume(self.why)


@implementer(IPushProducer)
class PausesPeer:
    """Mixin for the server's side of a conversation's own socket (a visitor, a connection
    to a TCP tunnel): the producer registered on that socket.

    While the socket's send buffer is full the tunnel's client is asked to pause the
    conversation; what it sends meanwhile counts against MAX_UNACKED_BYTES.  Needs
    `self.tunnel` and `self.id` (None while no conversation is open).
    """

    _unacked = None

    def pauseProducing(self):
        if self.id is not None and self._unacked is None:
            self._unacked = 0
            self.tunnel.send_pause(self.id)

    def resumeProducing(self):
        if self.id is not None and self._unacked is not None:
            self._unacked = None
            self.tunnel.send_resume(self.id)

    def stopProducing(self):
        pass

    def send_buffer_full(self):
        """Whether the socket's send buffer is full (the client was asked to pause)."""
        return self._unacked is not None

    def ignored_pause(self, size):
        """Count `size` bytes from the client: True once it sent too much while paused."""
        if self._unacked is None:
            return False
        self._unacked += size
        return self._unacked > MAX_UNACKED_BYTES


class UnregisterOnDrop:
    """Mixin for Autobahn protocols with a producer on their transport.

    Twisted does not close a transport whose streaming producer is paused; it resumes the
    producer when the buffer drains instead.  Autobahn closes through dropConnection.
    """

    def dropConnection(self, abort=False):
        if self.transport is not None:
            self.transport.unregisterProducer()
        super().dropConnection(abort)
