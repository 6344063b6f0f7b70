"""One client-side Conversation without sockets: a recording session, a recording target
connector, StringTransports and a Clock (shared by test_requestlog, test_visitor_policy and
test_inspector_capture)."""

import io

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tpot.client.conversation import Conversation
from tpot.client.policy import VisitorPolicy, parse_allowed
from tpot.client.requestlog import RequestLogger
from tpot.client.visitors import VisitorOptions


class Session:
    """What a Conversation asks of the tunnel, recorded."""

    def __init__(self):
        self.to_visitor = []
        self.ended = []
        self.signals = []

    def send_data(self, conversation_id, data):
        self.to_visitor.append(bytes(data))

    def send_pause(self, conversation_id):
        self.signals.append("P")

    def send_resume(self, conversation_id):
        self.signals.append("C")

    def send_no_connect(self, conversation_id):
        self.signals.append("N")

    def conversation_ended(self, conversation_id, notify):
        self.ended.append(notify)

    def visitor_bytes(self):
        return b"".join(self.to_visitor)


class Connector:
    """A target connector whose connections are made only when the test says so."""

    tls = None

    def __init__(self):
        self.factories = []
        self.attempts = []  # the Deferreds connect returned, for the test to fire

    def connect(self, factory):
        self.factories.append(factory)
        self.attempts.append(defer.Deferred())
        return self.attempts[-1]

    def reached(self):
        """A connection is up: what the real connector tells the tunnel's TargetWarnings."""


class Harness:
    def __init__(self, quiet=False, basic_auth=None, allow_ip=(), address="127.0.0.1", host_rewrite=None,
                 colour=False, inspected=None):
        self.clock = Clock()
        self.clock.advance(1000)
        self.out = io.StringIO()
        log = None if quiet else RequestLogger(self.out, colour=colour)
        policy = VisitorPolicy(basic_auth, parse_allowed(allow_ip)) if basic_auth or allow_ip else None
        visitors = VisitorOptions(self.clock, log, policy, inspected) if log or policy or inspected else None
        self.session = Session()
        self.connector = Connector()
        self.conversation = Conversation(self.session, 7, host_rewrite, None, visitors, address)
        self.conversation.connect(self.connector)
        self.target = None
        self.protocol = None

    @property
    def contacted(self):
        return bool(self.connector.factories)

    def target_up(self):
        """The (first) target connection completes."""
        assert self.connector.factories, "the target was never contacted"
        self.protocol = self.connector.factories[0].buildProtocol(None)
        self.target = StringTransport()
        self.protocol.makeConnection(self.target)
        return self.target

    def target_unreachable(self, error):
        """The (first) target connection fails with `error` (an exception)."""
        self.connector.attempts[0].errback(Failure(error))

    def visit(self, *pieces):
        for piece in pieces:
            self.conversation.from_tunnel(piece)

    def answer(self, *pieces, step=0.0):
        for piece in pieces:
            self.clock.advance(step)
            self.protocol.dataReceived(piece)

    def target_closes(self):
        self.protocol.connectionLost(None)

    def lines(self):
        return self.out.getvalue().splitlines()

    def target_bytes(self):
        return self.target.value() if self.target is not None else b""
