"""tpot.protocol.transports: a write sent at once when nothing waits, and what it relies on
in Twisted (TWISTED_NAMES) checked against the installed Twisted.

The transports run over a socketpair (no network) with a memory reactor, which records
whether the transport asked to be told when it may write (Twisted's buffered path).
"""

import importlib
import os
import socket
import time

import pytest
from twisted.internet import error, tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from tpot.protocol import eventloop
from tpot.protocol.transports import (
    TWISTED_NAMES,
    AtOnceEndpoint,
    AtOnceServer,
    Deadlines,
    accepts_at_once,
    send_at_once,
    send_at_turn_end,
)


@pytest.fixture
def pair():
    """(reactor, our end as an AtOnceServer, the peer's socket)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(1)
    reactor = MemoryReactorClock()
    transport = AtOnceServer(ours, Protocol(), ("127.0.0.1", 1), None, 1, reactor)
    yield reactor, transport, theirs
    ours.close()
    theirs.close()


def received(peer):
    peer.settimeout(0.2)
    try:
        return peer.recv(65536)
    except TimeoutError:
        return b""


def test_a_transport_asked_to_sends_before_write_returns(pair):
    reactor, transport, peer = pair
    send_at_once(transport)
    transport.write(b"hello")
    transport.writeSequence([b" ", b"world"])
    assert received(peer) == b"hello world"
    assert transport not in reactor.writers  # nothing was left for a reactor turn


def test_a_transport_not_asked_to_buffers_as_twisted_does(pair):
    reactor, transport, peer = pair
    transport.write(b"hello")
    assert received(peer) == b"" and transport in reactor.writers
    transport.doWrite()
    assert received(peer) == b"hello"


def test_a_write_after_buffered_bytes_waits_behind_them(pair):
    reactor, transport, peer = pair
    transport.write(b"first ")  # buffered: not yet asked
    send_at_once(transport)
    transport.write(b"second")
    assert received(peer) == b""
    transport.doWrite()
    assert received(peer) == b"first second"


@pytest.mark.parametrize("closing", ["loseConnection", "abortConnection"])
def test_nothing_is_sent_at_once_once_closing(pair, closing):
    # Either leaves the transport connected until a later reactor turn.
    reactor, transport, peer = pair
    send_at_once(transport)
    getattr(transport, closing)()
    transport.write(b"late")
    assert received(peer) == b""


def test_only_a_plain_tcp_port_accepts_at_once():
    reactor = MemoryReactor()
    plain = tcp.Port(0, Factory.forProtocol(Protocol), reactor=reactor)
    accepts_at_once(plain)
    assert plain.transport is AtOnceServer

    class OtherPort(tcp.Port):
        pass

    other = OtherPort(0, Factory.forProtocol(Protocol), reactor=reactor)
    accepts_at_once(other)
    assert other.transport is tcp.Server


def test_other_transports_are_left_alone():
    transport = StringTransport()
    send_at_once(transport)
    transport.write(b"x")
    assert transport.value() == b"x" and not hasattr(transport, "at_once")


def test_a_memory_reactor_is_asked_to_connect_as_before():
    reactor = MemoryReactor()
    connected = AtOnceEndpoint(reactor, "127.0.0.1", 80).connect(Factory.forProtocol(Protocol))
    host, port, attempt, timeout, _ = reactor.tcpClients[-1]
    assert (host, port, timeout) == ("127.0.0.1", 80, 30)
    protocol = attempt.buildProtocol(None)  # the connection is up: its protocol, unwrapped
    assert type(protocol) is Protocol and connected.result is protocol


def test_a_made_connection_holds_neither_its_deferred_nor_its_factory():
    # Both lead back to the connection: cycles the garbage collector would have to find.
    reactor = MemoryReactor()
    AtOnceEndpoint(reactor, "127.0.0.1", 80).connect(Factory.forProtocol(Protocol))
    attempt = reactor.tcpClients[-1][2]
    attempt.buildProtocol(None)
    assert attempt.connected is None and attempt.factory is None


def test_a_failed_attempt_fails_the_deferred():
    reactor = MemoryReactor()
    connected = AtOnceEndpoint(reactor, "127.0.0.1", 80).connect(Factory.forProtocol(Protocol))
    reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert connected.called and isinstance(connected.result, Failure)
    connected.addErrback(lambda _: None)


def test_a_cancelled_attempt_fails_once_and_builds_nothing():
    reactor = MemoryReactor()
    connected = AtOnceEndpoint(reactor, "127.0.0.1", 80).connect(Factory.forProtocol(Protocol))
    attempt = reactor.tcpClients[-1][2]
    failures = []
    connected.addErrback(failures.append)
    connected.cancel()
    # A real connector's stopConnecting reports the failure to the factory as well.
    attempt.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert len(failures) == 1 and attempt.buildProtocol(None) is None


# Sending at the end of a reactor turn (SendsAtTurnEnd), on a real LeanEPollReactor.


@pytest.fixture
def lean_pair():
    """(reactor, our end as an AtOnceServer sending at the turn's end, the peer's socket)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(1)
    reactor = eventloop.LeanEPollReactor()
    protocol = Protocol()
    transport = AtOnceServer(ours, protocol, ("127.0.0.1", 1), None, 1, reactor)
    protocol.makeConnection(transport)
    send_at_turn_end(transport)
    yield reactor, transport, theirs
    ours.close()
    theirs.close()
    reactor._poller.close()


def test_the_writes_of_a_turn_go_out_together_once_its_events_are_handled(lean_pair):
    reactor, transport, peer = lean_pair
    transport.write(b"one ")
    transport.writeSequence([b"two ", b"three"])
    # Not before the turn's end, and without asking epoll to watch the socket.
    assert received(peer) == b"" and transport not in reactor.getWriters()
    reactor.doIteration(0)
    assert received(peer) == b"one two three"
    assert transport not in reactor.getWriters()  # no epoll watch was needed


def test_asked_between_turns_they_are_sent_before_the_reactor_waits(lean_pair):
    reactor, transport, peer = lean_pair
    transport.write(b"from a timed call")
    assert transport not in reactor.getWriters()
    started = time.monotonic()
    reactor.doIteration(5)  # would wait 5 s for an event that never comes
    assert time.monotonic() - started < 1 and received(peer) == b"from a timed call"


def test_what_the_socket_does_not_take_waits_for_it_as_twisted_does(lean_pair):
    reactor, transport, peer = lean_pair
    big = os.urandom(8 << 20)
    transport.write(big)
    reactor.doIteration(0)
    assert transport in reactor.getWriters()  # the socket was full: watched for writability
    got = bytearray()
    for _ in range(1000):
        if len(got) == len(big):
            break
        try:
            got += peer.recv(1 << 20)
        except TimeoutError:
            pass
        reactor.doIteration(0.01)
    assert bytes(got) == big and transport not in reactor.getWriters()


def test_lose_connection_sends_what_was_written_then_closes(lean_pair):
    reactor, transport, peer = lean_pair
    transport.write(b"last words")
    transport.loseConnection()
    reactor.doIteration(0)
    assert received(peer) == b"last words" and not transport.connected
    peer.settimeout(1)
    assert peer.recv(100) == b""  # the end of the stream (a timeout would raise)


def test_abort_connection_sends_nothing_of_what_waits(lean_pair):
    reactor, transport, peer = lean_pair
    transport.write(b"never")
    transport.abortConnection()
    reactor.doIteration(0)
    reactor.runUntilCurrent()  # the abort ends the connection a turn later
    assert not transport.connected and received(peer) == b""


@implementer(IPushProducer)
class Producer:
    def __init__(self):
        self.paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        pass


def test_a_full_buffer_pauses_the_producer_and_sending_it_resumes_it(lean_pair):
    reactor, transport, peer = lean_pair
    producer = Producer()
    transport.registerProducer(producer, True)
    piece = os.urandom(48 << 10)
    transport.writeSequence([piece, piece])  # beyond the transport's 64 KiB
    assert producer.paused
    got = bytearray()
    for _ in range(1000):
        if len(got) == 2 * len(piece):
            break
        reactor.doIteration(0.01)
        try:
            got += peer.recv(1 << 20)
        except TimeoutError:
            pass
    reactor.doIteration(0)
    assert bytes(got) == piece + piece and not producer.paused


def test_the_deadline_sweep_is_one_timed_call_even_when_a_failure_starts_another_attempt():
    clock = MemoryReactorClock()
    deadlines = Deadlines(clock)
    failed = []

    class Attempt:
        def __init__(self, again):
            self.transport = self
            self.again = again

        def failIfNotConnected(self, reason):
            failed.append(reason)
            if self.again:  # a failure's callback tries again at once
                deadlines.add(Attempt(again=False), 30)

    deadlines.add(Attempt(again=True), 1)
    clock.advance(1)
    assert len(failed) == 1 and len(clock.getDelayedCalls()) == 1
    clock.advance(31)
    assert len(failed) == 2 and not clock.getDelayedCalls() and not deadlines.pending


def test_a_transport_of_another_reactor_goes_on_as_before(pair):
    reactor, transport, peer = pair  # a memory reactor: no call_after_events
    send_at_turn_end(transport)
    transport.write(b"hello")
    assert transport in reactor.writers and received(peer) == b""


def test_the_twisted_names_relied_on_exist(pair):
    _, transport, _ = pair
    absent = []
    for dotted in TWISTED_NAMES["classes"]:
        module, _, name = dotted.rpartition(".")
        if not isinstance(getattr(importlib.import_module(module), name, None), type):
            absent.append(dotted)
    absent += [f"{cls.__name__}.{name}" for name in TWISTED_NAMES["methods"]
               for cls in ((tcp.Connector,) if name in ("_makeTransport", "connectionLost") else (tcp.Server, tcp.Client))
               if not callable(getattr(cls, name, None))]
    absent += [f"tcp.Client.{name}" for name in TWISTED_NAMES["connecting"] if not callable(getattr(tcp.Client, name, None))]
    absent += [f"tcp.Connector.{name}" for name in TWISTED_NAMES["connector"] if not callable(getattr(tcp.Connector, name, None))]
    absent += [f"tcp.Server (connected).{name}" for name in TWISTED_NAMES["state"] if not hasattr(transport, name)]
    client = tcp.Client("127.0.0.1", 1, None, None, MemoryReactorClock())
    absent += [f"tcp.Client (connecting).{name}" for name in TWISTED_NAMES["client_state"] if not hasattr(client, name)]
    client.socket.close()
    absent += [] if tcp.Port.transport is tcp.Server else ["tcp.Port.transport"]
    if eventloop.EPollReactor is not None:  # the reactor that sends at the turn's end
        reactor = eventloop.EPollReactor()
        absent += [f"EPollReactor.{name}" for name in TWISTED_NAMES["reactor"] if not hasattr(reactor, name)]
        reactor._poller.close()
    assert not absent, f"Twisted lacks what tpot.protocol.transports relies on: {', '.join(absent)}"


# Connecting with AtOnceEndpoint on a real LeanEPollReactor, over loopback.


@pytest.fixture
def lean_reactor():
    reactor = eventloop.LeanEPollReactor()
    yield reactor
    reactor._poller.close()


def turn_until(reactor, done, seconds=3.0):
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        reactor.runUntilCurrent()
        reactor.doIteration(0.05)
    return done()


class Recorder(Protocol):
    def dataReceived(self, data):
        self.factory.received.append(data)


def recorder_factory():
    factory = Factory.forProtocol(Recorder)
    factory.received = []
    return factory


def test_a_connection_made_by_the_end_of_the_turn_is_watched_for_reads_only(lean_reactor):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        factory = recorder_factory()
        connected = AtOnceEndpoint(lean_reactor, "127.0.0.1", listener.getsockname()[1]).connect(factory)
        assert not connected.called  # connect() went on past the call
        lean_reactor.doIteration(0)  # the end of the turn: connect() again
        assert connected.called
        protocol = connected.result
        transport = protocol.transport
        assert transport in lean_reactor.getReaders() and transport not in lean_reactor.getWriters()
        peer, _ = listener.accept()
        with peer:
            peer.sendall(b"hello")
            send_at_once(transport)
            transport.write(b"world")
            assert received(peer) == b"world"
            assert turn_until(lean_reactor, lambda: factory.received) and factory.received == [b"hello"]
        transport.loseConnection()
        lean_reactor.doIteration(0)


def test_a_refused_attempt_fails_with_its_reason(lean_reactor):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    connected = AtOnceEndpoint(lean_reactor, "127.0.0.1", port).connect(Factory.forProtocol(Protocol))
    failures = []
    connected.addErrback(failures.append)
    assert turn_until(lean_reactor, lambda: failures)
    assert failures[0].check(ConnectionRefusedError, error.ConnectionRefusedError)


@pytest.fixture
def full_listener():
    """(listener, address) of a listener whose queue is full: it drops a handshake's SYN
    until it accepts, so a connection attempt to it goes on (until a retransmitted SYN)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = [socket.socket() for _ in range(4)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(address)
            yield listener, address
        finally:
            for filler in fillers:
                filler.close()


def test_an_attempt_that_does_not_end_fails_once_its_time_is_up(lean_reactor, full_listener):
    _, address = full_listener
    endpoint = AtOnceEndpoint(lean_reactor, *address, timeout=1)
    connected = endpoint.connect(Factory.forProtocol(Protocol))
    failures = []
    connected.addErrback(failures.append)
    lean_reactor.doIteration(0)
    if not failures and connected.called:
        pytest.skip("this kernel completed the handshake despite a full queue")
    assert endpoint.deadlines.pending  # kept by the sweep, not a timed call of its own
    assert turn_until(lean_reactor, lambda: failures, seconds=4)
    assert failures[0].check(error.TimeoutError) and not endpoint.deadlines.pending


def accepted(reactor, sock):
    """(factory, transport) of `sock` taken as a connection just accepted, its protocol a
    Recorder; the turn that accepted it has not ended yet."""
    sock.setblocking(False)
    factory = recorder_factory()
    protocol = factory.buildProtocol(None)
    transport = AtOnceServer(sock, protocol, ("127.0.0.1", 1), None, 1, reactor)
    protocol.makeConnection(transport)
    return factory, transport


def test_an_accepted_connection_is_read_at_the_end_of_the_turn_that_accepted_it(lean_reactor):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"GET / HTTP/1.1\r\n\r\n")  # sent with the connection, as visitors do
        factory, _ = accepted(lean_reactor, ours)
        lean_reactor._run_after_events()  # the turn's end: no epoll_wait in between
        assert factory.received == [b"GET / HTTP/1.1\r\n\r\n"]


def test_an_accepted_connection_with_nothing_to_read_yet_waits_as_before(lean_reactor):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        factory, transport = accepted(lean_reactor, ours)
        lean_reactor._run_after_events()
        assert transport.connected and factory.received == [] and transport in lean_reactor.getReaders()
        theirs.sendall(b"later")
        assert turn_until(lean_reactor, lambda: factory.received) and factory.received == [b"later"]


def test_an_attempt_still_going_on_at_the_turns_end_is_made_when_epoll_says_so(lean_reactor, full_listener):
    # Once the queue has room the attempt ends (a retransmitted SYN), told by epoll, the
    # result read from SO_ERROR.
    listener, address = full_listener
    connected = AtOnceEndpoint(lean_reactor, *address).connect(Factory.forProtocol(Protocol))
    lean_reactor.doIteration(0)
    if connected.called:
        pytest.skip("this kernel completed the handshake despite a full queue")
    transport = [t for t in lean_reactor.getWriters() if isinstance(t, tcp.Client)][0]
    assert transport in lean_reactor.getReaders()  # watched both ways meanwhile
    listener.settimeout(1)
    accepted_sockets = []
    for _ in range(5):  # make room: take whatever completed
        try:
            accepted_sockets.append(listener.accept()[0])
        except TimeoutError:
            break
    try:
        assert turn_until(lean_reactor, lambda: connected.called, seconds=8)
        assert connected.result.transport is transport and transport.connected
        assert transport not in lean_reactor.getWriters()  # only the reads stay watched
        transport.loseConnection()
        lean_reactor.doIteration(0)
    finally:
        for sock in accepted_sockets:
            sock.close()
