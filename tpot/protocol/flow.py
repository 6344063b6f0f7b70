"""Flow-control pieces both ends share.

Each conversation reads from one socket (a visitor on the server, a target on the client)
and may be told to stop for several independent reasons: the peer said pause, or the
tunnel's own WebSocket is backed up.  `ReadPauses` keeps those reasons; the socket reads
again only when none is left.  `WebSocketBackpressure` is the producer registered on a
tunnel's WebSocket transport, pausing every conversation of that tunnel while it is full.
`UnackedBudget` sums what a tunnel's client sent for paused conversations, per tunnel and
for the whole server.
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
# The same, summed over all the conversations of one tunnel and over all the server's
# tunnels: what the server holds for visitors that do not read.  Those bytes all crossed one
# WebSocket after its pauses, so an honest tunnel's in-flight is at most about one pipe's
# worth (kernel buffers both ends, ~10 MiB) per pause, and far less on a fast link (20 stuck
# downloads through our client on loopback: the server grew 12 MiB); the tunnel bound is
# four conversations' allowance, the server's four tunnels'.  Past either, the
# tunnel whose client sent the bytes is cut off (CLOSE_TOO_MUCH_UNACKED).
MAX_TUNNEL_UNACKED_BYTES = 4 * MAX_UNACKED_BYTES
MAX_SERVER_UNACKED_BYTES = 16 * MAX_UNACKED_BYTES


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


class UnackedBudget:
    """Bytes held for paused conversations, counted against `limit`: one tunnel's (with the
    server's as `parent`) or the whole server's.  `name` says which, for close reasons."""

    def __init__(self, limit, name, parent=None):
        self.limit = limit
        self.name = name
        self.parent = parent
        self.held = 0

    def take(self, size):
        """Count `size` more bytes here and in the parents: the budget now over its limit
        (this one first), or None."""
        self.held += size
        over = None if self.parent is None else self.parent.take(size)
        return self if self.held > self.limit else over

    def give_back(self, size):
        self.held -= size
        if self.parent is not None:
            self.parent.give_back(size)


@implementer(IPushProducer)
class WebSocketBackpressure:
    """`conversations` maps ids to objects with pause_reading(why) / resume_reading(why).

    Registered with `reading` (the ReadPauses of the WebSocket's own socket), the WebSocket
    itself is not read either while it is backed up (reason WEBSOCKET), so that a peer which
    sends without reading (pings whose pongs pile up) cannot make us queue answers without
    end.  Only one end of a tunnel may do so, the one whose peer always reads (the server:
    our client never stops reading its WebSocket); were both to, two full buffers would wait
    for each other for ever.
    """

    def __init__(self, conversations):
        self.conversations = conversations
        self.backed_up = False
        self.reading = None
        self._first = 0

    def register(self, transport, reading=None):
        """Become the producer of the tunnel's WebSocket `transport`, tuned for relaying."""
        # Autobahn's tcpNoDelay option never reaches the socket: Autobahn applies it before
        # copying the factory's options to the protocol, and swallows the AttributeError.
        no_delay(transport)
        # Under TLS the write buffer that fills is the wrapped TCP transport's.
        for layer in (transport, getattr(transport, "transport", None)):
            if layer is not None:
                layer.bufferSize = WEBSOCKET_BUFFER
        self.reading = reading
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
        if self.reading is not None:
            # ReadPauses keeps reasons: Twisted's pause on every write of a full buffer, and
            # LeanFrames' turns (frames.py), each lift only their own.
            (self.reading.pause if backed_up else self.reading.resume)(WEBSOCKET)
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
    conversation; what it sends meanwhile counts against MAX_UNACKED_BYTES, and against
    the tunnel's and the server's budgets (`self.tunnel.unacked`, an UnackedBudget) until
    the conversation resumes or ends (`release_unacked`).  Needs `self.tunnel`, `self.id`
    (None while no conversation is open), `self.log` and `cut_off()` (drop the socket and
    what it was not sent).
    """

    _unacked = None

    def pauseProducing(self):
        if self.id is not None and self._unacked is None:
            self._unacked = 0
            self.tunnel.send_pause(self.id)

    def resumeProducing(self):
        if self.id is not None and self._unacked is not None:
            self.release_unacked()
            self.tunnel.send_resume(self.id)

    def stopProducing(self):
        pass

    def send_buffer_full(self):
        """Whether the socket's send buffer is full (the client was asked to pause)."""
        return self._unacked is not None

    def ignored_pause(self, size):
        """Count `size` bytes from the client: True if they must not be written, because
        the client sent too much while paused: for this conversation (it is cut), or for
        its tunnel or the server as a whole (the tunnel is cut off, this conversation too)."""
        if self._unacked is None:
            return False
        self._unacked += size
        over = self.tunnel.unacked.take(size)
        if self._unacked > MAX_UNACKED_BYTES:
            self.log.warn("tunnel client ignored pause; closing conversation {id}", id=self.id)
            self.cut_off()
            return True
        if over is not None:
            self.tunnel.held_too_much(over)
            return True
        return False

    def release_unacked(self):
        """The bytes counted since the pause are no longer held (resumed, or ended)."""
        if self._unacked is not None:
            self.tunnel.unacked.give_back(self._unacked)
            self._unacked = None


class UnregisterOnDrop:
    """Mixin for Autobahn protocols with a producer on their transport.

    Twisted does not close a transport whose streaming producer is paused; it resumes the
    producer when the buffer drains instead.  Autobahn closes through dropConnection.
    """

    def dropConnection(self, abort=False):
        if self.transport is not None:
            self.transport.unregisterProducer()
        super().dropConnection(abort)
