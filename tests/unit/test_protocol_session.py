"""The sans-I/O session core (tpot.protocol.session): messages in, events and messages out.

Conversations are plain strings here: the session only keeps them and hands them back.
"""

import pytest

from tpot.protocol import codec
from tpot.protocol.codec import HTTP, TCP, Close, Data, HalfClose, NoConnect, OpenHTTP, OpenRaw, Pause, Resume
from tpot.protocol.session import (
    KIND_MISMATCH,
    NO_FREE_ID,
    ClientSession,
    ConversationIds,
    Deliver,
    Greeted,
    OpenRefused,
    OpenRequested,
    PauseReading,
    PeerClosed,
    PeerCouldNotConnect,
    PeerDoneSending,
    ResumeReading,
    ServerSession,
    WrongKind,
)


def server_with(*visitors, kind=HTTP):
    session = ServerSession(kind)
    for visitor in visitors:
        session.open(visitor, "192.0.2.1", 40000, raw=kind == TCP)
    return session


def client_with(*conversations, kind=HTTP):
    session = ClientSession(kind)
    opening = OpenRaw if kind == TCP else OpenHTTP
    for number, conversation in enumerate(conversations, 1):
        (event,) = session.receive(opening(number, "192.0.2.1", 40000 + number))
        session.accept(event.id, conversation)
    return session


def both(kind=HTTP):
    """A server and a client session, each with conversation 1 ("one") open."""
    return [server_with("one", kind=kind), client_with("one", kind=kind)]


# What each side may hear.


def test_each_side_takes_exactly_what_the_codec_lets_its_peer_send():
    assert set(ServerSession._receivers) == codec.FROM_CLIENT == ServerSession.peer_sends
    assert set(ClientSession._receivers) == codec.FROM_SERVER == ClientSession.peer_sends


def test_the_server_refuses_what_only_a_server_sends():
    for message in (codec.Greeting("wire"), OpenHTTP(1, "192.0.2.1", 1), OpenRaw(1, "192.0.2.1", 1)):
        with pytest.raises(codec.ProtocolError, match="unexpected"):
            ServerSession(HTTP).receive(message)
        with pytest.raises(codec.ProtocolError, match="unexpected"):
            ServerSession(HTTP).decode(codec.encode(message), True)


def test_the_client_refuses_no_connect_from_the_server():
    with pytest.raises(codec.ProtocolError, match="unexpected NoConnect"):
        client_with("one").receive(NoConnect(1))
    with pytest.raises(codec.ProtocolError, match="unexpected NoConnect"):
        ClientSession(HTTP).decode(b"\x12\x01\x00N", True)


@pytest.mark.parametrize("session", [ServerSession(HTTP), ClientSession(HTTP)], ids=["server", "client"])
def test_text_messages_are_protocol_errors(session):
    with pytest.raises(codec.ProtocolError, match="text message"):
        session.decode(b"\x12\x01\x00Dhi", False)


def test_decode_gives_codec_messages():
    assert ServerSession(HTTP).decode(b"\x12\x01\x00Dhi", True) == Data(1, b"hi")
    assert ClientSession(HTTP).decode(b"\x11GTPoT/1 wire", True) == codec.Greeting("wire")


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_after_a_protocol_error_nothing_more_is_heard(side):
    session = both()[side]
    with pytest.raises(codec.ProtocolError):
        session.decode(b"\x13", True)
    assert session.failed
    assert session.receive(Data(1, b"late")) == ()
    assert session.receive(Close(1)) == ()
    assert session.conversations == {1: "one"}  # still there, for the tunnel's loss to end


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_a_rule_broken_by_a_decoded_message_also_ends_hearing(side):
    session = both()[side]
    with pytest.raises(codec.ProtocolError):
        session.receive(HalfClose(1))
    assert session.receive(Data(1, b"late")) == ()


# Data, and messages for ids that are not open.


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_data_goes_to_its_conversation(side):
    session = both()[side]
    assert session.receive(Data(1, b"bytes")) == (Deliver("one", b"bytes"),)


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
@pytest.mark.parametrize("message", [Data(7, b"x"), Pause(7), Resume(7), Close(7)], ids=lambda m: type(m).__name__)
def test_messages_for_unknown_ids_are_ignored(side, message):
    session = both()[side]
    assert session.receive(message) == ()
    assert session.conversations == {1: "one"}


def test_no_connect_for_an_unknown_id_is_ignored():
    assert server_with("one").receive(NoConnect(7)) == ()


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_the_fast_path_lookup_is_the_table_data_goes_by(side):
    # The adapters deliver data with conversations.get(id), bypassing receive.
    session = both()[side]
    assert session.conversations.get(1) == session.receive(Data(1, b""))[0].conversation
    assert session.conversations.get(7) is None and session.receive(Data(7, b"")) == ()


# Pause and resume: which conversations the peer paused.


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_pause_then_resume(side):
    session = both()[side]
    assert session.receive(Pause(1)) == (PauseReading("one"),)
    assert session.paused_by_peer == {1}
    assert session.receive(Resume(1)) == (ResumeReading("one"),)
    assert session.paused_by_peer == set()


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_a_repeated_pause_and_a_resume_without_pause_change_nothing(side):
    session = both()[side]
    assert session.receive(Resume(1)) == ()
    session.receive(Pause(1))
    assert session.receive(Pause(1)) == ()
    assert session.receive(Resume(1)) == (ResumeReading("one"),)
    assert session.receive(Resume(1)) == ()
    assert session.receive(Pause(1)) == (PauseReading("one"),)


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_a_pause_for_an_unknown_id_is_not_remembered(side):
    session = both()[side]
    session.receive(Pause(7))
    assert session.paused_by_peer == set()


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_a_conversation_that_ends_is_no_longer_paused(side):
    session = both()[side]
    session.receive(Pause(1))
    session.end(1, notify=True)
    assert session.paused_by_peer == set()


def test_on_the_client_the_servers_close_forgets_the_pause():
    session = client_with("one")
    session.receive(Pause(1))
    session.receive(Close(1))
    assert session.paused_by_peer == set()
    assert session.receive(Resume(1)) == ()


def test_on_the_server_a_paused_visitor_closed_by_the_client_can_still_be_resumed():
    # Its table entry lasts until the visitor is gone (see the id rules below).
    session = server_with("one")
    session.receive(Pause(1))
    session.receive(Close(1))
    assert session.receive(Resume(1)) == (ResumeReading("one"),)


# Half-closes: raw conversations only.


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_half_close_in_a_raw_conversation(side):
    session = both(TCP)[side]
    assert session.receive(HalfClose(1)) == (PeerDoneSending("one"),)
    assert session.conversations == {1: "one"}  # the other direction goes on
    assert session.receive(Data(1, b"more")) == (Deliver("one", b"more"),)


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_half_close_for_an_unknown_raw_id_is_ignored(side):
    assert both(TCP)[side].receive(HalfClose(7)) == ()


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
@pytest.mark.parametrize("conversation_id", [1, 7], ids=["open", "unknown"])
def test_half_close_in_an_http_conversation_is_a_protocol_error(side, conversation_id):
    with pytest.raises(codec.ProtocolError, match="half-close in an HTTP conversation"):
        both(HTTP)[side].receive(HalfClose(conversation_id))


# X and N.


def test_the_clients_close_reaches_the_visitor_and_keeps_its_id_until_it_is_gone():
    session = server_with("one")
    assert session.receive(Close(1)) == (PeerClosed("one"),)
    assert session.conversations == {1: "one"} and len(session.ids) == 1
    assert session.end(1, notify=False) is None
    assert session.conversations == {} and len(session.ids) == 0


def test_no_connect_reaches_the_visitor_and_keeps_its_id_until_it_is_gone():
    session = server_with("one")
    assert session.receive(NoConnect(1)) == (PeerCouldNotConnect("one"),)
    assert len(session.ids) == 1
    assert session.end(1, notify=False) is None
    assert len(session.ids) == 0


def test_the_servers_close_ends_the_clients_conversation_at_once():
    session = client_with("one")
    assert session.receive(Close(1)) == (PeerClosed("one"),)
    assert session.conversations == {}
    assert session.receive(Data(1, b"late")) == ()
    # The conversation reports its end later: no X back, the server spoke first.
    assert session.end(1, notify=True) is None


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_our_end_says_x_once(side):
    session = both()[side]
    assert session.end(1, notify=True) == Close(1)
    assert session.conversations == {}
    assert session.end(1, notify=True) is None
    assert session.receive(Data(1, b"too late")) == () and session.receive(Close(1)) == ()


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_our_end_without_notice_says_nothing(side):
    session = both()[side]
    assert session.end(1, notify=False) is None
    assert session.conversations == {}


def test_the_clients_no_connect_ends_the_conversation_and_no_x_follows():
    session = client_with("one")
    assert session.no_connect(1) == NoConnect(1)
    assert session.conversations == {}
    assert session.end(1, notify=True) is None
    assert session.receive(Data(1, b"late")) == ()


def test_the_client_says_no_connect_even_after_ending_the_conversation():
    # Conversation.could_not_connect ends it (without notice), then asks for the N.
    session = client_with("one")
    assert session.end(1, notify=False) is None
    assert session.no_connect(1) == NoConnect(1)


# Opening: the server's side.


def test_the_server_opens_http_conversations_on_an_http_tunnel():
    session = ServerSession(HTTP)
    assert session.open("one", "192.0.2.1", 40001) == OpenHTTP(1, "192.0.2.1", 40001)
    assert session.open("two", "192.0.2.2", 40002) == OpenHTTP(2, "192.0.2.2", 40002)
    assert session.conversations == {1: "one", 2: "two"}


def test_the_server_opens_raw_conversations_on_a_tcp_tunnel():
    session = ServerSession(TCP)
    assert session.open("one", "192.0.2.1", 40001, raw=True) == OpenRaw(1, "192.0.2.1", 40001)


@pytest.mark.parametrize("kind, raw", [(HTTP, True), (TCP, False)])
def test_the_server_refuses_the_wrong_kind_without_using_an_id(kind, raw):
    session = ServerSession(kind)
    with pytest.raises(OpenRefused) as refused:
        session.open("one", "192.0.2.1", 40001, raw=raw)
    assert refused.value.reason == KIND_MISMATCH
    assert session.conversations == {} and len(session.ids) == 0


def test_the_server_refuses_when_no_id_is_free_until_one_is():
    session = ServerSession(HTTP)
    session.ids = ConversationIds(maximum=2)
    session.open("one", "192.0.2.1", 1)
    session.open("two", "192.0.2.1", 2)
    with pytest.raises(OpenRefused) as refused:
        session.open("three", "192.0.2.1", 3)
    assert refused.value.reason == NO_FREE_ID
    session.end(1, notify=True)
    assert session.open("three", "192.0.2.1", 3).id == 1


def test_ids_count_up_and_a_freed_one_is_not_reused_at_once():
    session = server_with("one", "two")
    session.end(1, notify=True)
    assert session.open("three", "192.0.2.1", 3).id == 3


def test_ids_wrap_within_1_to_32767_and_skip_those_in_use():
    session = server_with("one")
    session.ids._last = 32766
    assert [session.open(name, "192.0.2.1", 1).id for name in ("a", "b", "c")] == [32767, 2, 3]


def test_an_id_closed_by_the_client_is_not_handed_out_while_its_visitor_lasts():
    session = server_with("one")
    session.ids = ConversationIds(maximum=1)
    session.ids.allocate()  # id 1, held by "one"
    session.receive(Close(1))
    with pytest.raises(OpenRefused):
        session.open("two", "192.0.2.1", 2)
    session.end(1, notify=False)
    assert session.open("two", "192.0.2.1", 2).id == 1


def test_ending_an_id_twice_frees_only_the_conversation_that_had_it():
    session = server_with("one")
    session.end(1, notify=True)
    session.ids._last = 0
    assert session.open("two", "192.0.2.1", 2).id == 1
    session.end(2, notify=True)  # not open: no effect on id 1
    assert session.conversations == {1: "two"} and len(session.ids) == 1


def test_conversation_ids_never_exceed_32767():
    ids = ConversationIds()
    assert sorted(ids.allocate() for _ in range(32767)) == list(range(1, 32768))
    assert ids.allocate() is None
    ids.release(5)
    assert ids.allocate() == 5


# Opening: the client's side.


def test_the_client_hears_the_greeting():
    assert ClientSession(HTTP).receive(codec.Greeting("wire")) == (Greeted("wire"),)


def test_an_open_asks_for_a_conversation_which_accept_puts_in_the_table():
    session = ClientSession(HTTP)
    assert session.receive(OpenHTTP(3, "192.0.2.1", 40001)) == (OpenRequested(3, "192.0.2.1", 40001, False),)
    assert session.conversations == {}
    session.accept(3, "three")
    assert session.receive(Data(3, b"x")) == (Deliver("three", b"x"),)


def test_a_raw_open_on_a_tcp_tunnel():
    session = ClientSession(TCP)
    assert session.receive(OpenRaw(1, "2001:db8::1", 5)) == (OpenRequested(1, "2001:db8::1", 5, True),)


@pytest.mark.parametrize("kind, opening, raw", [(HTTP, OpenRaw, True), (TCP, OpenHTTP, False)])
def test_the_client_refuses_the_wrong_kind(kind, opening, raw):
    session = ClientSession(kind)
    assert session.receive(opening(1, "192.0.2.1", 1)) == (WrongKind(1, raw),)
    assert session.no_connect(1) == NoConnect(1)
    assert session.conversations == {}


def test_a_stale_id_opened_again_closes_the_old_conversation_first():
    session = client_with("old")
    session.receive(Pause(1))
    events = session.receive(OpenHTTP(1, "192.0.2.9", 9))
    assert events == (PeerClosed("old"), OpenRequested(1, "192.0.2.9", 9, False))
    assert session.conversations == {} and session.paused_by_peer == set()
    session.accept(1, "new")
    assert session.receive(Data(1, b"x")) == (Deliver("new", b"x"),)
    assert session.end(1, notify=True) == Close(1)


def test_a_stale_id_opened_again_with_the_wrong_kind_still_closes_the_old_one():
    session = client_with("old")
    assert session.receive(OpenRaw(1, "192.0.2.9", 9)) == (PeerClosed("old"), WrongKind(1, True))
    assert session.conversations == {}


def test_an_id_reused_right_after_the_servers_close_is_a_new_conversation():
    session = client_with("old")
    assert session.receive(Close(1)) == (PeerClosed("old"),)
    assert session.receive(OpenHTTP(1, "192.0.2.9", 9)) == (OpenRequested(1, "192.0.2.9", 9, False),)


# The tunnel's loss.


@pytest.mark.parametrize("side", [0, 1], ids=["server", "client"])
def test_losing_the_tunnel_ends_every_conversation(side):
    session = [server_with("one", "two"), client_with("one", "two")][side]
    session.receive(Pause(2))
    assert session.lost() == ["one", "two"]
    assert session.conversations == {} and session.paused_by_peer == set()
    assert session.end(1, notify=True) is None
    assert session.receive(Data(2, b"late")) == ()


def test_losing_the_tunnel_frees_the_servers_ids():
    session = server_with("one", "two")
    session.lost()
    assert len(session.ids) == 0


def test_the_conversations_the_client_closed_are_told_of_the_tunnels_loss_too():
    # The visitor may still be writing the client's last bytes; its end comes later.
    session = server_with("one")
    session.receive(Close(1))
    assert session.lost() == ["one"]


def test_the_client_refuses_conversations_beyond_its_maximum():
    from tpot.protocol.session import TooMany

    session = ClientSession(HTTP, max_conversations=2)
    for conversation_id in (1, 2):
        [opened] = session.receive(codec.OpenHTTP(conversation_id, "127.0.0.1", 1))
        session.accept(conversation_id, object())
    assert session.receive(codec.OpenHTTP(3, "127.0.0.1", 1)) == (TooMany(3),)
    assert session.no_connect(3) == codec.NoConnect(3)
    session.end(1, notify=True)
    assert type(session.receive(codec.OpenHTTP(4, "127.0.0.1", 1))[0]).__name__ == "OpenRequested"
