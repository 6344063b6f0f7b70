"""The router: the protocol every connection starts with.

It reads the first request head (bounded), decides by Host what the connection is, and
hands the open transport, with every byte read so far, to the protocol that serves it:
the tunnel's WebSocket for `/create-tpot` on the bare domain, a visitor relay for
`NAME.DOMAIN`, an error response for anything else.
"""

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from tpot.control import check_create_request
from tpot.head import HeadError, HeadReader
from tpot.registry import NameTaken, RegistryFull
from tpot.relay import VisitorProtocol
from tpot.responses import error_response

HEADER_TIMEOUT = 10.0
CONTROL = "control"


def route(host, domain):
    """CONTROL for the bare domain, the tunnel name for NAME.DOMAIN, None otherwise."""
    if host == domain:
        return CONTROL
    name, dot, parent = host.partition(".")
    if dot and parent == domain and name:
        return name
    return None


class RouterProtocol(Protocol):
    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self._reader = HeadReader()
        self._timeout = None
        self._gone = False

    def connectionMade(self):
        self._timeout = self.factory.clock.callLater(self.factory.header_timeout, self._too_slow)

    def dataReceived(self, data):
        try:
            head = self._reader.feed(data)
        except HeadError as error:
            self.refuse(error.status, error.reason)
            return
        if head is not None:
            self._cancel_timeout()
            self.transport.pauseProducing()
            d = defer.maybeDeferred(self._dispatch, head)
            d.addErrback(self._refuse_failure)

    def connectionLost(self, reason=None):
        self._gone = True
        self._cancel_timeout()

    def _dispatch(self, head):
        target = route(head.host, self.factory.domain)
        if target is None:
            raise HeadError(404, f"No tunnel is served at {head.host or 'this address'}.")
        if target == CONTROL:
            return self._create_tunnel(head)
        return self.factory.registry.lookup(target).addCallback(self._visit, target)

    @defer.inlineCallbacks
    def _create_tunnel(self, head):
        requested = check_create_request(head)
        yield self.factory.authenticator.check(head.header("authorization"))
        try:
            name = yield self.factory.registry.claim(requested)
        except NameTaken:
            raise HeadError(409, f"The subdomain {requested} is already in use.") from None
        except RegistryFull:
            raise HeadError(503, "This server has reached its tunnel limit.") from None
        if self._gone:
            self.factory.registry.release(name)
            return
        peer = self.transport.getPeer()
        self._hand_over(self.factory.tunnels.build_tunnel(name, peer))

    def _visit(self, tunnel, name):
        if tunnel is None:
            raise HeadError(503, f"Tunnel {name} is not connected.")
        if not self._gone:
            self._hand_over(VisitorProtocol(tunnel))

    def _hand_over(self, protocol):
        """Give the live transport to `protocol` and replay what was read (as Autobahn's resource does)."""
        transport = self.transport
        # Resume first: the new protocol may pause reading itself (a visitor of a backed-up
        # tunnel), and no bytes can arrive before this call returns.
        transport.resumeProducing()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(self._reader.buffered)
        self._reader = None

    def _refuse_failure(self, failure):
        if failure.check(HeadError):
            self.refuse(failure.value.status, failure.value.reason)
            return
        self.log.failure("routing a request failed", failure)
        self.refuse(500, "The server failed to route this request.")

    def refuse(self, status, reason):
        self._cancel_timeout()
        self.log.info("refused {status}: {reason}", status=status, reason=reason)
        if not self._gone:
            extra = [("Allow", "GET")] if status == 405 else []
            if status == 401:
                extra.append(("WWW-Authenticate", "TPoT-1"))
            self.transport.write(error_response(status, reason, extra))
            self.transport.loseConnection()

    def _too_slow(self):
        self._timeout = None
        self.refuse(408, "The request head did not arrive in time.")

    def _cancel_timeout(self):
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None


class RouterFactory(Factory):
    """Shared state for every connection on the listening port(s)."""

    def __init__(self, domain, registry, authenticator, tunnels, clock, header_timeout=HEADER_TIMEOUT):
        self.domain = domain
        self.registry = registry
        self.authenticator = authenticator
        self.tunnels = tunnels
        self.clock = clock
        self.header_timeout = header_timeout

    def buildProtocol(self, addr):
        return RouterProtocol(self)
