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
        for conversation in list(self.conversations.values()):
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
