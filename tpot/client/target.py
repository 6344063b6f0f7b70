"""The client's side of one conversation: a connection to the local target.

Bytes from the tunnel go through the Host rewriter to the target; bytes from the target go
back as data messages.  Flow control mirrors the server's: a full target socket sends
pause (resume when drained), a pause from the server stops reading from the target, and a
backed-up WebSocket stops reading from every target.
"""

import ipaddress

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from tpot.flow import ReadPauses, no_delay
from tpot.rewrite import HostRewriter

# Data held while the target connection is being made; past this the server is asked to
# pause this conversation until the connection is up.
MAX_PENDING_BYTES = 256 * 1024


class TargetConnector:
    """Opens connections to the target, resolving its name only when it has to.

    HostnameEndpoint resolves in a thread on every connection, which made each new
    conversation cost the client three times the server's CPU.  The address that last
    worked is tried directly; if that fails, the name is resolved again.
    """

    def __init__(self, reactor, host, port):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.address = None

    def connect(self, factory):
        if self.address is None:
            return self._resolve_and_connect(factory)
        d = self._direct(self.address).connect(factory)
        d.addErrback(lambda _: self._resolve_and_connect(factory))
        return d

    def _direct(self, address):
        if ipaddress.ip_address(address).version == 6:
            return TCP6ClientEndpoint(self.reactor, address, self.port)
        return TCP4ClientEndpoint(self.reactor, address, self.port)

    def _resolve_and_connect(self, factory):
        self.address = None
        d = HostnameEndpoint(self.reactor, self.host, self.port).connect(factory)
        d.addCallback(self._remember)
        return d

    def _remember(self, protocol):
        address = getattr(protocol.transport.getPeer(), "host", None)
        try:
            ipaddress.ip_address(address)
            self.address = address
        except ValueError:
            pass
        return protocol


class TargetProtocol(Protocol):
    def __init__(self, conversation):
        self.conversation = conversation

    def connectionMade(self):
        self.conversation.connected(self.transport)

    def dataReceived(self, data):
        self.conversation.from_target(data)

    def connectionLost(self, reason=None):
        self.conversation.target_lost()


@implementer(IPushProducer)
class Conversation:
    """One visitor, relayed between the tunnel (`session`) and a target connection."""

    def __init__(self, session, conversation_id, host_rewrite, forwarded=None):
        self.session = session
        self.id = conversation_id
        rewriting = host_rewrite or forwarded is not None
        self.rewriter = HostRewriter(host_rewrite or None, forwarded) if rewriting else None
        self.transport = None
        self._pending = []
        self._pending_size = 0
        self._server_paused = False
        self.reading = ReadPauses()
        self._close_when_connected = False
        self._ended = False

    def connect(self, connector):
        d = connector.connect(Factory.forProtocol(lambda: TargetProtocol(self)))
        d.addErrback(lambda _: self._could_not_connect())

    # From the tunnel.

    def from_tunnel(self, payload):
        data = self.rewriter.feed(payload) if self.rewriter else payload
        if self.transport is not None:
            self.transport.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size > MAX_PENDING_BYTES:
            self._ask_server(pause=True)

    def pause_reading(self, why):
        self.reading.pause(why)

    def resume_reading(self, why):
        self.reading.resume(why)

    def remote_closed(self):
        self._ended = True
        if self.transport is not None:
            self._close()
        else:
            self._close_when_connected = True

    def _close(self):
        # A transport whose registered producer is paused (the target read slowly) resumes
        # the producer when its buffer drains instead of closing, so unregister first.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    # From the target connection.

    def connected(self, transport):
        self.transport = transport
        transport.registerProducer(self, True)
        no_delay(transport)
        self.reading.attach(transport)
        # Lift the pending-data pause first: writing may fill the buffer and pause again.
        self._ask_server(pause=False)
        transport.writeSequence(self._pending)
        self._pending = None
        if self._close_when_connected:
            self._close()

    def from_target(self, data):
        if not self._ended:
            self.session.send_data(self.id, data)

    # Once ended by the server, the session has already dropped this conversation, and its
    # id may belong to a new one: only a conversation that is still live reports its end.

    def target_lost(self):
        if not self._ended:
            self._ended = True
            self.session.conversation_ended(self.id, notify=True)

    def _could_not_connect(self):
        if not self._ended:
            self._ended = True
            self.session.conversation_ended(self.id, notify=False)
            self.session.send_no_connect(self.id)

    # IPushProducer for the target's transport: its write buffer filled or drained.

    def pauseProducing(self):
        self._ask_server(pause=True)

    def resumeProducing(self):
        self._ask_server(pause=False)

    def _ask_server(self, pause):
        # Twisted calls pauseProducing on every write while the buffer is full; say it once.
        if self._ended or self._server_paused == pause:
            return
        self._server_paused = pause
        if pause:
            self.session.send_pause(self.id)
        else:
            self.session.send_resume(self.id)

    def stopProducing(self):
        pass
