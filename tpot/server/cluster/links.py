"""The two ends of a link (tpot.server.cluster.link) as Twisted protocols.

On node B, which visitors reach, `LinkClient` is to a visitor what a tunnel is: B's own
`VisitorProtocol` serves each visitor connection, with a `LinkedTunnel` for the tunnel on
node A in place of a local one, so refusals, idle timeouts and flow control are the
visitor relay's own.  On node A, `LinkServer` gives each conversation a `Stream`, the
transport of an A-side `VisitorProtocol` of the tunnel there, as if the visitor had
connected to A with the address B vouches for.  Flow control crosses the link as on a
tunnel: `P` and `C` per conversation, and while a link's own send buffer is full its
conversations are paused (WebSocketBackpressure).
"""

from twisted.internet import error, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tpot.http.responses import error_response
from tpot.protocol import codec
from tpot.protocol.adapter import SendsConversationMessages
from tpot.protocol.codec import HTTP, ProtocolError
from tpot.protocol.flow import (
    MAX_TUNNEL_UNACKED_BYTES,
    MAX_UNACKED_BYTES,
    ReadPauses,
    UnackedBudget,
    WebSocketBackpressure,
    no_delay,
)
from tpot.protocol.session import ClientSession, OpenRefused, OpenRequested, ServerSession
from tpot.server.cluster import link
from tpot.server.timers import SilenceTimer
from tpot.server.tunnel import PERFORM, REFUSALS
from tpot.server.visitor import TUNNEL_GONE, ConversationRefused, VisitorProtocol

NOT_HERE = "The tunnel is not connected to this server any more."


class LinkProtocol(SendsConversationMessages, Protocol):
    """What both ends do: frames in, a session's events performed, messages out."""

    log = Logger()
    dropped = False

    def __init__(self, session, clock):
        self.session = session
        self.conversations = session.conversations
        self.clock = clock
        self.reader = link.FrameReader()
        self.backpressure = WebSocketBackpressure(self.conversations)
        self.silence = SilenceTimer(clock, link.LINK_SILENCE, self._silent)

    def connectionMade(self):
        no_delay(self.transport)
        self.silence.start()

    def dataReceived(self, data):
        self.silence.touch()
        try:
            for message in self.reader.feed(data):
                if self.dropped:  # by an earlier message: hear no more
                    return
                self._receive(message)
        except (link.BadFrame, ProtocolError) as error:
            self.log.warn("closing the link with {peer}: {error}", peer=self.peer, error=error)
            self.drop()

    def _receive(self, message):
        conversation_id = codec.data_id(message) if len(message) >= codec.DATA_HEAD_SIZE else None
        if conversation_id is not None:
            # Data's fast path, as on a tunnel (session._data without the event).
            conversation = self.conversations.get(conversation_id)
            if conversation is not None:
                self._relay_data(conversation, message[codec.DATA_HEAD_SIZE:])
        elif message[0] == codec.CONVERSATION:
            for event in self.session.receive(self.session.decode(message, True)):
                PERFORM[type(event)](self, event)
        else:
            self._link_message(message)

    def drop(self):
        self.dropped = True
        self.transport.abortConnection()

    def _link_message(self, message):
        raise link.BadFrame(f"an unexpected frame of type 0x{message[0]:02x}")

    def _send_message(self, message):
        self.transport.write(link.frame(message))

    def send_data(self, conversation_id, data):
        self.transport.write(link.data_frame(conversation_id, data))

    def connectionLost(self, reason=None):
        self.silence.stop()
        for conversation in self.session.lost():
            conversation.tunnel_lost()

    def _silent(self, silent_for):
        self.log.warn("dropping the link with {peer}, silent for {s:.0f} s", peer=self.peer, s=silent_for)
        self.drop()


class LinkClient(LinkProtocol):
    """B's end of a link to node `node`: the tunnel of the visitors it carries there."""

    def __init__(self, dialer, key, clock):
        super().__init__(ServerSession(HTTP), clock)
        self.dialer = dialer
        self.key = key  # (node, host, port): what the dialer keeps it under
        self.peer = key[0]
        # What A sent for paused visitors, within what all of this node's links may hold.
        self.unacked = UnackedBudget(MAX_TUNNEL_UNACKED_BYTES, "link", dialer.unacked)
        self.reading = ReadPauses()
        self._pinging = task.LoopingCall(self._ping)
        self._pinging.clock = clock
        self.gone = False

    def connectionMade(self):
        super().connectionMade()
        self.dialer.stats.links_out += 1
        # As a tunnel's server end: not read while backed up (A, like a client, always reads).
        self.reading.attach(self.transport)
        self.backpressure.register(self.transport, reading=self.reading)
        self._pinging.start(link.LINK_PING, now=False)

    def has_room(self):
        return len(self.session.ids) < self.session.ids.maximum

    def open(self, visitor, name, host, port):
        """A conversation for `visitor` (at host:port) to tunnel `name` on A: its id."""
        if self.gone:
            raise ConversationRefused(TUNNEL_GONE)
        try:
            opening = self.session.open(visitor, host, port)
        except OpenRefused as refusal:
            raise ConversationRefused(REFUSALS[refusal.reason]) from None
        self.transport.write(link.open_frame(name, opening))
        self.backpressure.admit(visitor)
        return opening.id

    def held_too_much(self, budget):
        """A sent more for paused visitors than `budget` holds: it ignores pause."""
        self.log.warn("node {peer} sent {held} bytes for paused visitors, over the {what}'s {limit}; closing the link",
                      peer=self.peer, held=budget.held, what=budget.name, limit=budget.limit)
        for visitor in list(self.conversations.values()):
            if visitor.send_buffer_full():
                visitor.cut_off()
        self.drop()

    def _relay_data(self, visitor, payload):
        visitor.deliver(payload)

    def _link_message(self, message):
        if message[0] != link.PONG:
            super()._link_message(message)

    def _ping(self):
        self.transport.write(link.PING_FRAME)

    def connectionLost(self, reason=None):
        self.gone = True
        if self._pinging.running:
            self._pinging.stop()
        self.dialer.link_lost(self)
        super().connectionLost(reason)


class LinkedTunnel:
    """The tunnel of `route` on another node, to one B-side VisitorProtocol, over `link`."""

    def __init__(self, link_client, route, dialer):
        self.link = link_client
        self.route = route
        self.dialer = dialer
        self.unacked = link_client.unacked
        self.send_data = link_client.send_data
        self.send_pause = link_client.send_pause
        self.send_resume = link_client.send_resume
        self.held_too_much = link_client.held_too_much

    def open_conversation(self, visitor, host, port):
        conversation_id = self.link.open(visitor, self.route.name, host, port)
        self.dialer.count(self.route.lease, 1)
        self.dialer.stats.forwarded_out += 1
        return conversation_id

    def conversation_ended(self, conversation_id, notify):
        self.dialer.count(self.route.lease, -1)
        self.link.conversation_ended(conversation_id, notify)


class LinkServer(LinkProtocol):
    """A's end of a link from node `peer`; `router` is this node's RouterFactory."""

    def __init__(self, router, peer, clock):
        super().__init__(ClientSession(HTTP), clock)
        self.router = router
        self.peer = peer

    def connectionMade(self):
        super().connectionMade()
        self.router.stats.links_in += 1
        self.backpressure.register(self.transport)

    def _link_message(self, message):
        kind = message[0]
        if kind == link.PING:
            self.transport.write(link.PONG_FRAME)
        elif kind == link.OPEN:
            name, opening = link.read_open(message)
            for event in self.session.receive(opening):
                if type(event) is OpenRequested:
                    self._open(name, event)
                else:  # an id B reused: its old conversation is over
                    PERFORM[type(event)](self, event)
        else:
            super()._link_message(message)

    def _open(self, name, event):
        stream = Stream(self, event.id, (event.host, event.port))
        self.session.accept(event.id, stream)
        route = self.router.balancer.pick(self.router.table.routes(name))
        tunnel = None if route is None else self.router.table.get(route.lease)
        if tunnel is None or self.router.draining:
            self.router.stats.count_refusal(503)
            stream.write(error_response(503, NOT_HERE if tunnel is None else "The server is restarting."))
            stream.loseConnection()
            return
        self.router.stats.forwarded_in += 1
        visitor = VisitorProtocol(tunnel, self.clock, self.router.idle_timeout, self.router.stats, stream.address)
        self.backpressure.admit(stream)
        stream.protocol = visitor
        visitor.makeConnection(stream)

    def _relay_data(self, stream, payload):
        stream.deliver(payload)


@implementer(ITransport, IConsumer, IPushProducer)
class Stream:
    """One conversation of a link on A: the transport of the VisitorProtocol serving it.

    Its producer (that visitor relay) is paused while B's visitor reads slowly (B's `P`)
    or the link is backed up: the relay then asks the tunnel's client to pause.  As a
    producer itself it pauses B's reading of the visitor (`P` to B).
    """

    disconnecting = False

    def __init__(self, link_server, conversation_id, address):
        self.link = link_server
        self.id = conversation_id
        self.address = address
        self.protocol = None
        self.producer = None
        self.held = set()  # why the producer is paused (tpot.protocol.flow reasons)
        self._since_pause = None  # bytes B sent after we asked it to pause

    # The transport, to the visitor relay.

    def write(self, data):
        if not self.disconnecting and data:
            self.link.send_data(self.id, data)

    def writeSequence(self, data):
        self.write(b"".join(data))

    def loseConnection(self):
        if not self.disconnecting:
            self.disconnecting = True
            self.link.conversation_ended(self.id, notify=True)
            self._lost(error.ConnectionDone())

    abortConnection = loseConnection

    def getPeer(self):
        host, port = self.address
        return (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)

    def getHost(self):
        return self.link.transport.getHost()

    def registerProducer(self, producer, streaming):
        self.producer = producer
        if self.held:
            producer.pauseProducing()

    def unregisterProducer(self):
        self.producer = None

    def pauseProducing(self):
        if self._since_pause is None and not self.disconnecting:
            self._since_pause = 0
            self.link.send_pause(self.id)

    def resumeProducing(self):
        if self._since_pause is not None and not self.disconnecting:
            self._since_pause = None
            self.link.send_resume(self.id)

    def stopProducing(self):
        self.loseConnection()

    # What the link tells it.

    def deliver(self, payload):
        if self._since_pause is not None:
            self._since_pause += len(payload)
            if self._since_pause > MAX_UNACKED_BYTES:
                self.link.log.warn("node {peer} ignored pause; closing conversation {id}", peer=self.link.peer, id=self.id)
                self.loseConnection()
                return
        if self.protocol is not None:
            self.protocol.dataReceived(payload)

    def pause_reading(self, why):
        if not self.held and self.producer is not None:
            self.producer.pauseProducing()
        self.held.add(why)

    def resume_reading(self, why):
        if why in self.held:
            self.held.discard(why)
            if not self.held and self.producer is not None:
                self.producer.resumeProducing()

    def remote_closed(self):
        self.disconnecting = True
        self._lost(error.ConnectionDone())

    def tunnel_lost(self):
        self.disconnecting = True
        self._lost(error.ConnectionLost())

    def _lost(self, reason):
        protocol, self.protocol = self.protocol, None
        self.producer = None
        if protocol is not None:
            protocol.connectionLost(Failure(reason))
