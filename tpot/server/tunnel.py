"""The server's end of a tunnel: the Autobahn protocol of one open tunnel's WebSocket.

`TunnelProtocol` owns that tunnel's conversations (one per visitor, tpot.server.visitor,
or per connection to a TCP tunnel, tpot.server.connect); `TunnelFactory` builds it for a
connection the router has already read and checked.
"""

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from zope.interface import implementer

from tpot.http.addresses import format_address
from tpot.protocol import codec
from tpot.protocol.adapter import SendsConversationMessages
from tpot.protocol.budget import EXHAUSTED, THROTTLE, WITHIN, IdleBudget
from tpot.protocol.codec import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SERVER_RESTARTING,
    CLOSE_TOO_MANY_MESSAGES,
    CLOSE_TOO_MUCH_UNACKED,
    EXTENSIONS_HEADER,
    HTTP,
    IPV6,
    RECLAIM,
    RECLAIM_TOKEN_HEADER,
    TCP,
)
from tpot.protocol.flow import (
    MAX_SERVER_UNACKED_BYTES,
    MAX_TUNNEL_UNACKED_BYTES,
    PEER,
    UnackedBudget,
    UnregisterOnDrop,
    WebSocketBackpressure,
)
from tpot.protocol.frames import (
    PROTOCOL_OPTIONS,
    LeanFrames,
    OversizeFails,
    fail_connection,
    is_open,
    peer,
    remote_close_code,
)
from tpot.protocol.session import (
    KIND_MISMATCH,
    NO_FREE_ID,
    Deliver,
    OpenRefused,
    PauseReading,
    PeerClosed,
    PeerCouldNotConnect,
    PeerDoneSending,
    ResumeReading,
    ServerSession,
)
from tpot.server.metrics import Stats
from tpot.server.store import LeaseLost, RegistryUnavailable, RouteInfo
from tpot.server.table import ILiveTunnel
from tpot.server.timers import SilenceTimer
from tpot.server.visitor import TOO_MANY, TUNNEL_GONE, WRONG_KIND, ConversationRefused

LIVENESS_TIMEOUT = 30.0
# Autobahn's options for the server's WebSockets: tunnels, and connections to TCP tunnels.
SERVER_PROTOCOL_OPTIONS = dict(
    PROTOCOL_OPTIONS,
    openHandshakeTimeout=10,
    # Send the close frame (4180 and its reason) before closing, rather than just dropping.
    failByDrop=False,
)


@implementer(ILiveTunnel)
class TunnelProtocol(SendsConversationMessages, UnregisterOnDrop, OversizeFails, LeanFrames,
                     WebSocketServerProtocol):
    """One open tunnel: the WebSocket of a client and the conversations relayed over it."""

    # Autobahn logs every frame through self.log at debug level; a txaio logger honours
    # txaio.set_global_log_level (tpot.server.tap sets "info"), a plain twisted Logger does not.
    log = txaio.make_logger()

    def __init__(self, claim, store, table, clock, extensions=frozenset(), stats=None, access_secret=None,
                 address=None, unacked=None):
        super().__init__()
        self.claim = claim  # the name, and the lease that attaches and releases it
        self.name = claim.name
        self.address = address  # the client's (host, port), as the router saw it, for logs
        # A TCP tunnel takes raw conversations only, from those who prove access_secret.
        self.kind = TCP if TCP in extensions else HTTP
        self.access_secret = access_secret
        self.store = store
        self.table = table
        self.clock = clock
        self.extensions = extensions
        self.stats = Stats() if stats is None else stats
        self.bytes_upstream = 0
        self.bytes_downstream = 0
        self.opened_at = None
        # The TPoT/1 rules (tpot.protocol.session); its table holds this tunnel's visitors.
        self.session = ServerSession(self.kind)
        self.conversations = self.session.conversations
        self._visitor_for_data = self.conversations.get  # data's fast path: one lookup
        # Not read while backed up either: a client that sends without reading gets nothing queued.
        self.backpressure = WebSocketBackpressure(self.conversations)
        # What this tunnel's client sent for paused conversations, within the server's (`unacked`).
        self.unacked = UnackedBudget(MAX_TUNNEL_UNACKED_BYTES, "tunnel", unacked)
        self.liveness = SilenceTimer(clock, LIVENESS_TIMEOUT, self._silent)
        self.idle_budget = IdleBudget()  # for messages that relay nothing (tpot.protocol.budget)

    # Autobahn callbacks.

    def onConnect(self, request):
        if not self.extensions:
            return None
        headers = {EXTENSIONS_HEADER: ", ".join(sorted(self.extensions))}
        if RECLAIM in self.extensions:
            headers[RECLAIM_TOKEN_HEADER] = self.claim.token
        return None, headers

    def onOpen(self):
        self._lean_setup(self.clock)
        self.table.add(self.claim.lease, self)
        attached = self.store.attach(self.claim.lease, self.route_info())
        attached.addErrback(self._lease_lost)
        # Not read while backed up (the server's end only): one reason of the socket's
        # ReadPauses, beside LeanFrames' turns, so that neither resumes the other's.
        self.backpressure.register(self.transport, reading=self.tunnel_reading)
        self.opened_at = self.clock.seconds()
        self.liveness.start()
        self._send_message(codec.encode(codec.Greeting(self.name)))
        self.log.info("tunnel {name} opened from {peer}", name=self.name, peer=self._client())

    def onMessage(self, payload, isBinary):
        self.liveness.touch()
        try:
            events = self.session.receive(self.session.decode(payload, isBinary))
        except codec.ProtocolError as error:
            self._protocol_error(str(error))
            return
        if not events or type(events[0]) in _IDLE:
            self._idle_message()
        for event in events:
            PERFORM[type(event)](self, event)

    def onPing(self, payload):
        self.liveness.touch()
        self._idle_message()
        super().onPing(payload)

    def onPong(self, payload):
        self._idle_message()

    def onClose(self, wasClean, code, reason):
        # A client that closed normally has left; any other end may be a drop it comes back from.
        left = remote_close_code(self) == CLOSE_NORMAL
        self.table.remove(self.claim.lease)
        released = self.store.release(self.claim.lease, reserve=RECLAIM in self.extensions and not left)
        # With the registry away, the name is handled when it is back (its sync).
        released.addErrback(lambda failure: failure.trap(RegistryUnavailable))
        self.liveness.stop()
        for visitor in self.session.lost():
            visitor.tunnel_lost()
        if self.opened_at is not None:
            self.log.info(
                "tunnel {name} closed ({code}) from {peer} after {duration:.1f} s,"
                " {up} bytes up, {down} bytes down",
                name=self.name, code=code, peer=self._client(), duration=self.clock.seconds() - self.opened_at,
                up=self.bytes_upstream, down=self.bytes_downstream,
            )

    # What visitors ask of their tunnel.

    def open_conversation(self, visitor, host, port, raw=False):
        """A new conversation's id: raw (`R`) on a TCP tunnel, HTTP (`H`) on an HTTP one."""
        if not is_open(self):
            raise ConversationRefused(TUNNEL_GONE)
        try:
            opening = self.session.open(visitor, host, port, raw)
        except OpenRefused as refusal:
            raise ConversationRefused(REFUSALS[refusal.reason]) from None
        self.stats.conversations_total += 1
        self._send_message(codec.encode(opening, ipv6=IPV6 in self.extensions))
        self.backpressure.admit(visitor)
        return opening.id

    def send_data(self, conversation_id, data):
        self.bytes_upstream += len(data)
        self.stats.bytes_upstream += len(data)
        self._send_data(conversation_id, data)


    def held_too_much(self, budget):
        """The client sent more for paused conversations than `budget` (this tunnel's or
        the server's) holds: it ignores pause.  The conversations holding those bytes are
        dropped, the others end as the tunnel closes (503 pages, or closes)."""
        if not is_open(self):
            return
        self.log.warn(
            "tunnel {name}'s client sent {held} bytes for paused conversations, over the {what}'s"
            " {limit}; closing it", name=self.name, held=budget.held, what=budget.name, limit=budget.limit,
        )
        for conversation in list(self.conversations.values()):
            if conversation.send_buffer_full():
                conversation.cut_off()
        # As for malformed messages: nothing more from this client reaches a visitor.
        fail_connection(self, CLOSE_TOO_MUCH_UNACKED,
                        f"over the {budget.name}'s {budget.limit >> 20} MiB for paused conversations")

    def shutdown(self):
        self.sendClose(code=CLOSE_SERVER_RESTARTING, reason="server restarting; reconnect")

    def route_info(self):
        return RouteInfo(self.kind, self.access_secret)

    def name_lost(self):
        self.log.warn("tunnel {name} lost its name while the registry was away; closing it", name=self.name)
        self.dropConnection(abort=True)

    # Internals.

    def _deliver_data(self, conversation_id, data):
        # LeanFrames' shortcut past onMessage for data messages.
        # What the session's Deliver event would say, without making one (session._data).
        self.liveness.touch()
        visitor = self._visitor_for_data(conversation_id)
        if visitor is not None:
            self._relay_data(visitor, data)
        else:
            self._idle_message()

    def _relay_data(self, visitor, data):
        self.bytes_downstream += len(data)
        self.stats.bytes_downstream += len(data)
        visitor.deliver(data)

    def _idle_message(self):
        # A message that relayed nothing to a live conversation: held past its budget.
        spent = self.idle_budget.spend(self.clock.seconds())
        if spent is WITHIN:
            return
        if spent is EXHAUSTED and is_open(self):
            self.log.warn("tunnel {name} sent too many idle messages; closing it", name=self.name)
            fail_connection(self, CLOSE_TOO_MANY_MESSAGES, "too many messages that relay nothing")
            return
        self.hold_reading(THROTTLE)

    def _client(self):
        return peer(self) if self.address is None else format_address(self.address)

    def _protocol_error(self, reason):
        self.log.warn("tunnel {name} sent a malformed message: {reason}", name=self.name, reason=reason)
        # Fail the connection (RFC 6455, 7.1.7) rather than just closing it: Autobahn then
        # sends the 4180 close frame and stops delivering the client's later messages, so
        # nothing more from a misbehaving client reaches its visitors.
        fail_connection(self, CLOSE_PROTOCOL_ERROR, reason[:120])

    def _lease_lost(self, failure):
        # The store gave the name to someone else first (a shared store's lease expired).
        if failure.check(RegistryUnavailable):
            # Written back once the registry is back (tpot.server.cluster.heartbeat).
            return
        failure.trap(LeaseLost)
        self.log.warn("tunnel {name} lost its name before it opened; closing it", name=self.name)
        self.dropConnection(abort=True)

    def _silent(self, silent_for):
        self.log.info("tunnel {name} silent for {s:.0f} s; dropping it", name=self.name, s=silent_for)
        self.dropConnection(abort=True)


# What each of the session's events does to its visitor (tpot.server.visitor, tpot.server.connect;
# also the conversations of a link between nodes, tpot.server.cluster.links).
PERFORM = {
    Deliver: lambda tunnel, event: tunnel._relay_data(event.conversation, event.payload),
    PauseReading: lambda tunnel, event: event.conversation.pause_reading(PEER),
    ResumeReading: lambda tunnel, event: event.conversation.resume_reading(PEER),
    PeerDoneSending: lambda tunnel, event: event.conversation.peer_done_sending(),
    PeerClosed: lambda tunnel, event: event.conversation.remote_closed(),
    PeerCouldNotConnect: lambda tunnel, event: event.conversation.no_connect(),
}
# The events of messages that count as idle although they reach a conversation (the rest
# are those for ids that are not open, or repeated: they make no event at all).
_IDLE = (PauseReading, ResumeReading)
# What a visitor is told when the session cannot open its conversation.
REFUSALS = {KIND_MISMATCH: WRONG_KIND, NO_FREE_ID: TOO_MANY}


class TunnelFactory(WebSocketServerFactory):
    """Builds tunnel protocols for connections the router has already accepted."""

    def __init__(self, store, table, clock, stats=None, url="ws://localhost/create-tpot"):
        super().__init__(url)
        # What all tunnels' clients sent for paused conversations (each tunnel's budget's parent).
        self.unacked = UnackedBudget(MAX_SERVER_UNACKED_BYTES, "server")
        self.store = store
        self.table = table
        self.clock = clock
        self.stats = Stats() if stats is None else stats
        self.setProtocolOptions(**SERVER_PROTOCOL_OPTIONS)

    def build_tunnel(self, claim, extensions=frozenset(), access_secret=None, address=None):
        protocol = TunnelProtocol(
            claim, self.store, self.table, self.clock, extensions, self.stats, access_secret, address, self.unacked
        )
        protocol.factory = self
        return protocol
