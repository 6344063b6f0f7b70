"""The client's WebSocket to the server: one tunnel and its conversations.

`TunnelClientProtocol` hands server messages to its session (tpot.protocol.session, which
keeps the conversation table) and does what that says to the conversations; the factory
reports the outcome (greeting, refusal, loss) to whoever runs the client.
"""

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import task

from tpot.client.conversation import Conversation, LoggedRawConversation, RawConversation
from tpot.client.health import TargetWarnings
from tpot.client.target import TargetConnector
from tpot.http.addresses import format_address
from tpot.http.rewrite import forwarded_for
from tpot.protocol import codec
from tpot.protocol.adapter import SendsConversationMessages
from tpot.protocol.codec import EXTENSIONS_HEADER, HTTP, RECLAIM_TOKEN_HEADER
from tpot.protocol.flow import PEER, UnregisterOnDrop, WebSocketBackpressure
from tpot.protocol.frames import PROTOCOL_OPTIONS, LeanFrames, is_open, refused_headers, refused_status
from tpot.protocol.session import (
    ClientSession,
    Deliver,
    Greeted,
    OpenRequested,
    PauseReading,
    PeerClosed,
    PeerDoneSending,
    ResumeReading,
    TooMany,
    WrongKind,
)

PING_INTERVAL = 15
PING_TIMEOUT = 30
# How often the status area's latency is measured: a ping of our own, since Autobahn's
# keepalive ping is skipped while traffic flows.
LATENCY_INTERVAL = 5
# Autobahn's options for the client's WebSockets: tunnels, and tpot connect's connections.
CLIENT_PROTOCOL_OPTIONS = dict(PROTOCOL_OPTIONS, openHandshakeTimeout=30, perMessageCompressionOffers=[])


class TunnelClientProtocol(SendsConversationMessages, UnregisterOnDrop, LeanFrames, WebSocketClientProtocol):
    # txaio's logger, so that the level set in cli.main also silences Autobahn's per-frame debug.
    log = txaio.make_logger()

    def __init__(self, kind=HTTP, max_conversations=None):
        super().__init__()
        # The TPoT/1 rules (tpot.protocol.session); its table holds this tunnel's conversations.
        self.session = ClientSession(kind, max_conversations)
        self.conversations = self.session.conversations
        self._conversation_for_data = self.conversations.get  # data's fast path: one lookup
        self.backpressure = WebSocketBackpressure(self.conversations)
        self.refused_status = None
        self.unsupported = frozenset()
        self.on_lost = None
        self._measuring = None

    def onConnect(self, response):
        token = response.headers.get(RECLAIM_TOKEN_HEADER.lower())
        if token:
            self.factory.on_token(token)
        granted = {part.strip().lower() for part in response.headers.get(EXTENSIONS_HEADER.lower(), "").split(",")}
        # What the tunnel needs and the server did not grant (a reference server knows none).
        self.unsupported = self.factory.settings.required_extensions - granted

    def onOpen(self):
        if self.unsupported:
            # A server that does not know TCP tunnels would send us HTTP visitors.
            self.sendClose(code=codec.CLOSE_NORMAL, reason=f"{', '.join(sorted(self.unsupported))} not supported")
            return
        self._lean_setup(self.factory.reactor)
        self.backpressure.register(self.transport)
        if self.factory.round_trips is not None:
            self._measuring = task.LoopingCall(self._ping)
            self._measuring.clock = self.factory.reactor
            self._measuring.start(LATENCY_INTERVAL)

    def _ping(self):
        payload = self.factory.round_trips.ping(self.factory.reactor.seconds())
        if payload is not None:
            self.sendPing(payload)

    def onPong(self, payload):
        if self.factory.round_trips is not None:
            self.factory.round_trips.pong(payload, self.factory.reactor.seconds())

    def tunnel_open(self):
        return is_open(self)

    def failHandshake(self, reason):
        self.refused_status = refused_status(self)
        self.factory.refused_headers = refused_headers(self)
        super().failHandshake(reason)

    def connectionLost(self, reason):
        # Why a connection ended before the tunnel opened (a TLS failure, say) is told to the user.
        self.factory.lost_reason = reason.value if reason is not None else None
        if self._measuring is not None:
            self._measuring.stop()
            self._measuring = None
            self.factory.round_trips.forget()
        super().connectionLost(reason)

    def onMessage(self, payload, isBinary):
        try:
            message = self.session.decode(payload, isBinary)
            # A tunnel the server does not support is closing: its messages go unheard.
            events = () if self.unsupported else self.session.receive(message)
        except codec.ProtocolError as error:
            self.log.warn("server sent a malformed message: {reason}", reason=str(error))
            self.sendClose(code=codec.CLOSE_PROTOCOL_ERROR, reason=str(error)[:120])
            return
        for event in events:
            _PERFORM[type(event)](self, event)

    def _open(self, event):
        conversation = self._conversation_for(event)
        self.session.accept(event.id, conversation)
        self.backpressure.admit(conversation)
        self.log.debug("conversation {id} from {host}:{port}", id=event.id, host=event.host, port=event.port)
        conversation.connect(self.factory.target)

    def _refuse(self, event):
        self.log.warn("refused a {kind} conversation on a {tunnel} tunnel",
                      kind="raw" if event.raw else "HTTP", tunnel=self.session.kind)
        self.send_no_connect(event.id)

    def _refuse_too_many(self, event):
        self.log.warn("refused conversation {id}: {n} are open already (--max-conversations)",
                      id=event.id, n=self.session.max_conversations)
        self.send_no_connect(event.id)

    def _conversation_for(self, event):
        settings, visitors = self.factory.settings, self.factory.visitors
        if not event.raw:
            forwarded = forwarded_for(event.host, settings.server.scheme) if settings.forwarded_headers else None
            return Conversation(self, event.id, settings.host_rewrite, forwarded, visitors, event.host)
        if visitors is not None and visitors.log is not None:
            address = format_address((event.host, event.port))
            return LoggedRawConversation(self, event.id, address, visitors)
        return RawConversation(self, event.id)

    def onClose(self, wasClean, code, reason):
        for conversation in self.session.lost():
            conversation.remote_closed()
        if self.unsupported:
            self.factory.on_unsupported(self.unsupported)
            return
        self.factory.closed(self.refused_status, code, reason)
        if self.on_lost is not None:
            self.on_lost()

    # What conversations ask of the tunnel.

    def send_data(self, conversation_id, data):
        self._send_data(conversation_id, data)

    def send_no_connect(self, conversation_id):
        self._send_message(codec.encode(self.session.no_connect(conversation_id)))

    def _deliver_data(self, conversation_id, data):
        # LeanFrames' shortcut past onMessage for data messages: what the session's
        # Deliver event would say, without making one (session._data).
        conversation = self._conversation_for_data(conversation_id)
        if conversation is not None:
            conversation.from_tunnel(data)


# What each of the session's events does (conversations: tpot.client.target).
_PERFORM = {
    Greeted: lambda tunnel, event: tunnel.factory.greeted(event.name),
    OpenRequested: TunnelClientProtocol._open,
    WrongKind: TunnelClientProtocol._refuse,
    TooMany: TunnelClientProtocol._refuse_too_many,
    Deliver: lambda tunnel, event: event.conversation.from_tunnel(event.payload),
    PauseReading: lambda tunnel, event: event.conversation.pause_reading(PEER),
    ResumeReading: lambda tunnel, event: event.conversation.resume_reading(PEER),
    PeerDoneSending: lambda tunnel, event: event.conversation.peer_done_sending(),
    PeerClosed: lambda tunnel, event: event.conversation.remote_closed(),
}


class TunnelClientFactory(WebSocketClientFactory):
    """One connection attempt.

    Reports `on_greeting(name)` once the tunnel is up, `on_token(token)` when the server
    grants a reclaim token, and `on_closed(status, code, reason)` at the end, or
    `on_unsupported(missing)` instead when an extension the tunnel needs (tcp, pool) was
    not granted.  `target_warnings`: the TargetWarnings told of connections to the target.
    `round_trips` (a stats.RoundTrips), when given, is fed pings to the server and their
    pongs while the tunnel is open.
    """

    protocol = TunnelClientProtocol

    def __init__(self, settings, reactor, headers, on_greeting, on_closed, subdomain=None, on_token=None,
                 visitors=None, on_unsupported=None, target_warnings=None, round_trips=None):
        url = settings.websocket_url_for(subdomain if subdomain is not None else settings.subdomain)
        super().__init__(url, headers=headers, reactor=reactor)
        self.settings = settings
        self.on_greeting = on_greeting
        self.on_closed = on_closed
        self.on_token = on_token or (lambda token: None)
        self.on_unsupported = on_unsupported or (lambda missing: None)
        self.visitors = visitors  # target.VisitorOptions: request log and visitor policy, or None
        self.round_trips = round_trips
        self.subdomain = subdomain if subdomain is not None else settings.subdomain
        self.greeted_here = False
        self.refused_headers = {}
        self.lost_reason = None
        self.current = None
        # The run's warnings outlive this attempt: a target down before a reconnection is still down.
        warnings = target_warnings or TargetWarnings.for_settings(settings)
        self.target = TargetConnector.for_settings(reactor, settings, warnings)
        self.setProtocolOptions(autoPingInterval=PING_INTERVAL, autoPingTimeout=PING_TIMEOUT, **CLIENT_PROTOCOL_OPTIONS)

    def buildProtocol(self, addr):
        # The tunnel's kind is known here (its settings), before the protocol's first message.
        self.current = self.protocol(self.settings.kind, self.settings.max_conversations)
        self.current.factory = self
        return self.current

    def greeted(self, name):
        self.greeted_here = True
        self.on_greeting(name)

    def closed(self, status, code, reason):
        self.on_closed(status, code, reason)
