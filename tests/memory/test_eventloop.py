"""tpot.protocol.eventloop: the epoll reactor both ends run on hands each ready socket to its handler
(no logging context), an exception in one is logged and drops only that socket, and the
Twisted names it relies on exist in the installed Twisted."""

import importlib
import socket

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


def test_the_twisted_names_relied_on_exist(reactor):
    dotted, *attributes = eventloop.TWISTED_NAMES
    module, _, name = dotted.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name, None), type)
    assert not [name for name in attributes if not hasattr(reactor, name)]
