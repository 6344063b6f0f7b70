"""The shared flow-control pieces: how a tunnel's WebSocket producer pauses and resumes."""

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from zope.interface.verify import verifyClass, verifyObject

from tests.support.memory import MemoryTransport
from tpot.protocol.flow import (
    WEBSOCKET,
    WEBSOCKET_BUFFER,
    PausesPeer,
    ReadPauses,
    ReadWhileRoom,
    WebSocketBackpressure,
)


class Recorder:
    def __init__(self, name, log):
        self.name = name
        self.log = log

    def pause_reading(self, why):
        assert why == WEBSOCKET

    def resume_reading(self, why):
        self.log.append(self.name)


def Transport():
    """A TCP transport (the memory one: an ITCPTransport, verified in test_interfaces)."""
    return MemoryTransport(Clock())


def test_conversations_take_turns_being_resumed_first():
    log = []
    conversations = {i: Recorder(i, log) for i in range(1, 5)}
    backpressure = WebSocketBackpressure(conversations)
    firsts = []
    for _ in range(8):
        backpressure.pauseProducing()
        del log[:]
        backpressure.resumeProducing()
        assert sorted(log) == [1, 2, 3, 4]
        firsts.append(log[0])
    assert sorted(firsts) == [1, 1, 2, 2, 3, 3, 4, 4]


def test_register_switches_nagle_off_and_allows_a_larger_backlog():
    transport = Transport()
    backpressure = WebSocketBackpressure({})
    backpressure.register(transport)
    assert transport.producer is backpressure and transport.streaming
    assert transport.getTcpNoDelay()
    assert transport.bufferSize == WEBSOCKET_BUFFER > 65536 + 16


def test_under_tls_the_socket_transport_gets_the_larger_backlog():
    # TLSMemoryBIOProtocol: an ITCPTransport itself, passing setTcpNoDelay to the socket's.
    class TLS(MemoryTransport):
        def __init__(self, inner):
            super().__init__(inner.clock)
            self.transport = inner

        def setTcpNoDelay(self, enabled):
            self.transport.setTcpNoDelay(enabled)

    inner = Transport()
    tls = TLS(inner)
    WebSocketBackpressure({}).register(tls)
    assert inner.getTcpNoDelay() and inner.bufferSize == WEBSOCKET_BUFFER
    assert tls.producer is not None and tls.streaming


def test_the_relay_producers_are_push_producers():
    assert verifyObject(IPushProducer, ReadWhileRoom(ReadPauses(), "why"))
    assert verifyObject(IPushProducer, WebSocketBackpressure({}))
    assert verifyClass(IPushProducer, PausesPeer)
