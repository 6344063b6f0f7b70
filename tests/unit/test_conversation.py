"""The client conversation's states (tpot.client.conversation.State): which event moves it
where, and what each state does with what comes after, without sockets."""

import io

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.support.conversations import Connector, Harness, Session
from tpot.client.conversation import Conversation, LoggedRawConversation, RawConversation, State
from tpot.client.requestlog import RequestLogger
from tpot.client.visitors import VisitorOptions

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CREDENTIALS = b"Authorization: Basic dTpw\r\n"  # u:p


class RawSession(Session):
    def send_half_close(self, conversation_id):
        self.signals.append("H")


class HalfClosingTransport(StringTransport):
    """Half-closes, and unregisters a producer twice as Twisted's TCP transports allow."""

    write_closed = False

    def unregisterProducer(self):
        self.producer = None
        self.streaming = None

    def loseWriteConnection(self):
        self.write_closed = True


def up(conversation, connector):
    """The conversation's (first) target connection completes: its protocol and transport."""
    protocol = connector.factories[0].buildProtocol(None)
    transport = HalfClosingTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def raw(logged=False):
    session, connector = RawSession(), Connector()
    if logged:
        clock, out = Clock(), io.StringIO()
        conversation = LoggedRawConversation(session, 7, "192.0.2.1:4000", VisitorOptions(clock, RequestLogger(out)))
    else:
        conversation, out = RawConversation(session, 7), None
    conversation.connect(connector)
    return conversation, session, connector, out


# HTTP conversations.


def test_an_unjudged_conversation_connects_at_once_and_ends_with_the_target():
    session, connector = Session(), Connector()
    conversation = Conversation(session, 7, None)
    assert conversation.state is State.CONNECTING
    conversation.connect(connector)
    assert len(connector.factories) == 1
    conversation.from_tunnel(GET)
    protocol, transport = up(conversation, connector)
    assert conversation.state is State.OPEN and transport.value() == GET
    protocol.dataReceived(OK)
    protocol.connectionLost(None)
    assert conversation.state is State.ENDED
    assert (session.visitor_bytes(), session.ended) == (OK, [True])


def test_a_judged_conversation_awaits_admission_before_contacting_the_target():
    harness = Harness(quiet=True, basic_auth="u:p")
    assert harness.conversation.state is State.AWAITING_ADMISSION
    harness.visit(b"GET / HTTP/1.1\r\n")
    assert harness.conversation.state is State.AWAITING_ADMISSION and not harness.contacted
    harness.visit(b"Host: a\r\n" + CREDENTIALS + b"\r\n")
    assert harness.conversation.state is State.CONNECTING and harness.contacted
    harness.target_up()
    assert harness.conversation.state is State.OPEN
    assert harness.target_bytes() == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def test_a_refused_first_request_ends_without_the_target():
    harness = Harness(quiet=True, basic_auth="u:p")
    harness.visit(GET)
    assert harness.conversation.state is State.ENDED and not harness.contacted
    assert harness.session.visitor_bytes().startswith(b"HTTP/1.1 401 ")
    assert harness.session.ended == [True]


def test_a_refused_later_request_waits_in_open_for_the_earlier_answer():
    harness = Harness(quiet=True, basic_auth="u:p")
    harness.visit(b"GET /1 HTTP/1.1\r\nHost: a\r\n" + CREDENTIALS + b"\r\n" + GET)
    target = harness.target_up()
    assert harness.conversation.state is State.OPEN and harness.session.ended == []
    harness.answer(OK)
    assert harness.conversation.state is State.ENDED and harness.session.ended == [True]
    assert harness.session.visitor_bytes().startswith(OK + b"HTTP/1.1 401 ")
    assert target.disconnecting


def test_closed_by_the_server_while_connecting_the_target_is_closed_once_it_connects():
    session, connector = Session(), Connector()
    conversation = Conversation(session, 7, None)
    conversation.connect(connector)
    conversation.from_tunnel(GET)
    conversation.remote_closed()
    assert conversation.state is State.ENDED
    protocol, transport = up(conversation, connector)
    assert transport.value() == GET and transport.disconnecting
    protocol.dataReceived(OK)
    protocol.connectionLost(None)
    assert (session.to_visitor, session.ended, session.signals) == ([], [], [])


def test_could_not_connect_ends_once_and_says_so():
    session, connector = Session(), Connector()
    conversation = Conversation(session, 7, None)
    conversation.connect(connector)
    conversation.could_not_connect()
    conversation.could_not_connect()
    conversation.target_lost()
    assert conversation.state is State.ENDED
    assert (session.ended, session.signals) == ([False], ["N"])


def test_an_ended_conversation_asks_no_pause_of_the_server():
    session, connector = Session(), Connector()
    conversation = Conversation(session, 7, None)
    conversation.connect(connector)
    up(conversation, connector)
    conversation.pauseProducing()
    conversation.pauseProducing()
    conversation.remote_closed()
    conversation.resumeProducing()
    assert session.signals == ["P"]


# Raw conversations: each direction ends on its own.


def test_a_half_close_while_connecting_is_a_fin_once_connected():
    conversation, session, connector, _ = raw()
    conversation.from_tunnel(b"hello")
    conversation.peer_done_sending()
    assert conversation.state is State.PEER_DONE
    protocol, transport = up(conversation, connector)
    assert conversation.state is State.PEER_DONE
    assert transport.value() == b"hello" and transport.write_closed and not transport.disconnecting
    protocol.dataReceived(b"answer")
    protocol.readConnectionLost()
    assert conversation.state is State.CLOSING and transport.disconnecting
    assert session.signals == ["H"] and session.visitor_bytes() == b"answer"
    protocol.connectionLost(None)
    assert conversation.state is State.ENDED and session.ended == [True]


def test_the_target_ending_first_is_a_half_close_then_the_peer_closes_it():
    conversation, session, connector, _ = raw()
    protocol, transport = up(conversation, connector)
    protocol.readConnectionLost()
    protocol.readConnectionLost()
    assert conversation.state is State.TARGET_DONE and session.signals == ["H"]
    conversation.from_tunnel(b"late")
    assert transport.value() == b"late"
    conversation.peer_done_sending()
    assert conversation.state is State.CLOSING and transport.disconnecting


def test_a_logged_raw_conversation_logs_its_end_once():
    conversation, session, connector, out = raw(logged=True)
    conversation.remote_closed()
    conversation.could_not_connect()
    assert conversation.state is State.ENDED
    assert len(out.getvalue().splitlines()) == 1 and "closed" in out.getvalue()


# What a visitor or a server writes cannot make the client relay what it must not (issue 11).

SMUGGLED = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Pad: 1\nX-Forwarded-Host: admin.internal\r\n\r\n"


def test_a_later_head_with_a_bare_lf_is_answered_400_after_the_earlier_responses():
    harness = Harness(host_rewrite="target:80")
    harness.visit(GET + SMUGGLED)
    target = harness.target_up()
    assert target.value().count(b"\r\n\r\n") == 1 and b"admin.internal" not in target.value()
    assert harness.session.to_visitor == []  # not before the first request's response
    harness.answer(OK)
    visitor = harness.session.visitor_bytes()
    assert visitor.startswith(OK) and visitor[len(OK):].startswith(b"HTTP/1.1 400 ")
    assert harness.session.ended == [True] and harness.conversation.state is State.ENDED
    assert "- - → 400" in harness.out.getvalue()


def test_without_the_request_log_a_bare_lf_head_ends_what_the_target_is_sent():
    session, connector = Session(), Connector()
    conversation = Conversation(session, 7, "target:80")
    conversation.connect(connector)
    conversation.from_tunnel(GET)
    protocol, transport = up(conversation, connector)
    conversation.from_tunnel(SMUGGLED + GET)
    assert transport.value().count(b"\r\n\r\n") == 1 and transport.write_closed
    assert conversation.state is State.PEER_DONE
    protocol.dataReceived(OK)
    protocol.connectionLost(None)
    assert session.visitor_bytes() == OK and session.ended == [True]


def test_a_bare_lf_head_before_the_target_is_up_sends_the_fin_once_it_is():
    session, connector = Session(), Connector()
    conversation = Conversation(session, 7, "target:80")
    conversation.connect(connector)
    conversation.from_tunnel(GET + SMUGGLED)
    assert conversation.state is State.PEER_DONE
    _, transport = up(conversation, connector)
    assert transport.value().count(b"\r\n\r\n") == 1 and transport.write_closed


def test_a_server_that_ignores_pause_has_the_conversation_cut(monkeypatch):
    monkeypatch.setattr("tpot.client.conversation.MAX_UNACKED_BYTES", 1000)
    session, connector = Session(), Connector()
    conversation = Conversation(session, 7, None)
    conversation.connect(connector)
    _, transport = up(conversation, connector)
    conversation.pauseProducing()  # the target's socket is full
    conversation.from_tunnel(b"x" * 999)
    assert conversation.state is State.OPEN
    conversation.from_tunnel(b"xx")
    assert conversation.state is State.ENDED and session.ended == [True] and session.signals == ["P"]
    assert transport.disconnecting and transport.producer is None
    before = len(transport.value())
    conversation.from_tunnel(b"more")
    assert len(transport.value()) == before


def test_what_arrives_after_a_resume_starts_a_new_allowance(monkeypatch):
    monkeypatch.setattr("tpot.client.conversation.MAX_UNACKED_BYTES", 1000)
    session, connector = Session(), Connector()
    conversation = Conversation(session, 7, None)
    conversation.connect(connector)
    up(conversation, connector)
    for _ in range(3):
        conversation.pauseProducing()
        conversation.from_tunnel(b"x" * 900)
        conversation.resumeProducing()
    conversation.from_tunnel(b"x" * 5000)  # not paused: nothing counts
    assert conversation.state is State.OPEN and session.signals == ["P", "C"] * 3
