"""The client's WebSocket to the server: one tunnel and its conversations.

`TunnelClientProtocol` decodes server messages and keeps the conversation table; the
factory reports the outcome (greeting, refusal, loss) to whoever runs the client.
"""

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

from tpot.protocol import codec
from tpot.protocol.codec import EXTENSIONS_HEADER, RECLAIM_TOKEN_HEADER, TCP
from tpot.client.target import Conversation, LoggedRawConversation, RawConversation, TargetConnector
from tpot.protocol.flow import PEER, UnregisterOnDrop, WebSocketBackpressure
from tpot.http.addresses import format_address
from tpot.protocol.frames import PROTOCOL_OPTIONS, LeanFrames, is_open, refused_status
from tpot.http.rewrite import Forwarded

PING_INTERVAL = 15
PING_TIMEOUT = 30
# Autobahn's options for the client's WebSockets: tunnels, and tpot connect's connections.
CLIENT_PROTOCOL_OPTIONS = dict(PROTOCOL_OPTIONS, openHandshakeTimeout=30, perMessageCompressionOffers=[])


class TunnelClientProtocol(UnregisterOnDrop, LeanFrames, WebSocketClientProtocol):
    # txaio's logger, so that the level set in cli.main also silences Autobahn's per-frame debug.
    log = txaio.make_logger()

    def __init__(self):
        super().__init__()
        self.conversations = {}
        self.backpressure = WebSocketBackpressure(self.conversations)
        self.refused_status = None
        self.unsupported = False
        self.on_lost = None

    def onConnect(self, response):
        token = response.headers.get(RECLAIM_TOKEN_HEADER.lower())
        if token:
            self.factory.on_token(token)
        granted = {part.strip().lower() for part in response.headers.get(EXTENSIONS_HEADER.lower(), "").split(",")}
        self.unsupported = self.factory.settings.kind == TCP and TCP not in granted

    def onOpen(self):
        if self.unsupported:
            # A server that does not know TCP tunnels would send us HTTP visitors.
            self.sendClose(code=1000, reason="tcp tunnels not supported")
            return
        self._lean_setup()
        self.backpressure.register(self.transport)

    def tunnel_open(self):
        return is_open(self)

    def failHandshake(self, reason):
        self.refused_status = refused_status(self)
        super().failHandshake(reason)

    def onMessage(self, payload, isBinary):
        try:
            if not isBinary:
                raise codec.ProtocolError("text message")
            message = codec.decode(payload, codec.FROM_SERVER)
        except codec.ProtocolError as error:
            self.log.warn("server sent a malformed message: {reason}", reason=str(error))
            self.sendClose(code=codec.CLOSE_PROTOCOL_ERROR, reason=str(error)[:120])
            return
        kind = type(message)
        if self.unsupported:
            return
        if kind is codec.Greeting:
            self.factory.greeted(message.name)
        elif kind is codec.OpenHTTP or kind is codec.OpenRaw:
            self._open(message)
        else:
            conversation = self.conversations.get(message.id)
            if conversation is not None:
                self._dispatch(conversation, message)

    def _dispatch(self, conversation, message):
        kind = type(message)
        if kind is codec.Data:
            conversation.from_tunnel(message.payload)
        elif kind is codec.Pause:
            conversation.pause_reading(PEER)
        elif kind is codec.Resume:
            conversation.resume_reading(PEER)
        elif kind is codec.Close:
            self.conversations.pop(message.id, None)
            conversation.remote_closed()
        elif kind is codec.HalfClose:
            conversation.peer_done_sending()

    def _open(self, message):
        stale = self.conversations.pop(message.id, None)
        if stale is not None:
            stale.remote_closed()
        settings = self.factory.settings
        raw = type(message) is codec.OpenRaw
        if raw != (settings.kind == TCP):
            # A TCP service must never see HTTP visitors, nor an HTTP target raw streams.
            self.log.warn("refused a {kind} conversation on a {tunnel} tunnel",
                          kind="raw" if raw else "HTTP", tunnel=settings.kind)
            self.send_no_connect(message.id)
            return
        conversation = self._conversation_for(message, raw)
        self.conversations[message.id] = conversation
        self.backpressure.admit(conversation)
        self.log.debug("conversation {id} from {host}:{port}", id=message.id, host=message.host, port=message.port)
        conversation.connect(self.factory.target)

    def _conversation_for(self, message, raw):
        settings, visitors = self.factory.settings, self.factory.visitors
        if not raw:
            forwarded = Forwarded(message.host, settings.server.scheme) if settings.forwarded_headers else None
            return Conversation(self, message.id, settings.host_rewrite, forwarded, visitors, message.host)
        if visitors is not None and visitors.log is not None:
            address = format_address((message.host, message.port))
            return LoggedRawConversation(self, message.id, address, visitors)
        return RawConversation(self, message.id)

    def onClose(self, wasClean, code, reason):
        for conversation in list(self.conversations.values()):
            conversation.remote_closed()
        self.conversations.clear()
        if self.unsupported:
            self.factory.on_unsupported()
            return
        self.factory.closed(self.refused_status, code, reason)
        if self.on_lost is not None:
            self.on_lost()

    # What conversations ask of the tunnel.

    def send_data(self, conversation_id, data):
        self._send_data(conversation_id, data)

    def send_pause(self, conversation_id):
        self._send_message(codec.encode(codec.Pause(conversation_id)))

    def send_resume(self, conversation_id):
        self._send_message(codec.encode(codec.Resume(conversation_id)))

    def send_half_close(self, conversation_id):
        self._send_message(codec.encode(codec.HalfClose(conversation_id)))

    def send_no_connect(self, conversation_id):
        self._send_message(codec.encode(codec.NoConnect(conversation_id)))

    def conversation_ended(self, conversation_id, notify):
        if self.conversations.pop(conversation_id, None) is not None and notify:
            self._send_message(codec.encode(codec.Close(conversation_id)))

    def _deliver_data(self, conversation_id, data):
        # LeanFrames' shortcut past onMessage for data messages.
        conversation = self.conversations.get(conversation_id)
        if conversation is not None:
            conversation.from_tunnel(data)


class TunnelClientFactory(WebSocketClientFactory):
    """One connection attempt.

    Reports `on_greeting(name)` once the tunnel is up, `on_token(token)` when the server
    grants a reclaim token, and `on_closed(status, code, reason)` at the end, or
    `on_unsupported()` instead when a TCP tunnel was asked for and not granted.
    """

    protocol = TunnelClientProtocol

    def __init__(self, settings, reactor, headers, on_greeting, on_closed, subdomain=None, on_token=None,
                 visitors=None, on_unsupported=None):
        url = settings.websocket_url_for(subdomain if subdomain is not None else settings.subdomain)
        super().__init__(url, headers=headers, reactor=reactor)
        self.settings = settings
        self.on_greeting = on_greeting
        self.on_closed = on_closed
        self.on_token = on_token or (lambda token: None)
        self.on_unsupported = on_unsupported or (lambda: None)
        self.visitors = visitors  # target.VisitorOptions: request log and visitor policy, or None
        self.greeted_here = False
        self.current = None
        self.target = TargetConnector.for_settings(reactor, settings)
        self.setProtocolOptions(autoPingInterval=PING_INTERVAL, autoPingTimeout=PING_TIMEOUT, **CLIENT_PROTOCOL_OPTIONS)

    def buildProtocol(self, addr):
        self.current = super().buildProtocol(addr)
        return self.current

    def greeted(self, name):
        self.greeted_here = True
        self.on_greeting(name)

    def closed(self, status, code, reason):
        self.on_closed(status, code, reason)
