"""`tpot connect NAME`: reach a TCP tunnel from a local port (--listen) or stdin/stdout (--stdio).

Every local connection gets its own WebSocket to `/connect-tpot?subdomain=NAME`, proved
with the tunnel's access secret or the server's auth key, and its bytes go both ways as
binary messages (docs/PROTOCOL.md, "Connecting to a TCP tunnel").  The local connection
is read only once the WebSocket is open, and never while the WebSocket's send buffer is
full; the WebSocket is not read while the local send buffer is full.  Either side closing
closes the other.

The settings are parsed purely (`connect_settings`); `ConnectRun` is the Twisted part.
"""

import re
import sys
from dataclasses import dataclass

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, threads
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from tpot.client.requestlog import printable_text
from tpot.client.session import CLIENT_PROTOCOL_OPTIONS
from tpot.client.settings import (
    ENV_ACCESS_SECRET,
    EXIT_FAILURE,
    EXIT_OK,
    Address,
    ClientError,
    check_access_secret,
    configured_auth_key,
    configured_server,
    parse_address,
)
from tpot.client.tls import server_tls
from tpot.http.addresses import format_address
from tpot.protocol.auth import make_authorization, make_secret_authorization
from tpot.protocol.codec import CLOSE_NO_CONNECT, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TUNNEL_GONE
from tpot.protocol.flow import (
    WEBSOCKET,
    ReadPauses,
    ReadWhileRoom,
    UnregisterOnDrop,
    no_delay,
    shut_down_writing,
)
from tpot.protocol.frames import is_connecting, is_open, refused_status
from tpot.protocol.names import valid_name

DEFAULT_LISTEN_HOST = "127.0.0.1"
CLOSE_WAIT = 2.0
# Why a side is not read (flow.ReadPauses reasons, besides flow.WEBSOCKET).
OPENING = "opening"  # the local side: its WebSocket is not open yet
LOCAL = "local"  # the WebSocket: the local side's send buffer is full

_LISTEN = re.compile(r"(?:(\[[0-9a-f:.]+\]|[a-z0-9.-]+):)?([0-9]{1,5})", re.IGNORECASE)

log = Logger()


@dataclass(frozen=True)
class ConnectSettings:
    server: Address
    name: str
    key: str  # what the Authorization header proves: the access secret, else the server's key
    listen: tuple = None  # (host, port) to accept connections on; None: stdin/stdout
    debug: bool = False
    key_is_secret: bool = False  # proved with TPoT-Secret (an HMAC), else TPoT-1 (the KDF)

    @property
    def websocket_url(self):
        scheme = "wss" if self.server.scheme == "https" else "ws"
        return f"{scheme}://{self.server.host_with_port}/connect-tpot?subdomain={self.name}"


def parse_listen(text):
    """`PORT` (on 127.0.0.1) or `HOST:PORT` to (host, port); port 0 lets the system choose."""
    match = _LISTEN.fullmatch((text or "").strip())
    if match is None or int(match.group(2)) > 65535:
        raise ClientError(f"The listen address {text!r} is not valid: use PORT or HOST:PORT.")
    return (match.group(1) or DEFAULT_LISTEN_HOST).strip("[]"), int(match.group(2))


def connect_settings(name, server=None, auth_key=None, secret=None, listen=None, stdio=False, debug=False,
                     env=None, config=None):
    """Merge command-line values (None when not given) with `env` and `config` (empty
    when not given), as settings.client_settings does; the secret may also come from
    TPOT_ACCESS_SECRET."""
    env = {} if env is None else env
    config = {} if config is None else config
    if not valid_name((name or "").lower()):
        raise ClientError(f"The tunnel name {name!r} is not valid: use 1-24 of a-z, 0-9 and '-', not starting with '-'.")
    if (listen is None) == (not stdio):
        raise ClientError("Give exactly one of --listen [HOST:]PORT and --stdio.")
    server = parse_address(configured_server(server, env, config), "server")
    secret = secret or env.get(ENV_ACCESS_SECRET)
    key = check_access_secret(secret) if secret else configured_auth_key(auth_key, env, config)
    if not key:
        raise ClientError("Give the tunnel's access secret with --secret (tpot tcp prints it)"
                          " or the server's auth key with -k.")
    return ConnectSettings(server, name.lower(), key, None if stdio else parse_listen(listen), debug, bool(secret))


@implementer(IHalfCloseableProtocol)
class LocalSide(Protocol):
    """One local connection (accepted, or stdin/stdout), relayed over its own WebSocket.

    Its end of stream (a FIN, or the end of stdin) is passed on as an empty message, a
    half-close: the answer still comes back, as through `nc -N` or an SSH channel.
    """

    def __init__(self, run):
        self.run = run
        self.reading = ReadPauses()
        self.websocket = None
        self.gone = False
        self._ended_early = False
        self._room = None  # the producer on our transport: the WebSocket is read while it has room
        self._read_done = self._write_done = False

    def connectionMade(self):
        # Nothing can be sent on before the WebSocket is open: leave the bytes in the socket.
        self.reading.pause(OPENING)
        self.reading.attach(self.transport)
        no_delay(self.transport)
        self.run.open_link(self)

    def websocket_open(self, websocket):
        """Couple the two transports, then start reading."""
        self.websocket = websocket
        websocket.transport.registerProducer(ReadWhileRoom(self.reading, WEBSOCKET), True)
        self._room = ReadWhileRoom(websocket.reading, LOCAL)
        self.transport.registerProducer(self._room, True)
        self.reading.resume(OPENING)
        if self._ended_early:
            websocket.send_stream(b"")

    def dataReceived(self, data):
        if self.websocket is not None:
            self.websocket.send_stream(data)

    def write(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self._read_done = True
        if self.websocket is not None:
            self.websocket.send_stream(b"")
        else:  # not read before the WebSocket is open, but a transport may still say so
            self._ended_early = True

    def writeConnectionLost(self):
        self._write_done = True

    def end_of_stream(self):
        """The tunnel's service has sent all it will: our FIN (or stdout's end), after the data."""
        if not self.gone and self._room is not None:
            shut_down_writing(self.transport, self._room)

    def close(self):
        """Close after writing what we have (a paused producer would keep it open)."""
        if not self.gone:
            self.transport.unregisterProducer()
            self.transport.loseConnection()
        if self._read_done and self._write_done and not self.gone:
            # Both halves closed already: TCP has just reported the end, stdio never will.
            self.connectionLost(None)

    def connectionLost(self, reason=None):
        self.gone = True
        self.run.local_closed(self)


class ConnectClientProtocol(UnregisterOnDrop, WebSocketClientProtocol):
    # txaio's logger, so that the level set in cli.main also silences Autobahn's per-frame debug.
    log = txaio.make_logger()

    def __init__(self):
        super().__init__()
        self.reading = ReadPauses()
        self.refused_status = None

    def onOpen(self):
        local = self.factory.local
        if local.gone:
            self.sendClose(1000)
            return
        self.factory.opened = True
        self.reading.attach(self.transport)
        no_delay(self.transport)
        local.websocket_open(self)

    def failHandshake(self, reason):
        self.refused_status = refused_status(self)
        super().failHandshake(reason)

    def onMessage(self, payload, isBinary):
        if payload:
            self.factory.local.write(payload)
        else:
            self.factory.local.end_of_stream()

    def send_stream(self, data):
        if is_open(self):
            self.sendMessage(data, isBinary=True)

    def onClose(self, wasClean, code, reason):
        self.factory.ended(self.refused_status, code, reason)


class ConnectClientFactory(WebSocketClientFactory):
    """The WebSocket of one local connection; reports its end to `on_end(local, outcome)`."""

    protocol = ConnectClientProtocol

    def __init__(self, settings, reactor, authorization, local, on_end):
        super().__init__(settings.websocket_url, headers={"Authorization": authorization}, reactor=reactor)
        self.local = local
        self.on_end = on_end
        self.current = None
        self.connector = None
        self.opened = False
        self.setProtocolOptions(**CLIENT_PROTOCOL_OPTIONS)

    def buildProtocol(self, addr):
        self.current = super().buildProtocol(addr)
        return self.current

    def clientConnectionFailed(self, connector, reason):
        self.on_end(self.local, Outcome(reached=False))

    def ended(self, status, code, reason):
        self.on_end(self.local, Outcome(True, self.opened, status, code, reason))

    def close(self):
        """Close the WebSocket (1000), whatever stage it is at."""
        protocol = self.current
        if protocol is None:
            self.connector.disconnect()
        elif is_open(protocol):
            protocol.sendClose(1000)
        elif is_connecting(protocol):
            protocol.dropConnection(abort=True)  # still shaking hands: nothing to close cleanly


@dataclass(frozen=True)
class Outcome:
    """How a WebSocket ended: never reached, refused with an HTTP status, or closed with a code."""

    reached: bool
    opened: bool = False
    status: int = None
    code: int = None
    reason: str = None


def explain(outcome, name, server):
    """One sentence on why a connection ended, or None if it ended normally."""
    if not outcome.reached:
        return f"the server {server} could not be reached."
    if outcome.status is not None:
        return REFUSALS.get(outcome.status, "the server refused the connection to {name}: {status}.").format(
            name=name, status=outcome.status)
    if not outcome.opened:
        return f"the server {server} closed the connection before the WebSocket opened."
    template = CLOSES.get(outcome.code, "the connection to {name} ended with code {code} ({reason}).")
    reason = printable_text(outcome.reason) if outcome.reason else "no reason"  # the server's words: escaped
    return template and template.format(name=name, code=outcome.code, reason=reason)


REFUSALS = {
    400: "the server refused the connection to {name} as invalid (400); check the name.",
    401: "the server refused the connection to {name}: 401, check --secret or -k.",
    404: "the server refused the connection to {name}: 404, it is not a TCP tunnel (or the server has no tpot connect).",
    429: "the server refused the connection to {name}: 429, too many failed attempts; wait a minute.",
    503: "the server refused the connection to {name}: 503, the tunnel is not connected (or the server is busy).",
}
CLOSES = {
    CLOSE_NORMAL: None,
    1006: "the connection to the server was lost.",
    CLOSE_NO_CONNECT: "the tunnel's client could not reach its target.",
    CLOSE_TUNNEL_GONE: "the tunnel {name} closed the connection (4503: {reason})",
    CLOSE_PROTOCOL_ERROR: "the server closed the connection to {name} for a protocol error (4180: {reason})",
}


class ConnectRun:
    """The whole command: a listener (or stdio), one link per local connection, a clean stop."""

    def __init__(self, settings, reactor, out=sys.stdout, err=sys.stderr, authorize=None, stdio=None):
        self.settings = settings
        self.reactor = reactor
        self.out = out
        self.err = err
        self.authorize = authorize or self._authorization
        self.stdio = stdio
        self.exit_code = EXIT_OK
        self.stopping = False
        self.port = None
        self.links = {}  # LocalSide -> its ConnectClientFactory
        self._all_closed = None

    def start(self):
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        if self.settings.listen is None:
            self._stdio()
        else:
            self._listen(*self.settings.listen)

    def _stdio(self):
        stdio = self.stdio
        if stdio is None:
            from twisted.internet.stdio import StandardIO as stdio
        stdio(LocalSide(self), reactor=self.reactor)

    def _listen(self, host, port):
        try:
            self.port = self.reactor.listenTCP(port, LocalFactory(self), interface=host)
        except CannotListenError as error:
            reason = getattr(error.socketError, "strerror", None) or error.socketError
            self.fail(f"cannot listen on {format_address((host, port))}: {reason}.")
            return
        self.out.write(f"tpot listening on {format_address((host, self.port.getHost().port))}\n")
        self.out.flush()

    # The links.

    def _authorization(self, key):
        """A Deferred Authorization header: TPoT-Secret at once, TPoT-1 from a thread (its
        KDF takes tens of milliseconds, which would stall the other links)."""
        if self.settings.key_is_secret:
            return defer.succeed(make_secret_authorization(key, self.settings.name))
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), make_authorization, key)

    def open_link(self, local):
        if self.stopping:
            local.close()
            return
        d = self.authorize(self.settings.key)
        d.addCallback(self._connect, local)
        d.addErrback(self._could_not_open, local)

    def _connect(self, authorization, local):
        if local.gone or self.stopping:
            local.close()
            return
        factory = ConnectClientFactory(self.settings, self.reactor, authorization, local, self.link_ended)
        self.links[local] = factory
        factory.connector = connectWS(factory, server_tls(self.settings.server))

    def _could_not_open(self, failure, local):
        log.failure("opening a connection to {name} failed", failure, name=self.settings.name)
        self._say(f"the connection to {self.settings.name} could not be opened ({failure.getErrorMessage()}).")
        local.close()

    def link_ended(self, local, outcome):
        """A WebSocket ended (or never opened): close its local side, say why if it must."""
        self.links.pop(local, None)
        message = None if local.gone and outcome.status is None else explain(
            outcome, self.settings.name, self.settings.server.host_with_port)
        local.close()
        if message and not self.stopping:
            self._say(message)
        if not self.links and self._all_closed is not None and not self._all_closed.called:
            self._all_closed.callback(None)

    def local_closed(self, local):
        factory = self.links.get(local)
        if factory is not None:
            factory.close()
        if self.settings.listen is None and not self.stopping and self.reactor.running:
            # --stdio: one connection is the whole run.
            self.reactor.stop()

    def _say(self, message):
        """One sentence on stderr; with --stdio it is the run's failure."""
        self.err.write(f"tpot: {message}\n")
        self.err.flush()
        if self.settings.listen is None:
            self.exit_code = EXIT_FAILURE

    # Stopping.

    def fail(self, message):
        self._say(message)
        self.exit_code = EXIT_FAILURE
        if self.reactor.running:
            self.reactor.stop()

    def stop(self):
        """Ctrl-C, SIGTERM or the end of --stdio: close every WebSocket (briefly waiting)."""
        self.stopping = True
        if self.port is not None:
            self.port.stopListening()
        if not self.links:
            return None
        self._all_closed = defer.Deferred()
        for factory in list(self.links.values()):
            factory.close()
        timeout = self.reactor.callLater(CLOSE_WAIT, lambda: self._all_closed.called or self._all_closed.callback(None))
        self._all_closed.addBoth(lambda _: timeout.active() and timeout.cancel())
        return self._all_closed


class LocalFactory(Factory):
    def __init__(self, run):
        self.run = run

    def buildProtocol(self, addr):
        return LocalSide(self.run)
