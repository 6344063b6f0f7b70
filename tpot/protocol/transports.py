"""TCP transports that send a write at once when nothing is waiting to be sent.

Twisted's transports buffer every write until the reactor finds the socket writable: for
a relay writing one piece per request, that is an epoll_ctl to watch for writability, a
reactor turn to be told, the send, and another epoll_ctl to stop watching, per write.
A connection whose protocol asks (`send_at_once`) sends a write straight away instead
when its buffer is empty; what the socket does not take is buffered and sent as before,
with the same flow control (a full buffer pauses the producer), and an error leaves the
data to Twisted's path, which reports the loss as usual.

Only one visitor's connection (the server's, tpot.server.visitor) or one target
connection (the client's, tpot.client.target) asks: each carries one conversation.  A
tunnel's WebSocket carries many, and sending each write at once cost more CPU per request
than it saved (one send per message).  It asks instead (`send_at_turn_end`) that what a
turn of the reactor wrote to it be sent once that turn's events are handled, in one send
(tpot.protocol.eventloop's `call_after_events`), rather than a turn later as Twisted does:
the writes stay together, no epoll_ctl is made unless the socket is full, and each
message spends a turn less in the pipeline.

The client's target connections to an address are also made with fewer system calls
(AtOnceClient), and let go of their connector and its attempt once made or ended, so that
an ended conversation is freed at once rather than by the garbage collector.

The client's WebSocket is connected the same way (`connect_tcp`), so that it may send at
the turn's end too.

Twisted's extension points, not a change to Twisted: subclasses of its TCP transports;
the `transport` class a listening tcp.Port builds its connections with; a tcp.Connector
whose `_makeTransport` builds ours (AtOnceEndpoint connects with it); tcp.Client's steps
of a connection attempt; the transport's buffer state, read only; and the reactor's
handling of a writable socket, called as epoll would.  Every such name is in
TWISTED_NAMES, which tests/memory/test_transports.py checks against the installed Twisted.
"""

import errno
import os
import socket

from twisted.internet import error, tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import ClientFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

TWISTED_NAMES = {
    "classes": ("twisted.internet.tcp.Server", "twisted.internet.tcp.Client", "twisted.internet.tcp.Port",
                "twisted.internet.tcp.Connector"),
    # Methods we call or override.
    "methods": ("writeSomeData", "write", "writeSequence", "startWriting", "stopWriting", "_makeTransport",
                "connectionLost"),
    # The reactor's, called as epoll's "writable" would call it (SendsAtTurnEnd).
    "reactor": ("_doReadOrWrite", "_POLL_OUT", "_POLL_IN", "_reads"),
    # tcp.Client's steps of a connection attempt, which AtOnceClient overrides or calls.
    "connecting": ("_finishInit", "resolveAddress", "_setRealAddress", "doConnect", "failIfNotConnected",
                   "_connectDone", "stopWriting"),
    # tcp.Connector's, which AtOnceConnector overrides or calls.
    "connector": ("connect", "cancelTimeout"),
    # Attributes of a tcp.Client still connecting, read by AtOnceClient.
    "client_state": ("_requiresResolution", "addr", "socket", "connector", "_commonConnection", "disconnected"),
    # Attributes of a connected transport that say whether anything waits to be sent.
    "state": ("connected", "disconnecting", "_aborting", "TLS", "_writeDisconnecting", "_writeDisconnected",
              "dataBuffer", "offset", "_tempDataLen", "_tempDataBuffer", "_maybePauseProducer", "SEND_LIMIT", "socket"),
}


class SendsAtOnce:
    """Mixin for Twisted's TCP transports: with `at_once` set, a write that finds nothing
    buffered goes to the socket before it returns."""

    at_once = False
    # Closed with close() alone: Twisted calls shutdown() first "just to be safe" (its own
    # comment says it is not needed, no other process holding the socket), a system call
    # per connection.
    _shouldShutdown = False

    def write(self, data):
        if self.at_once and type(data) is bytes and data and self._nothing_waiting():
            sent = self._send(data)
            if sent == len(data):
                return
            data = data[sent:]  # the rest (all of it on an error: Twisted's path reports it)
        super().write(data)

    def _send(self, data):
        """writeSomeData for a piece that fits one send: the bytes the socket took (0 on an
        error, which Twisted's path then meets and reports), without its three calls."""
        if len(data) > self.SEND_LIMIT:
            sent = self.writeSomeData(data)
            return sent if type(sent) is int else 0
        try:
            return self.socket.send(data)
        except OSError:  # full (EAGAIN, ENOBUFS), or lost
            return 0

    def writeSequence(self, iovec):
        if self.at_once and self._nothing_waiting():
            self.write(b"".join(iovec))
        else:
            super().writeSequence(iovec)

    def _nothing_waiting(self):
        # An aborted connection stays connected until the reactor's next turn; Twisted
        # drops what is written to it meanwhile, and so must we.
        return (self.connected and not self.disconnecting and not self._aborting and not self.TLS
                and not self._writeDisconnecting
                and not self._writeDisconnected and self.offset == len(self.dataBuffer) and not self._tempDataLen)


class SendsAtTurnEnd:
    """Mixin for Twisted's TCP transports: with `after_events` set (the reactor's
    call_after_events), a write that finds the socket unwatched is sent once the reactor
    turn's events are handled, with every other write of that turn; the socket is watched
    for writability, as Twisted does, only when it did not take everything."""

    after_events = None
    _watching = False  # the reactor is watching the socket for writability
    _wants_send = False  # something asked to be sent after this turn's events
    _queued = False  # _send_now is queued with the reactor

    def startWriting(self):
        if self.after_events is None or self._watching:
            self._watching = True
            super().startWriting()
            return
        self._wants_send = True
        if not self._queued:
            self._queued = True
            self.after_events(self._send_now)

    def writeSequence(self, iovec):
        if self.after_events is None or self.TLS or not self.connected or self._writeDisconnected or not iovec:
            super().writeSequence(iovec)
            return
        # FileDescriptor.writeSequence without its check of each piece's type and the TLS
        # layer's hop: what comes here is our frames' bytes, a message at a time.
        self._tempDataBuffer.extend(iovec)
        self._tempDataLen += sum(map(len, iovec))
        self._maybePauseProducer()
        self.startWriting()

    def stopWriting(self):
        # Twisted stops writing when all is sent, and on abortConnection: nothing is to be sent then.
        self._watching = self._wants_send = False
        super().stopWriting()

    def _send_now(self):
        self._queued = False
        if not self._wants_send or not self.connected or self._aborting:
            return
        self._wants_send = False
        # As if epoll said the socket is writable: doWrite, and the loss or close it reports.
        self.reactor._doReadOrWrite(self, self.fileno(), self.reactor._POLL_OUT)
        if self.connected and not self._wants_send and self._unsent():
            self._watching = True  # the socket is full: Twisted's way from here
            super().startWriting()

    def _unsent(self):
        return self.offset < len(self.dataBuffer) or self._tempDataLen > 0

    def writeSomeData(self, data):
        # doWrite sends even an empty buffer (a close with nothing left to send): a system
        # call for nothing, once per closed connection.
        return super().writeSomeData(data) if len(data) else 0


class AtOnceServer(SendsAtOnce, SendsAtTurnEnd, tcp.Server):
    """An accepted connection that may send at once, or at the turn's end.

    It is read once at the end of the turn that accepted it (where the reactor can):
    a visitor sends its request as soon as it is connected, so the request is usually
    there already, and waiting for epoll to say so cost every new visitor a turn."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        after_events = getattr(self.reactor, "call_after_events", None)
        if after_events is not None:
            after_events(self._read_now)

    def _read_now(self):
        if self.connected and not self.disconnecting and self.fileno() in self.reactor._reads:
            # As if epoll said the socket is readable (nothing there yet reads as nothing).
            self.reactor._doReadOrWrite(self, self.fileno(), self.reactor._POLL_IN)


class AtOnceClient(SendsAtOnce, SendsAtTurnEnd, tcp.Client):
    """An outgoing connection that may send at once, made with fewer system calls.

    Twisted starts an attempt on the reactor's next turn (a timed call), connects an
    address through a Deferred that has already fired, reads SO_ERROR before connect()
    (a fresh socket has none), watches the socket for reads and for writes with two
    epoll_ctl, and once the socket says the attempt is over it calls connect() again to
    learn the result, stops watching the socket both ways and starts watching it for
    reads anew: on loopback, a tenth of the client's CPU per new conversation.  Here the
    attempt starts as its connector is ready (`begin`) and an address is connected to
    directly.  Where the reactor can (LeanEPollReactor), connect() is asked again at the
    end of the turn, when on loopback the handshake is usually over: the connection is
    then used a turn sooner and only ever watched for reads; while the attempt goes on,
    the socket is watched both ways (with one epoll_ctl there, two elsewhere), and the
    result read from SO_ERROR alone (what connect() again would report), after which
    only the watch for writability is dropped.  A name to resolve goes Twisted's way.
    """

    _attempted = False
    _begin = None  # what starts the attempt, until AtOnceConnector.connect calls begin()

    def _finishInit(self, whenDone, skt, err, reactor):
        if whenDone is None:  # no socket: Twisted reports the failure on the next turn
            super()._finishInit(whenDone, skt, err, reactor)
            return
        self._commonConnection.__init__(self, skt, None, reactor)
        self._begin = whenDone

    def begin(self):
        start, self._begin = self._begin, None
        if start is not None and hasattr(self, "connector"):  # not stopped meanwhile
            start()

    def resolveAddress(self):
        if self._requiresResolution:
            super().resolveAddress()
        else:
            self._setRealAddress(self.addr)

    def doConnect(self):
        if not self._attempted:
            self._attempted = True
            self._attempt()
            return None
        # The socket became readable or writable: the attempt is over, the result in SO_ERROR.
        if not hasattr(self, "connector"):  # stopped in the meantime (failIfNotConnected)
            return None
        self._conclude(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        return None

    def _attempt(self):
        """Twisted's first doConnect, less the SO_ERROR read before connect()."""
        self.doWrite = self.doRead = self.doConnect
        if not hasattr(self, "connector"):  # stopped before the attempt
            return
        if self._conclude(self._connect()):
            return
        after_events = getattr(self.reactor, "call_after_events", None)
        if after_events is None:  # both ways, as Twisted does
            self.startReading()
            self.startWriting()
            return
        # On loopback the handshake is usually over by the end of the turn: asked again
        # then, a connection made is used a turn sooner, for one connect() more, and is
        # only ever watched for reads.
        after_events(self._ask_again)

    def _ask_again(self):
        if self.connected or self.disconnected or not hasattr(self, "connector"):
            return
        if not self._conclude(self._connect()):
            # Both ways, as Twisted does: a refusal is told as readable, with its reason.
            self.reactor.add_reader_writer(self)

    def _connect(self):
        try:
            return self.socket.connect_ex(self.realAddress)
        except OSError as failure:
            return failure.args[0]

    def _conclude(self, result):
        """Act on a connect() result or SO_ERROR: False while the attempt goes on."""
        if result in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            return False
        if result and result != errno.EISCONN:
            self.failIfNotConnected(error.getConnectError((result, os.strerror(result))))
            return True
        del self.doWrite, self.doRead  # _attempt set both
        self.stopWriting()  # reads stay watched (or nothing was: _connectDone starts reading)
        self._connectDone()
        return True


class AtOnceConnector(tcp.Connector):
    """A tcp.Connector whose connections are AtOnceClients, started at once; with
    `deadlines`, its timeout is kept there rather than as a timed call of its own."""

    def __init__(self, host, port, factory, timeout, bindAddress, reactor, deadlines=None):
        super().__init__(host, port, factory, None if deadlines is not None else timeout, bindAddress, reactor)
        self.deadlines = deadlines
        self.deadline_after = timeout

    def _makeTransport(self):
        return AtOnceClient(self.host, self.port, self.bindAddress, self, self.reactor)

    def connect(self):
        super().connect()
        transport = getattr(self, "transport", None)
        if transport is None:  # stopped as it started
            return
        if self.deadlines is not None:
            self.deadlines.add(self, self.deadline_after)
        transport.begin()

    def cancelTimeout(self):
        super().cancelTimeout()
        if self.deadlines is not None:
            self.deadlines.discard(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        # The transport and its connector refer to each other: a cycle that left every
        # ended connection (and its conversation) to the garbage collector.
        self.transport = None


class Deadlines:
    """The timeouts of connection attempts, checked by one timed call a second rather
    than a timed call per attempt (2.4 us to set and cancel, for nearly every one): an
    attempt fails between `seconds` and a second more after it started."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.pending = {}  # connector: when its attempt fails
        self._sweep_call = None

    def add(self, connector, seconds):
        self.pending[connector] = self.reactor.seconds() + seconds
        if self._sweep_call is None:
            self._sweep_call = self.reactor.callLater(1, self._sweep)

    def discard(self, connector):
        self.pending.pop(connector, None)

    def _sweep(self):
        self._sweep_call = None
        now = self.reactor.seconds()
        try:
            for connector in [c for c, deadline in self.pending.items() if deadline <= now]:
                del self.pending[connector]
                connector.transport.failIfNotConnected(error.TimeoutError())
        finally:
            # An attempt made meanwhile (by a failure's callback) may have asked already.
            if self.pending and self._sweep_call is None:
                self._sweep_call = self.reactor.callLater(1, self._sweep)


class _Connecting(ClientFactory):
    """One connection attempt of an AtOnceEndpoint: `factory`'s protocol is the transport's
    own (no wrapper in between), and `connected` fires with it or fails."""

    noisy = False

    def __init__(self, factory, connected):
        self.factory = factory
        self.connected = connected

    def take(self):
        """The Deferred, if it has not fired yet, let go of: it refers to the connector
        (its canceller does), which refers to this, a cycle that would keep every ended
        connection for the garbage collector."""
        connected, self.connected = self.connected, None
        return connected

    def buildProtocol(self, addr):
        # Called once the TCP connection is up, just before the protocol is connected to it.
        connected = self.take()
        if connected is None:  # cancelled meanwhile
            return None
        # Nor is the factory needed again: the connector holds this, the transport holds
        # the connector, and the protocol's factory usually leads back to the transport.
        factory, self.factory = self.factory, None
        try:
            protocol = factory.buildProtocol(addr)
        except BaseException:
            connected.errback()
            return None
        connected.callback(protocol)
        return protocol

    def clientConnectionFailed(self, connector, reason):
        # A cancelled attempt has failed already (cancel took the Deferred): stopConnecting
        # reports it here again.
        connected = self.take()
        if connected is not None:
            connected.errback(reason)


@implementer(IStreamClientEndpoint)
class AtOnceEndpoint:
    """A TCP endpoint for an address (nothing to resolve) whose connections may send at
    once.  Unlike Twisted's TCP endpoints it puts no wrapping protocol between the
    transport and the protocol (one Python call less per read, and a few microseconds
    less per connection), so its Deferred fires as the protocol is built, just before
    it is connected; a memory reactor (tests) is asked to connect as before."""

    def __init__(self, reactor, host, port, timeout=30):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.deadlines = Deadlines(reactor)

    def connect(self, factory):
        connector = None

        def cancel(d):
            attempt.take()
            d.errback(error.ConnectingCancelledError(connector.getDestination()))
            connector.stopConnecting()

        connected = Deferred(cancel)
        attempt = _Connecting(factory, connected)
        connector = connect_tcp(self.reactor, self.host, self.port, attempt, timeout=self.timeout,
                                deadlines=self.deadlines)
        return connected


def accepts_at_once(port):
    """Let the connections a listening `port` accepts from now on send at once, if their
    protocol asks: a plain TCP port's (TLS ones, through tcp.Port too, keep theirs)."""
    if type(port) is tcp.Port and port.transport is tcp.Server:
        port.transport = AtOnceServer


def connect_tcp(reactor, host, port, factory, tls=None, timeout=30, deadlines=None):
    """reactor.connectTCP, or connectSSL with the client TLS options `tls`, through an
    AtOnceConnector (whose connections may send at once, or at the turn's end; its timeout
    kept by `deadlines` when given); a memory reactor (tests) is asked to connect as before."""
    if not isinstance(reactor, PosixReactorBase):
        if tls is None:
            return reactor.connectTCP(host, port, factory, timeout)
        return reactor.connectSSL(host, port, factory, tls, timeout)
    if tls is not None:  # what connectSSL does: TLS as a protocol over the TCP connection
        factory = TLSMemoryBIOFactory(tls, True, factory)
    connector = AtOnceConnector(host, port, factory, timeout, None, reactor, deadlines)
    connector.connect()
    return connector


def send_at_turn_end(transport):
    """Ask `transport` to send what each turn of the reactor wrote to it once that turn's
    events are handled, if it and the reactor can (else it goes on as before)."""
    if isinstance(transport, TLSMemoryBIOProtocol):  # TLS over ours: its records are what is sent
        transport = transport.transport
    if isinstance(transport, SendsAtTurnEnd):
        transport.after_events = getattr(transport.reactor, "call_after_events", None)


def send_at_once(transport):
    """Ask `transport` to send each write at once when its buffer is empty, and what
    Twisted would leave for a later turn (the rest of a partial send, a close) at the
    turn's end, if it can (a TLS connection, or one made elsewhere, goes on as before)."""
    if isinstance(transport, SendsAtOnce):
        transport.at_once = True
        send_at_turn_end(transport)
