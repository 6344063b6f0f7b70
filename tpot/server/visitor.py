"""The visitor side of the server: one visitor connection relayed as one conversation.

`VisitorProtocol` takes over a connection the router has read the first head of, opens a
conversation on the tunnel, and relays bytes both ways.  It is the producer registered on
the visitor's own transport, so a visitor that reads slowly makes the tunnel send pause
(and resume when it drains); reading from the visitor stops while the client asked for a
pause or while the tunnel's WebSocket is backed up.  What the client sends while paused is
counted (PausesPeer) until the visitor drains it or goes.
"""

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from tpot.http.responses import error_response
from tpot.protocol.flow import PausesPeer, ReadPauses, no_delay
from tpot.protocol.transports import send_at_once
from tpot.server.timers import SilenceTimer

NOT_CONNECTED = "The tunnel's client could not connect to its local service (connection refused or unreachable)."
TUNNEL_GONE = "The tunnel closed before answering this request."
TOO_MANY = "This tunnel has too many open connections; try again shortly."
WRONG_KIND = "This tunnel does not take this kind of connection."


class ConversationRefused(Exception):
    """The tunnel cannot take this visitor; the message is for the visitor's error page."""


class VisitorProtocol(PausesPeer, Protocol):
    log = Logger()

    def __init__(self, tunnel, clock, idle_timeout=None, stats=None, address=None):
        self.tunnel = tunnel
        self.stats = stats
        self.address = address
        self.idle = SilenceTimer(clock, idle_timeout, self._idle_too_long)
        self.id = None
        self.answered = False
        self.reading = ReadPauses()
        self._remote_closed = False

    def connectionMade(self):
        if self.address is None:
            peer = self.transport.getPeer()
            self.address = (getattr(peer, "host", ""), getattr(peer, "port", 0))
        try:
            self.id = self.tunnel.open_conversation(self, *self.address)
        except ConversationRefused as refusal:
            self.refuse(503, str(refusal))
            return
        self.transport.registerProducer(self, True)
        no_delay(self.transport)
        send_at_once(self.transport)  # one conversation's bytes (tpot.protocol.transports)
        self.reading.attach(self.transport)
        self.idle.start()

    def dataReceived(self, data):
        if self.id is not None and not self._remote_closed:
            self.idle.touch()
            self.tunnel.send_data(self.id, data)

    def connectionLost(self, reason=None):
        self.idle.stop()
        self.release_unacked()
        if self.id is not None:
            self.tunnel.conversation_ended(self.id, notify=not self._remote_closed)
            self.id = None

    # What the tunnel tells us.

    def deliver(self, payload):
        self.answered = True
        self.idle.touch()
        if self.ignored_pause(len(payload)):
            return
        self.transport.write(payload)

    def cut_off(self):
        """The tunnel's client sent too much while paused: drop the visitor, and with it
        what its buffer holds."""
        self.transport.abortConnection()

    def pause_reading(self, why):
        self.reading.pause(why)

    def resume_reading(self, why):
        self.reading.resume(why)

    def remote_closed(self):
        """The client's side is gone: write what we have, then close."""
        self._remote_closed = True
        self._close()

    def no_connect(self):
        self._remote_closed = True
        self.refuse(502, NOT_CONNECTED)

    def tunnel_lost(self):
        self._remote_closed = True
        self.refuse(503, TUNNEL_GONE)

    def _idle_too_long(self, idle_for):
        self.log.info("closing visitor idle for {s:.0f} s", s=idle_for)
        self._close()

    def refuse(self, status, message):
        """An error page if the visitor has seen nothing yet, otherwise just a close."""
        if not self.answered:
            self.answered = True
            if self.stats is not None:
                self.stats.count_refusal(status)
            self.transport.write(error_response(status, message))
        self._close()

    def _close(self):
        # A transport with a registered producer that is paused (the visitor read slowly)
        # does not close once its buffer drains: it resumes the producer instead.  So stop
        # being its producer first, or the visitor's connection stays open for ever.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
