"""The peer port: visitors of one node handed to the node that holds their tunnel.

Node B, which a visitor reached, finds in Redis that the tunnel is on node A.  B dials
A's peer port (`PeerDialer.open`), both prove the cluster secret (tpot.server.cluster.hop),
and B's visitor connection is spliced to that connection (`Splice`): the bytes B read
first, then raw both ways, each socket the producer of the other, as in Twisted's
portforward, so that a slow reader on either side stops the reading of the other and
nothing is buffered beyond the sockets' own limits.  On A (`PeerListenFactory`), the
connection is handed to the router as if the visitor had arrived there, with the address
B vouches for: the same tunnel code serves it.
"""

from twisted.internet import defer, tcp
from twisted.internet.abstract import isIPAddress as isIPv4Address, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol

from tpot.http.addresses import format_address, plain_address
from tpot.protocol.flow import no_delay
from tpot.server.cluster import hop
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
            visitor = hop.read_hop(self.factory.secret, self.nonce, line)
        except hop.PeerRefused as refusal:
            self._refuse(str(refusal))
            return
        self._timeout.cancel()
        self.transport.write(hop.ok_line(self.factory.secret, self.nonce, visitor))
        self.factory.stats.forwarded_in += 1
        no_delay(self.transport)
        router = RouterProtocol(self.factory.router, hop=(visitor.host, visitor.port))
        self.hand_over(router, self.reader.buffered)

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

    def __init__(self, secret, router, clock):
        self.secret = secret
        self.router = router
        self.stats = router.stats
        self.clock = clock

    def buildProtocol(self, addr):
        return PeerServerProtocol(self)


class PeerClientProtocol(Protocol):
    """B's end of a peer connection: answers the challenge, checks A's proof; `ready`
    fires with this protocol once A has proved the secret."""

    def __init__(self, secret, visitor, clock):
        self.secret = secret
        self.visitor = visitor  # the hop.Hop B vouches for
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
                self.transport.write(hop.hop_line(self.secret, self._their_nonce, self.visitor))
                continue
            hop.read_ok(self.secret, self._their_nonce, self.visitor, line)
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

    def open(self, route, address):
        """A Deferred PeerClientProtocol connected to the node of `route`, both sides
        proved, for the visitor at `address`; fails with hop.PeerRefused or a connection error."""
        try:
            host, port = hop.read_signed_address(self.secret, route.node, route.address)
        except (hop.PeerRefused, ValueError) as error:
            return defer.fail(error)
        visitor = hop.Hop(self.node, address[0], address[1], hop.new_nonce())
        protocol = PeerClientProtocol(self.secret, visitor, self.reactor)
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
