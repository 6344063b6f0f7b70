"""zope.interface declarations checked with verifyObject: the real classes of tpot, and the
test doubles that stand in for an interface's implementations (tests/support).

`providedBy` only repeats what @implementer declared; verifyObject checks that every method
of each declared interface is there with a compatible signature.  Each object is checked
against everything it declares, and against what it must at least provide.  (The tunnel
registry's interfaces and doubles are checked by their own contract suite.)
"""

import pytest
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    ILoggingContext,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITCPTransport,
    ITransport,
)
from twisted.internet.task import Clock
from zope.interface import providedBy
from zope.interface.verify import verifyObject

from tests.support.conversations import Harness
from tests.support.memory import MemoryServer, MemoryTransport
from tpot.client.connect import ConnectClientProtocol, LocalSide
from tpot.client.session import TunnelClientProtocol
from tpot.client.target import HalfCloseableTargetProtocol, TargetFactory, TargetProtocol
from tpot.client.tls import InsecureClientTLS
from tpot.protocol.flow import ReadPauses, ReadWhileRoom, WebSocketBackpressure
from tpot.server.connect import ConnectProtocol
from tpot.server.store import Claim
from tpot.server.table import ILiveTunnel
from tpot.server.tunnel import TunnelProtocol
from tpot.server.visitor import VisitorProtocol


def conversation():
    return Harness(quiet=True).conversation


def memory_server():
    return MemoryServer(clock=Clock())


# (what, how to make one, the interfaces it must provide at least)
OBJECTS = {
    # tpot.protocol.flow
    "WebSocketBackpressure": (lambda: WebSocketBackpressure({}), {IPushProducer}),
    "ReadWhileRoom": (lambda: ReadWhileRoom(ReadPauses(), "why"), {IPushProducer}),
    # the server
    "VisitorProtocol": (lambda: VisitorProtocol(None, Clock()), {IPushProducer, IProtocol, ILoggingContext}),
    "RouterProtocol": (lambda: memory_server().router.buildProtocol(None), {IProtocol}),
    "RouterFactory": (lambda: memory_server().router, {IProtocolFactory}),
    "TunnelProtocol": (lambda: TunnelProtocol(Claim("name", "lease", "token"), None, None, Clock()),
                       {IProtocol, ILiveTunnel}),
    "ConnectProtocol": (lambda: ConnectProtocol(None, "name", Clock()), {IPushProducer, IProtocol}),
    # the client
    "InsecureClientTLS": (lambda: InsecureClientTLS("localhost"), {IOpenSSLClientConnectionCreator}),
    "TargetProtocol": (lambda: TargetProtocol(conversation()), {IProtocol, IHandshakeListener}),
    "HalfCloseableTargetProtocol": (lambda: HalfCloseableTargetProtocol(conversation()),
                                    {IHalfCloseableProtocol, IProtocol, ILoggingContext}),
    "TargetFactory": (lambda: TargetFactory(conversation(), None), {IProtocolFactory}),
    "Conversation": (conversation, {IPushProducer}),
    "LocalSide": (lambda: LocalSide(None), {IHalfCloseableProtocol, IProtocol}),
    "TunnelClientProtocol": (TunnelClientProtocol, {IProtocol}),
    "ConnectClientProtocol": (ConnectClientProtocol, {IProtocol}),
    # test doubles
    "MemoryTransport": (lambda: MemoryTransport(Clock()), {ITCPTransport, ITransport, IConsumer, IPushProducer}),
}


@pytest.mark.parametrize("name", OBJECTS)
def test_declared_interfaces_are_implemented(name):
    make, required = OBJECTS[name]
    obj = make()
    declared = set(providedBy(obj).flattened())
    assert required <= declared, required - declared
    for interface in providedBy(obj):
        assert verifyObject(interface, obj)


def test_verify_object_catches_a_missing_method():
    # The control: a producer declared but without stopProducing fails the check.
    from zope.interface import implementer
    from zope.interface.exceptions import Invalid

    @implementer(IPushProducer)
    class Incomplete:
        def pauseProducing(self):
            pass

        def resumeProducing(self):
            pass

    with pytest.raises(Invalid):
        verifyObject(IPushProducer, Incomplete())


# Doubles of tpot's own duck-typed roles (no zope interface declares them): every public
# method of the double exists on the real class with the same parameters, so a renamed or
# re-signed method fails here rather than leaving the double testing a fiction.

def public_methods(cls):
    return {name: getattr(cls, name) for name in vars(cls) if callable(getattr(cls, name)) and not name.startswith("_")}


DOUBLES = {
    # the session a client Conversation talks to: TunnelClientProtocol
    "conversations.Session": ("tests.support.conversations:Session", "tpot.client.session:TunnelClientProtocol",
                              {"visitor_bytes"}),
    # the target connector a Conversation connects through
    "conversations.Connector": ("tests.support.conversations:Connector", "tpot.client.target:TargetConnector", set()),
}


def load(spec):
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", DOUBLES)
def test_doubles_have_the_real_signatures(name):
    import inspect

    double_spec, real_spec, test_only = DOUBLES[name]
    double, real = load(double_spec), load(real_spec)
    methods = public_methods(double)
    assert set(methods) - test_only, "the double has no methods to check"
    for method, function in methods.items():
        if method in test_only:
            continue
        assert hasattr(real, method), f"{real.__name__} has no {method}"
        assert inspect.signature(function) == inspect.signature(getattr(real, method)), method
