"""The control endpoint: checking `/create-tpot` requests and serving a tunnel's WebSocket.

`check_create_request` and `check_connect_request` (for `/connect-tpot`, tpot.connect)
are pure; `Authenticator` runs the TPoT-1 check with the KDF in a bounded thread pool;
`TunnelProtocol` is the Autobahn protocol of one open tunnel, which owns that tunnel's
conversations.
"""

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import defer
from twisted.logger import Logger

from tpot import auth, codec
from tpot.codec import (
    ACCESS_SECRET_HEADER,
    EXTENSIONS_HEADER,
    HTTP,
    IPV6,
    RECLAIM,
    RECLAIM_TOKEN_HEADER,
    TCP,
)
from tpot.flow import PEER, UnregisterOnDrop, WebSocketBackpressure
from tpot.forwarded import format_address
from tpot.frames import PROTOCOL_OPTIONS, LeanFrames
from tpot.head import HeadError
from tpot.metrics import Stats
from tpot.registry import valid_name
from tpot.relay import TOO_MANY, TUNNEL_GONE, WRONG_KIND, ConversationIds, ConversationRefused
from tpot.timers import SilenceTimer

CREATE_PATH = "/create-tpot"
CONNECT_PATH = "/connect-tpot"
SUPPORTED_EXTENSIONS = frozenset({RECLAIM, IPV6, TCP})
CLOSE_PROTOCOL_ERROR = 4180
# Like 1012 (Service Restart), which Autobahn will not send: come back in a moment.
CLOSE_SERVER_RESTARTING = 4012
LIVENESS_TIMEOUT = 30.0
MAX_PENDING_AUTH = 64
CREATE_REFUSAL = "Authentication failed: check the client's auth key and clock."
CONNECT_REFUSAL = "Authentication failed: check the tunnel's access secret (or the server's auth key) and your clock."
# Autobahn's options for the server's WebSockets: tunnels, and connections to TCP tunnels.
SERVER_PROTOCOL_OPTIONS = dict(
    PROTOCOL_OPTIONS,
    openHandshakeTimeout=10,
    # Send the close frame (4180 and its reason) before closing, rather than just dropping.
    failByDrop=False,
)
# What a connection to a TCP tunnel proved, by the index auth.verify_any returns.
PROVED = ("access secret", "server key")


def check_create_request(head):
    """The requested name (or None for a random one); HeadError if the request is invalid."""
    if head.path != CREATE_PATH:
        raise HeadError(404, "Not found: tunnels are created at /create-tpot.")
    check_upgrade(head, "create a tunnel")
    return _requested_name(head)


def check_connect_request(head):
    """The name of the TCP tunnel a `/connect-tpot` request asks for; HeadError if invalid."""
    check_upgrade(head, "connect to a tunnel")
    name = _requested_name(head)
    if name is None:
        raise HeadError(400, "Say which tunnel to connect to: /connect-tpot?subdomain=NAME.")
    return name


def check_upgrade(head, purpose):
    """HeadError unless `head` is a WebSocket upgrade (GET, HTTP/1.1, RFC 6455 headers)."""
    if head.method != "GET":
        raise HeadError(405, f"Use GET with a WebSocket upgrade to {purpose}.")
    if head.version != "1.1":
        raise HeadError(400, "A WebSocket upgrade needs HTTP/1.1.")
    if (
        "websocket" not in head.header_tokens("upgrade")
        or "upgrade" not in head.header_tokens("connection")
        or not head.header("sec-websocket-key")
        or head.header("sec-websocket-version") != "13"
    ):
        raise HeadError(400, "Not a valid WebSocket upgrade request.")


def _requested_name(head):
    """The lower-cased `subdomain` of the query, None if absent or empty; HeadError if invalid."""
    name = head.query("subdomain")
    if name is None or name == "":
        return None
    name = name.lower()
    if not valid_name(name):
        raise HeadError(400, "Invalid subdomain: use 1-24 of a-z, 0-9 and '-', not starting with '-'.")
    return name


def requested_extensions(head):
    """The extensions of ours that the client asked for and we support."""
    return frozenset(head.header_tokens(EXTENSIONS_HEADER) & SUPPORTED_EXTENSIONS)


def access_secret(head, extensions):
    """The access secret of a TCP tunnel (None for HTTP); HeadError if it is missing or weak."""
    if TCP not in extensions:
        return None
    secret = head.header(ACCESS_SECRET_HEADER.lower())
    if not auth.valid_access_secret(secret):
        raise HeadError(400, (
            f"A TCP tunnel needs {ACCESS_SECRET_HEADER}: {auth.MIN_SECRET_LENGTH} to"
            f" {auth.MAX_SECRET_LENGTH} printable characters without spaces."
        ))
    return secret


class Authenticator:
    """Checks TPoT-1 headers against the server's key (or a TCP tunnel's secret), refusing replays.

    `run_kdf(f, *args)` returns a Deferred; the service gives it a bounded thread pool so
    the 32768-round KDF never runs on the reactor thread.
    """

    log = Logger()

    def __init__(self, key, run_kdf, clock_ms=auth.now_ms, max_pending=MAX_PENDING_AUTH):
        self.key = key
        self.run_kdf = run_kdf
        self.clock_ms = clock_ms
        self.max_pending = max_pending
        self.replays = auth.ReplayCache()
        self.failures = auth.FailureLimiter()
        self._pending = 0

    def check(self, header, source=""):
        """A Deferred firing if the header authorises a tunnel, failing with HeadError if not."""
        if self.key is None:
            return defer.succeed(None)
        return self._prove((self.key,), header, source, CREATE_REFUSAL).addCallback(lambda _: None)

    def check_access(self, secret, header, source="", name=""):
        """For a connection to TCP tunnel `name`, which always needs proof: a Deferred firing
        with what the header proved (PROVED: the tunnel's secret, by TPoT-Secret or TPoT-1,
        or the server's key by TPoT-1), failing with HeadError if it proves neither."""
        keys = (secret,) if self.key is None else (secret, self.key)
        d = self._prove(keys, header, source, CONNECT_REFUSAL, name)
        return d.addCallback(PROVED.__getitem__)

    def _prove(self, keys, header, source, refusal, name=None):
        """Both checks: one replay cache, failure limiter and KDF bound.  TPoT-1 tries all
        `keys` in one KDF job; TPoT-Secret (only where `name` is given) proves keys[0]."""
        retry_after = self.failures.retry_after(source, self.clock_ms())
        if retry_after is not None:
            return defer.fail(HeadError(
                429, "Too many failed authentication attempts; wait before retrying.",
                [("Retry-After", str(retry_after))],
            ))
        schemes = (auth.SCHEME,) if name is None else (auth.SCHEME, auth.SECRET_SCHEME)
        try:
            credentials = auth.parse_authorization(header, schemes)
            auth.check_fresh(credentials, self.clock_ms())
        except auth.AuthError as error:
            return defer.fail(self._refusal(error, source, refusal))
        if credentials.scheme == auth.SECRET_SCHEME:
            # An HMAC takes microseconds: checked here, not queued for the KDF pool.
            d = defer.maybeDeferred(auth.verify_secret, keys[0], name, credentials)
            d.addCallback(lambda _: 0)
        else:
            if self._pending >= self.max_pending:
                return defer.fail(HeadError(503, "The server is busy checking credentials; retry shortly."))
            self._pending += 1
            d = self.run_kdf(auth.verify_any, keys, credentials)
            d.addBoth(self._done)
        d.addCallback(self._accepted, credentials)
        d.addErrback(self._refuse_auth_failure, source, refusal)
        return d

    def _done(self, result):
        self._pending -= 1
        return result

    def _accepted(self, proved, credentials):
        self.replays.remember(credentials, self.clock_ms())
        return proved

    def _refuse_auth_failure(self, failure, source, refusal):
        failure.trap(auth.AuthError)
        raise self._refusal(failure.value, source, refusal)

    def _refusal(self, error, source, refusal):
        self.failures.failed(source, self.clock_ms())
        self.log.info("authentication refused for {source}: {reason}", source=source, reason=str(error))
        return HeadError(401, refusal)


class TunnelProtocol(UnregisterOnDrop, LeanFrames, WebSocketServerProtocol):
    """One open tunnel: the WebSocket of a client and the conversations relayed over it."""

    # Autobahn logs every frame through self.log at debug level; a txaio logger honours
    # txaio.set_global_log_level (tpot.tap sets "info"), a plain twisted Logger does not.
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
        self._send(codec.encode(codec.Greeting(self.name)))
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
        left = getattr(self, "remoteCloseCode", None) == 1000
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
        if self.state != WebSocketProtocol.STATE_OPEN:
            raise ConversationRefused(TUNNEL_GONE)
        conversation_id = self.ids.allocate()
        if conversation_id is None:
            raise ConversationRefused(TOO_MANY)
        self.conversations[conversation_id] = visitor
        self.stats.conversations_total += 1
        opening = codec.OpenRaw if raw else codec.OpenHTTP
        self._send(codec.encode(opening(conversation_id, host, port), ipv6=IPV6 in self.extensions))
        self.backpressure.admit(visitor)
        return conversation_id

    def send_data(self, conversation_id, data):
        self.bytes_upstream += len(data)
        self.stats.bytes_upstream += len(data)
        self._send_data(conversation_id, data)

    def send_pause(self, conversation_id):
        self._send(codec.encode(codec.Pause(conversation_id)))

    def send_resume(self, conversation_id):
        self._send(codec.encode(codec.Resume(conversation_id)))

    def send_half_close(self, conversation_id):
        self._send(codec.encode(codec.HalfClose(conversation_id)))

    def conversation_ended(self, conversation_id, notify):
        if self.conversations.pop(conversation_id, None) is None:
            return
        self.ids.release(conversation_id)
        if notify:
            self._send(codec.encode(codec.Close(conversation_id)))

    def shutdown(self):
        self.sendClose(code=CLOSE_SERVER_RESTARTING, reason="server restarting; reconnect")

    # Internals.

    def _max_message_size_exceeded(self, msg_size, max_msg_size, reason):
        # Autobahn's hook for oversized frames: one malformed-message rule, one close code.
        self._fail_connection(CLOSE_PROTOCOL_ERROR, f"message larger than {max_msg_size} bytes")

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

    def _send(self, payload):
        self._send_message(payload)

    def _client(self):
        return self.peer if self.address is None else format_address(self.address)

    def _protocol_error(self, reason):
        self.log.warn("tunnel {name} sent a malformed message: {reason}", name=self.name, reason=reason)
        # Fail the connection (RFC 6455, 7.1.7) rather than just closing it: Autobahn then
        # sends the 4180 close frame and stops delivering the client's later messages, so
        # nothing more from a misbehaving client reaches its visitors.
        self._fail_connection(CLOSE_PROTOCOL_ERROR, reason[:120])

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
