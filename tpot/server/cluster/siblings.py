"""Workers of one machine (`--workers N`) hand each other visitor connections whole.

A visitor that reaches worker B for a tunnel held by worker A, on the same machine, would
cost a splice through the peer port on every byte; instead B sends A the connection's
file descriptor (SCM_RIGHTS over a UNIX socket, `sendFileDescriptor`), with the visitor's
address and the bytes B read, and forgets it without closing the TCP connection.  A adopts
it (`adoptStreamConnection`) and serves it as if it had arrived there, as for a peer hop:
afterwards the connection costs B nothing.

Each worker listens on `DIR/N.sock`, where DIR is a directory only this user can enter,
made by worker 0 (`make_worker_directory`) and given to the others (`--worker-dir`).  What crosses the socket is a frame per connection
(`encode`, `FrameReader`, which do no I/O) and one acknowledging byte back, upon which B closes its
copy of the descriptor.  B falls back to the peer port whenever the hand-over cannot be
made (no such worker listening, a TLS visitor connection).
"""

import os
import socket
import struct
import tempfile
from collections import deque

from twisted.internet import defer
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from tpot.server.cluster.peers import plain_tcp
from tpot.server.router import RouterProtocol

ACK = b"\x06"
_HEAD = struct.Struct("!HHI")  # host length, port, buffered length
# What a frame may carry: the router reads at most one request head (8 KiB) and what came
# with it in the same reads before it routes.
MAX_BUFFERED = 1 << 20
MAX_HOST = 64
CONNECT_TIMEOUT = 5.0


class BadFrame(Exception):
    """A frame no worker of ours sends; the sibling connection is closed."""


def encode(host, port, buffered):
    """The frame that goes with a handed-over connection's descriptor."""
    name = host.encode("ascii")
    return _HEAD.pack(len(name), port, len(buffered)) + name + buffered


class FrameReader:
    """Frames off the front of a sibling connection's bytes."""

    def __init__(self):
        self._buffer = b""

    def feed(self, data):
        """The (host, port, buffered) of every whole frame so far; BadFrame if one is wrong."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= _HEAD.size:
            host_length, port, length = _HEAD.unpack_from(self._buffer)
            if host_length > MAX_HOST or length > MAX_BUFFERED:
                raise BadFrame(f"a frame of {host_length}/{length} bytes")
            end = _HEAD.size + host_length + length
            if len(self._buffer) < end:
                break
            host = self._buffer[_HEAD.size:_HEAD.size + host_length].decode("ascii", "replace")
            frames.append((host, port, self._buffer[_HEAD.size + host_length:end]))
            self._buffer = self._buffer[end:]
        return frames


def make_worker_directory():
    """A new directory only this user may enter (mkdtemp), for the workers' sockets."""
    return tempfile.mkdtemp(prefix="tpot-workers-")


def remove_worker_directory(path):
    """`path` and the sockets left in it (best effort: it is in the temporary directory)."""
    for entry in os.listdir(path) if os.path.isdir(path) else ():
        if entry.endswith(".sock"):
            try:
                os.unlink(os.path.join(path, entry))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def remove_orphaned_directory(path):
    """What a worker whose worker 0 was killed leaves: worker 0's stale socket, and the
    directory once the last worker's socket has gone with it (best effort)."""
    for leftover in (socket_path(path, 0), path):
        try:
            (os.rmdir if leftover == path else os.unlink)(leftover)
        except OSError:
            pass


def socket_path(directory, index):
    return os.path.join(directory, f"{index}.sock")


@implementer(IFileDescriptorReceiver)
class SiblingServerProtocol(Protocol):
    """A's end: adopts each descriptor with its frame."""

    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.reader = FrameReader()
        self.descriptors = deque()

    def fileDescriptorReceived(self, descriptor):
        self.descriptors.append(descriptor)

    def dataReceived(self, data):
        try:
            frames = self.reader.feed(data)
            for host, port, buffered in frames:
                if not self.descriptors:
                    raise BadFrame("a frame without a descriptor")
                self._adopt(self.descriptors.popleft(), host, port, buffered)
                self.transport.write(ACK)
        except BadFrame as error:
            self.log.warn("closed a worker's connection: {error}", error=error)
            self.transport.loseConnection()

    def _adopt(self, descriptor, host, port, buffered):
        # One connection that cannot be adopted (its visitor reset it meanwhile, no file
        # descriptor left) costs that connection only, not those queued behind it.
        try:
            self.factory.adopt(descriptor, host, port, buffered)
        except Exception as error:
            self.log.warn("could not take over a visitor connection from another worker: {error}", error=error)

    def connectionLost(self, reason=None):
        while self.descriptors:
            os.close(self.descriptors.popleft())


class _Adopting(Factory):
    """Builds the router for one adopted connection, with the address B vouches for."""

    noisy = False  # one per connection: no "Starting factory" line for each

    def __init__(self, router, address):
        self.router = router
        self.address = address
        self.built = None

    def buildProtocol(self, addr):
        self.built = RouterProtocol(self.router, hop=self.address)
        return self.built


class SiblingListenFactory(Factory):
    """The factory of this worker's UNIX socket; `router` is its RouterFactory."""

    noisy = False  # an internal socket: nothing a person acts on

    def __init__(self, router, reactor):
        self.router = router
        self.reactor = reactor

    def buildProtocol(self, addr):
        return SiblingServerProtocol(self)

    def adopt(self, descriptor, host, port, buffered):
        try:
            with socket.socket(fileno=os.dup(descriptor)) as probe:
                family = probe.family
            adopting = _Adopting(self.router, (host, port))
            self.reactor.adoptStreamConnection(descriptor, family, adopting)
        finally:
            os.close(descriptor)  # the reactor has a copy of its own
        self.router.stats.forwarded_in += 1
        self.router.stats.workers_in += 1
        if buffered:
            adopting.built.dataReceived(buffered)


class _SiblingClient(Protocol):
    """B's end of the connection to one sibling: closes each sent descriptor's copy on its ACK."""

    def __init__(self, siblings, index):
        self.siblings = siblings
        self.index = index
        self.pending = deque()  # descriptors sent, not yet adopted

    def connectionMade(self):
        self.siblings.connected(self.index, self)

    def dataReceived(self, data):
        for _ in range(data.count(ACK)):
            if self.pending:
                os.close(self.pending.popleft())

    def connectionLost(self, reason=None):
        while self.pending:
            os.close(self.pending.popleft())
        self.siblings.lost(self.index, self, reason)

    def send(self, descriptor, frame):
        self.pending.append(descriptor)
        self.transport.sendFileDescriptor(descriptor)
        self.transport.write(frame)


class _SiblingClientFactory(ClientFactory):
    def __init__(self, siblings, index):
        self.siblings = siblings
        self.index = index

    def buildProtocol(self, addr):
        return _SiblingClient(self.siblings, self.index)

    def clientConnectionFailed(self, connector, reason):
        self.siblings.lost(self.index, None, reason)


class Siblings:
    """B's side: which routes a sibling worker serves, and handing connections to it.

    `base` is the node id the workers' ids are made of (NODE-wN), `index` this worker's.
    One UNIX connection per sibling, made when first needed and kept."""

    log = Logger()

    def __init__(self, reactor, directory, base, index, count):
        self.reactor = reactor
        self.directory = directory
        self.base = base
        self.index = index
        self.count = count
        self._clients = {}  # index -> a connected _SiblingClient, or the Deferreds waiting for one

    def worker_of(self, route):
        """The index of the sibling worker serving `route`, or None (another machine's node)."""
        prefix = f"{self.base}-w"
        if not route.node.startswith(prefix) or not route.node[len(prefix):].isdigit():
            return None
        index = int(route.node[len(prefix):])
        return index if index != self.index and index < self.count else None

    @defer.inlineCallbacks
    def hand_over(self, transport, address, buffered, index):
        """Give the visitor connection of `transport` to worker `index`; False if it
        cannot be (the caller goes through the peer port instead)."""
        connection = plain_tcp(transport)
        try:
            frame = encode(address[0], address[1], buffered)
        except (UnicodeEncodeError, struct.error):
            return False
        if connection is None or len(address[0]) > MAX_HOST or len(buffered) > MAX_BUFFERED:
            return False
        try:
            client = yield self._client(index)
        except Exception as error:
            self.log.warn("cannot reach worker {index}: {error}", index=index, error=error)
            return False
        if not connection.connected or connection.disconnecting:
            return True  # the visitor went meanwhile: nothing to hand over
        client.send(os.dup(connection.fileno()), frame)
        # Forget the connection here without ending it: worker `index` holds it now.
        connection._shouldShutdown = False
        connection.loseConnection()
        return True

    def _client(self, index):
        state = self._clients.get(index)
        if isinstance(state, _SiblingClient):
            return defer.succeed(state)
        waiting = defer.Deferred()
        if state is None:
            state = self._clients[index] = []
            self.reactor.connectUNIX(socket_path(self.directory, index), _SiblingClientFactory(self, index),
                                     timeout=CONNECT_TIMEOUT)
        state.append(waiting)
        return waiting

    def connected(self, index, client):
        waiting, self._clients[index] = self._clients.get(index) or [], client
        for d in waiting:
            d.callback(client)

    def lost(self, index, client, reason):
        state = self._clients.get(index)
        if state is None or (client is not None and state is not client):
            return
        del self._clients[index]
        for d in state if isinstance(state, list) else ():
            d.errback(reason)
