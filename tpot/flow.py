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
# (relay.MAX_UNACKED_BYTES), most of which the kernel's socket buffers already hold.
WEBSOCKET_BUFFER = 256 * 1024


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


class UnregisterOnDrop:
    """Mixin for Autobahn protocols with a producer on their transport.

    Twisted does not close a transport whose streaming producer is paused; it resumes the
    producer when the buffer drains instead.  Autobahn closes through dropConnection.
    """

    def dropConnection(self, abort=False):
        if self.transport is not None:
            self.transport.unregisterProducer()
        super().dropConnection(abort)
