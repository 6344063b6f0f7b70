"""The router: the protocol every connection starts with.

It reads the first request head (bounded), decides by Host what the connection is, and
hands the open transport, with every byte read so far, to the protocol that serves it:
the tunnel's WebSocket for `/create-tpot` on the bare domain, a connection to a TCP
tunnel for `/connect-tpot` there, a visitor relay for `NAME.DOMAIN`, an error response for
anything else.
"""

import math

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from tpot.http.addresses import address_in, forwarded_client, plain_address
from tpot.http.head import HeadError, HeadReader
from tpot.http.responses import error_response
from tpot.protocol.codec import DOMAIN_HEADER, RECLAIM_HEADER, TCP
from tpot.protocol.names import RESERVED_NAMES
from tpot.server import endpoints
from tpot.server.balance import Balancer
from tpot.server.cluster.view import Standalone
from tpot.server.connect import ConnectFactory
from tpot.server.requests import (
    CONNECT_PATH,
    access_secret,
    check_connect_request,
    check_create_request,
    pool_key,
    requested_extensions,
)
from tpot.server.handover import HandsOver
from tpot.server.store import LocalRoute, NameTaken, RegistryFull, RegistryUnavailable, RemoteRoute
from tpot.server.visitor import VisitorProtocol

HEADER_TIMEOUT = 10.0
# Visitor connections with no traffic either way for this long are closed; generous, so
# that WebSockets and long polls through a tunnel survive.
IDLE_TIMEOUT = 3600.0
CONTROL = "control"
UNAVAILABLE = "The tunnel registry is unavailable; try again shortly."


def route(host, domain):
    """CONTROL for the bare domain, the tunnel name for NAME.DOMAIN, None otherwise."""
    if host == domain:
        return CONTROL
    name, dot, parent = host.partition(".")
    if dot and parent == domain and name:
        return name
    return None


def _name_taken(name, held_for):
    """The 409 for a name another tunnel holds, saying for how long when it is only kept for
    a dropped tunnel's client (Retry-After, which our client shows)."""
    if held_for is None:
        return HeadError(409, f"The subdomain {name} is already in use.")
    seconds = max(1, math.ceil(held_for))
    return HeadError(409, f"The subdomain {name} is kept for the client of a dropped tunnel for {seconds} s more.",
                     headers=[("Retry-After", str(seconds))])


class RouterProtocol(HandsOver):
    """Reads the first head, then stays the transport's protocol as a thin forwarder.

    Staying in place (rather than replacing `transport.protocol`) lets the factory see
    every connection end, which the per-address limit needs.  `hop` is the visitor's
    (host, port) on a connection another node of the cluster handed over
    (tpot.server.cluster.peers): that node counted it, and vouches for its address.
    """

    log = Logger()

    def __init__(self, factory, hop=None):
        self.factory = factory
        self.hop = hop
        self._reader = HeadReader()
        self._timeout = None
        self._gone = False
        self._counted = None  # the address this connection counts against, once known

    def connectionMade(self):
        if self.hop is not None:
            self.source = self.hop[0]
            self._timeout = self.factory.clock.callLater(self.factory.header_timeout, self._too_slow)
            return
        self.source = plain_address(getattr(self.transport.getPeer(), "host", ""))
        # A trusted proxy's connections count against the visitor it names, once the head says.
        if not self.factory.trusts(self.source) and not self._count(self.source):
            self.refuse(429, "Too many connections from your address.")
            return
        self._timeout = self.factory.clock.callLater(self.factory.header_timeout, self._too_slow)

    def dataReceived(self, data):
        try:
            head = self._reader.feed(data)
        except HeadError as error:
            self.refuse(error.status, error.reason)
            return
        if head is not None:
            self._cancel_timeout()
            d = defer.maybeDeferred(self._dispatch, head)
            d.addErrback(self._refuse_failure)
            if not d.called or d.paused:
                # Nothing is read until the route is known (and the visitor handed over); a
                # route found and taken at once (the in-process registry) needs no pause,
                # nor its two epoll_ctl.
                self.transport.pauseProducing()

    def connectionLost(self, reason=None):
        self._gone = True
        self._cancel_timeout()
        self._count(None)
        super().connectionLost(reason)

    def _dispatch(self, head):
        self._identify(head)
        target = route(head.host, self.factory.domain)
        if target is None:
            domain = self.factory.domain
            raise HeadError(404, f"No tunnel is served at {head.host or 'this address'}: this server serves"
                            f" {domain} and *.{domain}.", headers=[(DOMAIN_HEADER, domain)])
        if target == CONTROL:
            return self._control(head)
        self._refuse_while_draining()
        return self._lookup(target).addCallback(self._visit, target)

    def _lookup(self, name):
        """The route a new connection for `name` takes, None if there is none: one of its
        tunnels (tpot.server.balance); with the registry away, one of this node's."""
        if self.hop is not None:
            # Handed over by a node that found this one in the registry: a tunnel here
            # serves it, and one registry round trip per visitor connection is enough.
            return defer.succeed(self.factory.balancer.pick(self.factory.table.routes(name)))
        d = self.factory.store.lookup(name)

        def here(failure):
            failure.trap(RegistryUnavailable)
            return self.factory.table.routes(name)
        return d.addErrback(here).addCallback(self.factory.balancer.pick)

    def _identify(self, head):
        """Who this really is, now that a PROXY header (read before the head) or a trusted
        proxy's X-Forwarded-For can say; the per-address cap follows the real address."""
        if self.hop is not None:
            self.visitor_address = self.hop
            return
        self.visitor_address = self.factory.visitor_address(self.transport.getPeer(), head)
        self.source = self.visitor_address[0]
        if self.source != self._counted and not self._count(self.source):
            raise HeadError(429, "Too many connections from your address.")

    def _count(self, source):
        """Count this connection against `source` (None: against nobody) instead of the
        address it counted against so far; False if `source` is over the cap."""
        if self._counted is not None:
            self.factory.release(self._counted)
        self._counted = source
        return source is None or self.factory.admit(source)

    def _refuse_while_draining(self):
        if self.factory.draining:
            raise HeadError(503, "The server is restarting; try again in a moment.")

    def _control(self, head):
        response = endpoints.respond(head, self.factory)
        if response is None:
            start = self._connect if head.path == CONNECT_PATH else self._create_tunnel
            return start(head).addErrback(self._spend_credentials, head)
        self.transport.write(response)
        self.transport.loseConnection()

    def _spend_credentials(self, failure, head):
        # Refused before or after its check, a header is used up: captured, it must not
        # open another tunnel, or this one under another name, within its window.
        self.factory.authenticator.spend(head.header("authorization"))
        return failure

    @defer.inlineCallbacks
    def _create_tunnel(self, head):
        requested = check_create_request(head, self.factory.reserved_names)
        self._refuse_while_draining()
        yield self.factory.authenticator.check(head.header("authorization"), self.source)
        extensions = requested_extensions(head)
        secret = access_secret(head, extensions)
        pool = pool_key(head, extensions, requested, secret)
        try:
            claim = yield self.factory.store.claim(requested, head.header(RECLAIM_HEADER), pool)
        except NameTaken as taken:
            raise _name_taken(requested, taken.held_for) from None
        except RegistryFull:
            raise HeadError(503, "This server has reached its tunnel limit.") from None
        except RegistryUnavailable:
            raise HeadError(503, UNAVAILABLE) from None
        if self._gone:
            yield self.factory.store.release(claim.lease)
            return
        self._hand_over(self.factory.tunnels.build_tunnel(claim, extensions, secret, self.visitor_address))

    @defer.inlineCallbacks
    def _connect(self, head):
        name = check_connect_request(head)
        self._refuse_while_draining()
        route = yield self._lookup(name)
        if route is None:
            raise HeadError(503, f"Tunnel {name} is not connected.")
        if route.info.kind != TCP:
            raise HeadError(404, f"Tunnel {name} is not a TCP tunnel.")
        if isinstance(route, RemoteRoute):
            # Its node checks the proof, against the secret its tunnel holds.
            yield self._forward(route)
            return
        tunnel = self._local_tunnel(route, name)
        # Unlike /create-tpot, always: a TCP tunnel is for those who know its secret.
        proved = yield self.factory.authenticator.check_access(
            route.info.access_secret, head.header("authorization"), self.source, name
        )
        if not self._gone:
            self._hand_over(self.factory.connections.build_connection(
                tunnel, name, self.visitor_address, self.factory.idle_timeout, proved
            ))

    def _visit(self, route, name):
        if route is None:
            raise HeadError(503, f"Tunnel {name} is not connected.")
        if route.info.kind == TCP:
            raise HeadError(404, f"Tunnel {name} is a TCP tunnel; reach it with tpot connect {name}.")
        if isinstance(route, RemoteRoute):
            return self._forward(route, linked=True)
        tunnel = self._local_tunnel(route, name)
        if not self._gone:
            self._hand_over(self._visitor(tunnel))

    def _local_tunnel(self, route, name):
        """The live tunnel of `route` on this node; a 503 if there is none here."""
        tunnel = self.factory.table.get(route.lease) if isinstance(route, LocalRoute) else None
        if tunnel is None:
            raise HeadError(503, f"Tunnel {name} is not connected.")
        return tunnel

    @defer.inlineCallbacks
    def _forward(self, route, linked=False):
        """Hand the visitor to the node of `route`'s tunnel (tpot.server.cluster.peers):
        over this node's link to it when `linked` (an HTTP visitor), else on a connection
        of its own, spliced."""
        # A connection handed over already went one hop: the route changed on the way.
        if self.hop is not None or self.factory.peers is None:
            raise HeadError(503, f"Tunnel {route.name} is not connected.")
        siblings = self.factory.siblings
        worker = None if siblings is None else siblings.worker_of(route)
        if worker is not None:
            handed = yield siblings.hand_over(self.transport, self.visitor_address, self._reader.buffered, worker)
            if handed:
                self.factory.stats.forwarded_out += 1
                self.factory.stats.workers_out += 1
                return
        peers = self.factory.peers
        try:
            tunnel = (yield peers.link(route)) if linked else None
            peer = None if tunnel is not None else (yield peers.open(route, self.visitor_address))
        except Exception as error:
            self.log.warn("cannot reach node {node} for tunnel {name}: {error}",
                          node=route.node, name=route.name, error=error)
            raise HeadError(503, f"Tunnel {route.name} is on a node that cannot be reached now.") from None
        if self._gone:
            if peer is not None:
                peer.transport.loseConnection()
            return
        if tunnel is not None:
            self._hand_over(self._visitor(tunnel))
        else:
            self._hand_over(peers.splice(peer, route))

    def _visitor(self, tunnel):
        return VisitorProtocol(tunnel, self.factory.clock, self.factory.idle_timeout, self.factory.stats,
                               self.visitor_address)

    def _hand_over(self, protocol):
        buffered, self._reader = self._reader.buffered, None
        self.hand_over(protocol, buffered)

    def _refuse_failure(self, failure):
        if failure.check(HeadError):
            error = failure.value
            self.refuse(error.status, error.reason, error.headers)
            return
        self.log.failure("routing a request failed", failure)
        self.refuse(500, "The server failed to route this request.")

    def refuse(self, status, reason, headers=()):
        self._cancel_timeout()
        # A refusal that brings its own challenge (/metrics: Bearer) is not a tunnel's.
        challenged = any(name.lower() == "www-authenticate" for name, _ in headers)
        self.factory.stats.count_refusal(status, tunnel_auth=not challenged)
        self.log.info("refused {status}: {reason}", status=status, reason=reason)
        if not self._gone:
            extra = list(headers)
            if status == 405:
                extra.append(("Allow", "GET"))
            if status == 401 and not challenged:
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

    noisy = False  # the start-up line (tpot.server.startup) says where it listens

    def __init__(self, domain, store, table, authenticator, tunnels, clock,
                 header_timeout=HEADER_TIMEOUT, idle_timeout=IDLE_TIMEOUT, max_per_source=None,
                 stats=None, metrics_token=None, trusted_proxies=(), connections=None,
                 reserved_names=RESERVED_NAMES, peers=None, cluster=None, siblings=None):
        self.stats = tunnels.stats if stats is None else stats
        # What /api/status and /metrics say of the cluster (tpot.server.cluster.view).
        self.cluster = Standalone(table) if cluster is None else cluster
        # Hands visitors of tunnels on other nodes to them (tpot.server.cluster.peers.PeerDialer),
        # and to the other workers of this machine (tpot.server.cluster.siblings.Siblings).
        self.peers = peers
        self.siblings = siblings
        # Builds the protocols of /connect-tpot (tpot.server.connect.ConnectFactory).
        self.connections = ConnectFactory(clock) if connections is None else connections
        self.metrics_token = metrics_token
        self.trusted_proxies = tuple(trusted_proxies)
        self.reserved_names = reserved_names
        self.draining = False
        self.domain = domain
        self.store = store  # who holds which name (tpot.server.store.INameStore)
        self.table = table  # the live tunnels of this node (tpot.server.table.TunnelTable)
        self.authenticator = authenticator
        self.tunnels = tunnels
        self.clock = clock
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_per_source = max_per_source
        self.started = clock.seconds()
        self._per_source = {}
        self.balancer = Balancer(self._load)

    def buildProtocol(self, addr):
        return RouterProtocol(self)

    def visitor_address(self, peer, head):
        """(host, port) of the visitor: the peer, or what a trusted proxy in front reports."""
        host, port = plain_address(getattr(peer, "host", "")), getattr(peer, "port", 0)
        # Every X-Forwarded-For line is part of one list (RFC 9110, 5.3): a visitor's own
        # line before the proxy's cannot stand in for the entry the proxy appended.
        chain = ", ".join(head.header_values("x-forwarded-for"))
        forwarded = forwarded_client(host, chain, self.trusted_proxies)
        return (host, port) if forwarded is None else (forwarded, 0)

    def _load(self, route):
        """The open conversations this node counts for `route` (tpot.server.balance)."""
        if isinstance(route, RemoteRoute):
            return self.peers.forwarded_to(route.lease) if self.peers is not None else 0
        tunnel = self.table.get(route.lease)
        # A route whose tunnel is not here (yet, or any more) is the last choice.
        return len(tunnel.conversations) if tunnel is not None else float("inf")

    def trusts(self, source):
        return address_in(source, self.trusted_proxies)

    def uptime(self):
        return self.clock.seconds() - self.started

    def admit(self, source):
        """Count a new connection from `source`; False if it is over the per-address cap."""
        if self.max_per_source is None:
            return True
        count = self._per_source.get(source, 0) + 1
        self._per_source[source] = count
        return count <= self.max_per_source

    def release(self, source):
        if self.max_per_source is None:
            return
        count = self._per_source.pop(source, 1) - 1
        if count > 0:
            self._per_source[source] = count
