"""Giving an open connection to the protocol that serves it, after reading its first bytes.

The router reads a request head, the peer port a handshake (tpot.server.cluster.peers);
then the transport goes, with every byte read so far, to the protocol that serves it, as
Autobahn's resource does for a WebSocket.  The first protocol stays the transport's
protocol, as a thin forwarder, so it sees the connection end.
"""

from twisted.internet.protocol import Protocol


class HandsOver(Protocol):
    _next = None

    def hand_over(self, protocol, buffered):
        transport = self.transport
        # Resume first: the new protocol may pause reading itself (a visitor of a backed-up
        # tunnel), and no bytes can arrive before this call returns.
        transport.resumeProducing()
        self._next = protocol
        # The reactor calls transport.protocol.dataReceived: go straight to the new one, or,
        # if it hands over again later (a router after a peer handshake), follow it there.
        if isinstance(protocol, HandsOver):
            self.dataReceived = lambda data: protocol.dataReceived(data)
        else:
            self.dataReceived = protocol.dataReceived
        protocol.makeConnection(transport)
        protocol.dataReceived(buffered)

    def connectionLost(self, reason=None):
        if self._next is not None:
            self._next.connectionLost(reason)
