"""The client's WebSocket to the server: one tunnel and its conversations.

`TunnelClientProtocol` decodes server messages and keeps the conversation table; the
factory reports the outcome (greeting, refusal, loss) to whoever runs the client.
"""

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from tpot import codec
from tpot.client.target import SERVER, WEBSOCKET, Conversation

PING_INTERVAL = 15
PING_TIMEOUT = 30
MAX_MESSAGE_SIZE = 1024 * 1024


@implementer(IPushProducer)
class _WebSocketBackpressure:
    def __init__(self, session):
        self.session = session

    def pauseProducing(self):
        self.session.set_backed_up(True)

    def resumeProducing(self):
        self.session.set_backed_up(False)

    def stopProducing(self):
        pass


class TunnelClientProtocol(WebSocketClientProtocol):
    log = Logger()

    def __init__(self):
        super().__init__()
        self.conversations = {}
        self.backed_up = False
        self.refused_status = None

    def onOpen(self):
        self.transport.registerProducer(_WebSocketBackpressure(self), True)

    def failHandshake(self, reason):
        status = self.http_status_line.split() if getattr(self, "http_status_line", None) else []
        if len(status) > 1 and status[1].isdigit():
            self.refused_status = int(status[1])
        super().failHandshake(reason)

    def onMessage(self, payload, isBinary):
        try:
            if not isBinary:
                raise codec.ProtocolError("text message")
            message = codec.decode(payload, codec.FROM_SERVER)
        except codec.ProtocolError as error:
            self.log.warn("server sent a malformed message: {reason}", reason=str(error))
            self.sendClose(code=4180, reason=str(error)[:120])
            return
        kind = type(message)
        if kind is codec.Greeting:
            self.factory.greeted(message.name)
        elif kind is codec.OpenHTTP:
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
            conversation.pause_reading(SERVER)
        elif kind is codec.Resume:
            conversation.resume_reading(SERVER)
        elif kind is codec.Close:
            self.conversations.pop(message.id, None)
            conversation.remote_closed()

    def _open(self, message):
        stale = self.conversations.pop(message.id, None)
        if stale is not None:
            stale.remote_closed()
        conversation = Conversation(self, message.id, self.factory.settings.host_rewrite)
        self.conversations[message.id] = conversation
        if self.backed_up:
            conversation.pause_reading(WEBSOCKET)
        target = self.factory.settings.target
        self.log.debug("conversation {id} from {host}:{port}", id=message.id, host=message.host, port=message.port)
        conversation.connect(HostnameEndpoint(self.factory.reactor, target.host, target.port))

    def onClose(self, wasClean, code, reason):
        for conversation in list(self.conversations.values()):
            conversation.remote_closed()
        self.conversations.clear()
        self.factory.closed(self.refused_status, code, reason)

    # What conversations ask of the tunnel.

    def send_data(self, conversation_id, data):
        self._send(codec.encode_data(conversation_id, data))

    def send_pause(self, conversation_id):
        self._send(codec.encode(codec.Pause(conversation_id)))

    def send_resume(self, conversation_id):
        self._send(codec.encode(codec.Resume(conversation_id)))

    def send_no_connect(self, conversation_id):
        self._send(codec.encode(codec.NoConnect(conversation_id)))

    def conversation_ended(self, conversation_id, notify):
        if self.conversations.pop(conversation_id, None) is not None and notify:
            self._send(codec.encode(codec.Close(conversation_id)))

    def set_backed_up(self, backed_up):
        self.backed_up = backed_up
        for conversation in list(self.conversations.values()):
            if backed_up:
                conversation.pause_reading(WEBSOCKET)
            else:
                conversation.resume_reading(WEBSOCKET)

    def _send(self, payload):
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(payload, isBinary=True)


class TunnelClientFactory(WebSocketClientFactory):
    """`on_greeting(name)` once the tunnel is up; `on_closed(status, code, reason)` at the end."""

    protocol = TunnelClientProtocol

    def __init__(self, settings, reactor, headers, on_greeting, on_closed):
        super().__init__(settings.websocket_url, headers=headers, reactor=reactor)
        self.settings = settings
        self.on_greeting = on_greeting
        self.on_closed = on_closed
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_MESSAGE_SIZE,
            maxMessagePayloadSize=MAX_MESSAGE_SIZE,
            utf8validateIncoming=False,
            autoPingInterval=PING_INTERVAL,
            autoPingTimeout=PING_TIMEOUT,
            openHandshakeTimeout=30,
            closeHandshakeTimeout=5,
            tcpNoDelay=True,
            perMessageCompressionOffers=[],
        )

    def greeted(self, name):
        self.on_greeting(name)

    def closed(self, status, code, reason):
        self.on_closed(status, code, reason)
