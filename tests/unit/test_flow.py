"""The shared flow-control pieces: how a tunnel's WebSocket producer pauses and resumes."""

from twisted.internet.interfaces import IPushProducer

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


class Transport:
    bufferSize = 65536
    no_delay = False
    producer = None

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled

    def registerProducer(self, producer, streaming):
        self.producer = producer


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
    assert transport.producer is backpressure
    assert transport.no_delay
    assert transport.bufferSize == WEBSOCKET_BUFFER > 65536 + 16


def test_under_tls_the_socket_transport_gets_the_larger_backlog():
    class TLS(Transport):
        def __init__(self, inner):
            self.transport = inner

        def setTcpNoDelay(self, enabled):
            self.transport.setTcpNoDelay(enabled)

    inner = Transport()
    WebSocketBackpressure({}).register(TLS(inner))
    assert inner.no_delay and inner.bufferSize == WEBSOCKET_BUFFER


def test_the_relay_producers_are_push_producers():
    assert IPushProducer.providedBy(ReadWhileRoom(ReadPauses(), "why"))
    assert IPushProducer.implementedBy(PausesPeer)
