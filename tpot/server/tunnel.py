"""The server's end of a tunnel: the Autobahn protocol of one open tunnel's WebSocket.

`TunnelProtocol` owns that tunnel's conversations (one per visitor, tpot.server.visitor,
or per connection to a TCP tunnel, tpot.server.connect); `TunnelFactory` builds it for a
connection the router has already read and checked.
"""

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from tpot.http.addresses import format_address
from tpot.protocol import codec
from tpot.protocol.codec import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SERVER_RESTARTING,
    EXTENSIONS_HEADER,
    HTTP,
    IPV6,
    RECLAIM,
    RECLAIM_TOKEN_HEADER,
    TCP,
)
from tpot.protocol.flow import PEER, UnregisterOnDrop, WebSocketBackpressure
from tpot.protocol.frames import (
    PROTOCOL_OPTIONS,
    LeanFrames,
    OversizeFails,
    fail_connection,
    is_open,
    peer,
    remote_close_code,
)
from tpot.protocol.session import ConversationIds
from tpot.server.metrics import Stats
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


class TunnelProtocol(UnregisterOnDrop, OversizeFails, LeanFrames, WebSocketServerProtocol):
    """One open tunnel: the WebSocket of a client and the conversations relayed over it."""

    # Autobahn logs every frame through self.log at debug level; a txaio logger honours
    # txaio.set_global_log_level (tpot.server.tap sets "info"), a plain twisted Logger does not.
    log = txaio.make_logger()

    def __init__(self, name, registry, clock, extensions=frozenset(), stats=None, access_secret=None,
                 address=None):
        super().__init__()
        self.name = name
        self.address = address  # the client's (host, port), as the router saw it, for logs
        # A TCP tunnel takes raw conversations only, from those who prove access_secret.
        self.kind = TCP if TCP in extensions else HTTP
        self.access_secret = access_secret
        self.registry = registry
        self.clock = clock
        self.extensions = extensions
        self.stats = Stats() if stats is None else stats
        self.bytes_upstream = 0
        self.bytes_downstream = 0
        self.opened_at = None
        self.conversations = {}
        self.ids = ConversationIds()
        self.backpressure = WebSocketBackpressure(self.conversations)
        self.liveness = SilenceTimer(clock, LIVENESS_TIMEOUT, self._silent)
        self._handlers = {
            codec.Data: lambda visitor, message: self._relay_data(visitor, message.payload),
            codec.Pause: lambda visitor, _: visitor.pause_reading(PEER),
            codec.Resume: lambda visitor, _: visitor.resume_reading(PEER),
            codec.Close: lambda visitor, _: visitor.remote_closed(),
            codec.NoConnect: lambda visitor, _: visitor.no_connect(),
            codec.HalfClose: lambda visitor, _: visitor.peer_done_sending(),
        }

    # Autobahn callbacks.

    def onConnect(self, request):
        if not self.extensions:
            return None
        headers = {EXTENSIONS_HEADER: ", ".join(sorted(self.extensions))}
        if RECLAIM in self.extensions:
            headers[RECLAIM_TOKEN_HEADER] = self.registry.reclaim_token(self.name)
        return None, headers

    def onOpen(self):
        self._lean_setup()
        self.registry.attach(self.name, self)
        self.backpressure.register(self.transport)
        self.opened_at = self.clock.seconds()
        self.liveness.start()
        self._send_message(codec.encode(codec.Greeting(self.name)))
        self.log.info("tunnel {name} opened from {peer}", name=self.name, peer=self._client())

    def onMessage(self, payload, isBinary):
        self.liveness.touch()
        try:
            if not isBinary:
                raise codec.ProtocolError("text message")
            message = codec.decode(payload, codec.FROM_CLIENT)
            if type(message) is codec.HalfClose and self.kind != TCP:
                raise codec.ProtocolError("half-close in an HTTP conversation")
        except codec.ProtocolError as error:
            self._protocol_error(str(error))
            return
        visitor = self.conversations.get(message.id)
        if visitor is not None:
            self._handlers[type(message)](visitor, message)

    def onPing(self, payload):
        self.liveness.touch()
        super().onPing(payload)

    def onClose(self, wasClean, code, reason):
        # A client that closed normally has left; any other end may be a drop it comes back from.
        left = remote_close_code(self) == 1000
        self.registry.release(self.name, self, reserve=RECLAIM in self.extensions and not left)
        self.liveness.stop()
        for visitor in list(self.conversations.values()):
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
        if raw != (self.kind == TCP):
            raise ConversationRefused(WRONG_KIND)
        if not is_open(self):
            raise ConversationRefused(TUNNEL_GONE)
        conversation_id = self.ids.allocate()
        if conversation_id is None:
            raise ConversationRefused(TOO_MANY)
        self.conversations[conversation_id] = visitor
        self.stats.conversations_total += 1
        opening = codec.OpenRaw if raw else codec.OpenHTTP
        self._send_message(codec.encode(opening(conversation_id, host, port), ipv6=IPV6 in self.extensions))
        self.backpressure.admit(visitor)
        return conversation_id

    def send_data(self, conversation_id, data):
        self.bytes_upstream += len(data)
        self.stats.bytes_upstream += len(data)
        self._send_data(conversation_id, data)

    def send_pause(self, conversation_id):
        self._send_message(codec.encode(codec.Pause(conversation_id)))

    def send_resume(self, conversation_id):
        self._send_message(codec.encode(codec.Resume(conversation_id)))

    def send_half_close(self, conversation_id):
        self._send_message(codec.encode(codec.HalfClose(conversation_id)))

    def conversation_ended(self, conversation_id, notify):
        if self.conversations.pop(conversation_id, None) is None:
            return
        self.ids.release(conversation_id)
        if notify:
            self._send_message(codec.encode(codec.Close(conversation_id)))

    def shutdown(self):
        self.sendClose(code=CLOSE_SERVER_RESTARTING, reason="server restarting; reconnect")

    # Internals.

    def _deliver_data(self, conversation_id, data):
        # LeanFrames' shortcut past onMessage for data messages.
        self.liveness.touch()
        visitor = self.conversations.get(conversation_id)
        if visitor is not None:
            self._relay_data(visitor, data)

    def _relay_data(self, visitor, data):
        self.bytes_downstream += len(data)
        self.stats.bytes_downstream += len(data)
        visitor.deliver(data)

    def _client(self):
        return peer(self) if self.address is None else format_address(self.address)

    def _protocol_error(self, reason):
        self.log.warn("tunnel {name} sent a malformed message: {reason}", name=self.name, reason=reason)
        # Fail the connection (RFC 6455, 7.1.7) rather than just closing it: Autobahn then
        # sends the 4180 close frame and stops delivering the client's later messages, so
        # nothing more from a misbehaving client reaches its visitors.
        fail_connection(self, CLOSE_PROTOCOL_ERROR, reason[:120])

    def _silent(self, silent_for):
        self.log.info("tunnel {name} silent for {s:.0f} s; dropping it", name=self.name, s=silent_for)
        self.dropConnection(abort=True)


class TunnelFactory(WebSocketServerFactory):
    """Builds tunnel protocols for connections the router has already accepted."""

    def __init__(self, registry, clock, stats=None, url="ws://localhost/create-tpot"):
        super().__init__(url)
        self.registry = registry
        self.clock = clock
        self.stats = Stats() if stats is None else stats
        self.setProtocolOptions(**SERVER_PROTOCOL_OPTIONS)

    def build_tunnel(self, name, extensions=frozenset(), access_secret=None, address=None):
        protocol = TunnelProtocol(name, self.registry, self.clock, extensions, self.stats, access_secret, address)
        protocol.factory = self
        return protocol
