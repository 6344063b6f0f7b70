"""The peer port: visitors of one node handed to the node that holds their tunnel.

Node B, which a visitor reached, finds in Redis that the tunnel is on node A.  B keeps one
link to A (`PeerDialer.link`, tpot.server.cluster.links): a connection to A's peer port on
which both proved the cluster secret once (tpot.server.cluster.hop), carrying a
conversation per visitor, so that a visitor connection costs neither node a connection of
its own.  A visitor that cannot take a link (a `tpot connect` to a TCP tunnel, a link
full) takes a hop of its own instead (`PeerDialer.open`): B's visitor connection is
spliced to a new peer connection (`Splice`), the bytes B read first, then raw both ways,
each socket the producer of the other, as in Twisted's portforward, so that a slow reader
on either side stops the reading of the other and nothing is buffered beyond the
sockets' own limits.  On A (`PeerListenFactory`), such a connection is handed to the
router as if the visitor had arrived there, with the address B vouches for: the same
tunnel code serves it.
"""

from twisted.internet import defer, tcp
from twisted.internet.abstract import isIPAddress as isIPv4Address, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol

from tpot.http.addresses import format_address, plain_address
from tpot.protocol.flow import MAX_SERVER_UNACKED_BYTES, UnackedBudget, no_delay
from tpot.server.cluster import hop
from tpot.server.cluster.links import LinkClient, LinkedTunnel, LinkServer
from tpot.server.handover import HandsOver
from tpot.server.router import RouterProtocol

HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


class PeerServerProtocol(HandsOver):
    """A's end of a peer connection: the challenge, B's proof, then the router."""

    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.nonce = hop.new_nonce()
        self.reader = hop.LineReader()
        self._timeout = None

    def connectionMade(self):
        self.transport.write(hop.challenge(self.nonce))
        self._timeout = self.factory.clock.callLater(HANDSHAKE_TIMEOUT, self._refuse, "no handshake in time")

    def dataReceived(self, data):
        try:
            line = self.reader.feed(data)
            if line is None:
                return
            read = hop.read_link if hop.is_link(line) else hop.read_hop
            asked = read(self.factory.secret, self.nonce, line)
        except hop.PeerRefused as refusal:
            self._refuse(str(refusal))
            return
        self._timeout.cancel()
        self.transport.write(hop.ok_line(self.factory.secret, self.nonce, asked))
        no_delay(self.transport)
        if isinstance(asked, hop.Link):
            served = LinkServer(self.factory.router, asked.node, self.factory.clock)
        else:
            self.factory.stats.forwarded_in += 1
            served = RouterProtocol(self.factory.router, hop=(asked.host, asked.port))
        self.hand_over(served, self.reader.buffered)

    def connectionLost(self, reason=None):
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        super().connectionLost(reason)

    def _refuse(self, reason):
        peer = self.transport.getPeer()
        self.log.warn("refused a connection to the peer port from {peer}: {reason}",
                      peer=format_address((plain_address(getattr(peer, "host", "")), getattr(peer, "port", 0))),
                      reason=reason)
        self.transport.abortConnection()


class PeerListenFactory(Factory):
    """The peer port's factory; `router` is the node's RouterFactory."""

    noisy = False  # the start-up line (tpot.server.startup) says where it listens

    def __init__(self, secret, router, clock):
        self.secret = secret
        self.router = router
        self.stats = router.stats
        self.clock = clock

    def buildProtocol(self, addr):
        return PeerServerProtocol(self)


class PeerClientProtocol(HandsOver):
    """B's end of a peer connection: answers the challenge, checks A's proof; `ready`
    fires with this protocol once A has proved the secret.  `asked` is the hop.Hop (a
    visitor spliced to this connection) or the hop.Link (a link's frames follow) B asks for."""

    def __init__(self, secret, asked, clock):
        self.secret = secret
        self.asked = asked
        self.clock = clock
        self.reader = hop.LineReader()
        self.ready = defer.Deferred()
        self.splice = None
        self.early = b""  # what A sent after its OK, before the splice was there
        self._their_nonce = None
        self._timeout = None

    def connectionMade(self):
        no_delay(self.transport)
        self._timeout = self.clock.callLater(HANDSHAKE_TIMEOUT, self._fail, hop.PeerRefused("no handshake in time"))

    def dataReceived(self, data):
        if self.ready is None:
            if self.splice is None:
                self.early += data
            else:
                send_now(self.splice.transport, data)
            return
        try:
            self._handshake(data)
        except hop.PeerRefused as refusal:
            self._fail(refusal)

    def _handshake(self, data):
        while self.ready is not None:
            line = self.reader.feed(data)
            data = b""
            if line is None:
                return
            if self._their_nonce is None:
                self._their_nonce = hop.read_challenge(line)
                answer = hop.link_line if isinstance(self.asked, hop.Link) else hop.hop_line
                self.transport.write(answer(self.secret, self._their_nonce, self.asked))
                continue
            hop.read_ok(self.secret, self._their_nonce, self.asked, line)
            self._timeout.cancel()
            ready, self.ready = self.ready, None
            self.early = self.reader.buffered
            ready.callback(self)

    def connectionLost(self, reason=None):
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self.ready is not None:
            ready, self.ready = self.ready, None
            ready.errback(hop.PeerRefused("the node closed the connection during the handshake"))
        elif self.splice is not None:
            self.splice.peer_gone()
        super().connectionLost(reason)

    def _fail(self, error):
        if self.ready is not None:
            ready, self.ready = self.ready, None
            self.transport.abortConnection()
            ready.errback(error)


class Splice(Protocol):
    """The visitor's connection on B, joined to a peer connection to A."""

    def __init__(self, peer, dialer, lease):
        self.peer = peer
        self.dialer = dialer
        self.lease = lease

    def connectionMade(self):
        self.peer.splice = self
        self.dialer.count(self.lease, 1)
        self.dialer.stats.forwarded_out += 1
        no_delay(self.transport)
        # Each side stops reading while the other's send buffer is full.
        self.transport.registerProducer(self.peer.transport, True)
        self.peer.transport.registerProducer(self.transport, True)
        early, self.peer.early = self.peer.early, b""
        if early:
            self.transport.write(early)

    def dataReceived(self, data):
        send_now(self.peer.transport, data)

    def connectionLost(self, reason=None):
        self.dialer.count(self.lease, -1)
        # A transport whose registered producer is paused resumes it instead of closing:
        # unregister first, so that the close happens once the buffer is written.
        self.peer.transport.unregisterProducer()
        self.peer.transport.loseConnection()
        self.peer.splice = None

    def peer_gone(self):
        self.transport.unregisterProducer()
        self.transport.loseConnection()


def plain_tcp(transport):
    """The plain TCP connection `transport` writes to unchanged (through PROXY protocol
    wrappers, which pass writes on as they are), or None: TLS, at any layer, or a transport
    that is not TCP.  Wrappers pass unknown attributes through, so each layer is checked."""
    while not isinstance(transport, tcp.Connection):
        if isinstance(transport, TLSMemoryBIOProtocol) or not isinstance(transport, ProtocolWrapper):
            return None
        transport = transport.transport
    return None if getattr(transport, "TLS", False) else transport


def send_now(transport, data):
    """transport.write(data), but what the socket takes at once is sent at once when nothing
    is queued before it.  Twisted queues every write for the next reactor turn, asking epoll
    to watch the socket for writing and then to stop: two system calls for each read the
    splice relays, most of what a forwarded request costs node B.  Only for plain TCP
    (`plain_tcp`); anything else, and whatever the socket does not take, goes through
    transport.write, which keeps the producer's pause and the errors."""
    connection = plain_tcp(transport)
    if (connection is not None and not connection.dataBuffer and not connection._tempDataBuffer
            and connection.connected and not connection.disconnecting):
        sock = connection.socket
        try:
            sent = sock.send(data)
        except OSError:  # full (EAGAIN), or broken: Twisted's own write deals with it
            sent = 0
        data = data[sent:]
        if not data:
            return
    transport.write(data)


class _OneConnection(Factory):
    """The factory of one peer connection.  Not connectProtocol's: that makes a class for
    every call and logs "Starting factory" and "Stopping factory" for every connection (two
    log lines per forwarded visitor; an eighth of node B's CPU per new connection)."""

    noisy = False

    def __init__(self, protocol):
        self.protocol_ = protocol

    def buildProtocol(self, addr):
        return self.protocol_


class PeerDialer:
    """Opens peer connections from this node (`node`) to the nodes of remote routes."""

    log = Logger()

    def __init__(self, secret, node, reactor, stats):
        self.secret = secret
        self.node = node
        self.reactor = reactor
        self.stats = stats
        # Visitor connections of this node relayed to others now, by the lease of their tunnel.
        self._per_lease = {}
        # This node's links to others, by (node, host, port); those being dialed, with the
        # Deferreds of the visitors that wait for them.
        self._links = {}
        self._dialing = {}
        # What other nodes sent over all of this node's links for paused visitors.
        self.unacked = UnackedBudget(MAX_SERVER_UNACKED_BYTES, "node's links")

    def open(self, route, address):
        """A Deferred PeerClientProtocol connected to the node of `route`, both sides
        proved, for the visitor at `address`; fails with hop.PeerRefused or a connection error."""
        try:
            host, port = self._address(route)
        except (hop.PeerRefused, ValueError) as error:
            return defer.fail(error)
        return self._dial(host, port, hop.Hop(self.node, address[0], address[1], hop.new_nonce()))

    def link(self, route):
        """A Deferred LinkedTunnel: the tunnel of `route`, over this node's link to the node
        that holds it, dialed and proved first if there is none yet; None when that link
        carries as many conversations as it can (the visitor then takes a hop of its own).
        Fails as `open` does."""
        try:
            host, port = self._address(route)
        except (hop.PeerRefused, ValueError) as error:
            return defer.fail(error)
        key = (route.node, host, port)
        client = self._links.get(key)
        if client is not None:
            return defer.succeed(self._tunnel(client, route))
        waiting = self._dialing.get(key)
        if waiting is None:
            waiting = self._dialing[key] = []
            self._dial(host, port, hop.Link(self.node, hop.new_nonce())).addBoth(self._linked, key)
        linked = defer.Deferred()
        waiting.append(linked)
        return linked.addCallback(self._tunnel, route)

    def _tunnel(self, client, route):
        return LinkedTunnel(client, route, self) if client.has_room() else None

    def _linked(self, result, key):
        # Every visitor that waited for this link's handshake goes on, or gets its 503.
        waiting = self._dialing.pop(key)
        if not isinstance(result, Failure):
            client = LinkClient(self, key, self.reactor)
            self._links[key] = client
            result.hand_over(client, result.early)
            result = client
        for linked in waiting:
            (linked.errback if isinstance(result, Failure) else linked.callback)(result)

    def link_lost(self, client):
        if self._links.get(client.key) is client:
            del self._links[client.key]

    def _address(self, route):
        return hop.read_signed_address(self.secret, route.node, route.address)

    def _dial(self, host, port, asked):
        protocol = PeerClientProtocol(self.secret, asked, self.reactor)
        return self._endpoint(host, port).connect(_OneConnection(protocol)).addCallback(lambda _: protocol.ready)

    def _endpoint(self, host, port):
        # An address (a pod IP, as nodes usually advertise) needs no resolution: a
        # HostnameEndpoint would still ask a resolver thread, for most of a hop's CPU.
        if isIPv4Address(host):
            return TCP4ClientEndpoint(self.reactor, host, port, timeout=CONNECT_TIMEOUT)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(self.reactor, host, port, timeout=CONNECT_TIMEOUT)
        return HostnameEndpoint(self.reactor, host, port, timeout=CONNECT_TIMEOUT)

    def splice(self, peer, route):
        """The protocol to give the visitor's connection to, joined to `peer` (opened for `route`)."""
        return Splice(peer, self, route.lease)

    def count(self, lease, change):
        count = self._per_lease.get(lease, 0) + change
        if count > 0:
            self._per_lease[lease] = count
        else:
            self._per_lease.pop(lease, None)

    def forwarded_to(self, lease):
        """Visitor connections of this node relayed to the tunnel of `lease` now."""
        return self._per_lease.get(lease, 0)

    def active_conversations(self):
        """Visitor connections relayed to other nodes now: a drain waits for them too."""
        return sum(self._per_lease.values())
