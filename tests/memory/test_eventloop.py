"""tpot.protocol.eventloop: the epoll reactor both ends run on hands each ready socket to its handler
(no logging context), an exception in one is logged and drops only that socket, and the
Twisted names it relies on exist in the installed Twisted."""

import importlib
import socket
import time

import pytest
from twisted.internet.abstract import FileDescriptor
from twisted.logger import globalLogPublisher

from tpot.protocol import eventloop

pytestmark = pytest.mark.skipif(eventloop.EPollReactor is None, reason="no epoll here")


class Reader(FileDescriptor):
    def __init__(self, reactor, sock, fail=False):
        super().__init__(reactor)
        self.sock = sock
        self.fail = fail
        self.read = b""
        self.lost = None

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        if self.fail:
            raise ValueError("boom")
        self.read += self.sock.recv(100)

    def connectionLost(self, reason):
        self.lost = reason


@pytest.fixture
def reactor():
    reactor = eventloop.LeanEPollReactor()
    yield reactor
    reactor._poller.close()


def test_a_ready_socket_is_read(reactor):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = Reader(reactor, ours)
        reactor.addReader(reader)
        theirs.send(b"hello")
        reactor.doIteration(1)
        assert reader.read == b"hello" and reader.lost is None


def test_an_exception_in_a_handler_is_logged_and_drops_that_socket(reactor):
    logged = []
    globalLogPublisher.addObserver(logged.append)
    ours, theirs = socket.socketpair()
    try:
        with ours, theirs:
            reader = Reader(reactor, ours, fail=True)
            reactor.addReader(reader)
            theirs.send(b"x")
            reactor.doIteration(1)
            assert reader.lost is not None and reader.lost.check(ValueError)
            assert reader not in reactor.getReaders()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert any("log_failure" in event or "failure" in event for event in logged), logged


def test_calls_asked_during_a_turn_run_once_its_events_are_handled(reactor):
    order = []
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = Reader(reactor, ours)
        reader.doRead = lambda: (order.append("event"), reactor.call_after_events(lambda: order.append("after")))
        reactor.addReader(reader)
        theirs.send(b"x")
        reactor.doIteration(1)
        assert order == ["event", "after"]
        reactor.removeReader(reader)


def test_calls_asked_between_turns_run_before_any_wait(reactor):
    ran = []
    reactor.call_after_events(lambda: ran.append(1))
    started = time.monotonic()
    reactor.doIteration(5)
    assert ran == [1] and time.monotonic() - started < 1


def test_a_call_asked_by_another_waits_for_the_next_pass(reactor):
    # One pass per turn: calls that keep asking for more cannot hold the reactor.
    ran = []

    def again():
        ran.append(1)
        reactor.call_after_events(again)

    reactor.call_after_events(again)
    reactor.doIteration(0)
    assert ran == [1, 1]  # one before the wait, one after this turn's (no) events


def test_an_exception_in_a_call_is_logged_and_the_others_run(reactor):
    logged = []
    ran = []
    globalLogPublisher.addObserver(logged.append)
    try:
        reactor.call_after_events(lambda: 1 / 0)
        reactor.call_after_events(lambda: ran.append(1))
        reactor.doIteration(0)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert ran == [1] and any(event.get("log_failure") for event in logged)


def test_the_twisted_names_relied_on_exist(reactor):
    dotted, *attributes = eventloop.TWISTED_NAMES
    module, _, name = dotted.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name, None), type)
    assert not [name for name in attributes if not hasattr(reactor, name)]
