"""The inspector's capture (tpot.client.inspector.capture) on a real client Conversation,
without sockets: what it keeps per exchange, where it cuts, how it is bounded, and that it
never changes what is relayed."""

import pytest

from tests.support.captures import inspected, relay
from tests.support.splits import every_split
from tpot.client.inspector.capture import MAX_BODY, ExchangeStore

GET = b"GET /a?x=1 HTTP/1.1\r\nHost: web.localhost:3000\r\n\r\n"
POST = b"POST /hook HTTP/1.1\r\nHost: web.localhost:3000\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
CHUNKED = (b"PUT /up HTTP/1.1\r\nHost: web.localhost:3000\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: t\r\n\r\n")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CREATED = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndone\r\n0\r\n\r\n"
CONTINUE_THEN_OK = b"HTTP/1.1 100 Continue\r\n\r\n" + OK


def test_each_request_and_response_is_kept_as_it_went_over_the_wire():
    harness, store = relay(GET + POST, OK + CREATED)
    exchanges = list(store.newest_first())[::-1]
    assert [(e.id, e.method, e.path, e.status) for e in exchanges] == [(1, "GET", "/a?x=1", 200), (2, "POST", "/hook", 201)]
    assert [e.request.raw for e in exchanges] == [GET, POST]
    assert [e.response.raw for e in exchanges] == [OK, CREATED]
    assert [(e.request.body_size, e.response.body_size) for e in exchanges] == [(0, 2), (7, 4)]
    assert exchanges[0].visitor == "127.0.0.1" and exchanges[0].tunnel.name == "web"
    assert harness.target_bytes() == GET + POST


@pytest.mark.parametrize("side", ["requests", "responses"])
def test_pipelined_exchanges_are_cut_in_the_same_places_at_every_split(side):
    requests, responses = GET + CHUNKED + POST, CONTINUE_THEN_OK + CREATED + OK
    stream = requests if side == "requests" else responses
    for pieces in every_split(stream, random_splits=10):
        chosen = {"request_pieces" if side == "requests" else "response_pieces": pieces}
        harness, store = relay(requests, responses, **chosen)
        exchanges = list(store.newest_first())[::-1]
        assert [e.request.raw for e in exchanges] == [GET, CHUNKED, POST], pieces
        assert [e.response.raw for e in exchanges] == [CONTINUE_THEN_OK, CREATED, OK], pieces
        assert [e.status for e in exchanges] == [200, 201, 200]
        assert exchanges[1].request.body_size == 5  # chunk data, not its framing
        assert harness.target_bytes() == requests and harness.session.visitor_bytes() == responses


def test_a_body_is_kept_up_to_a_mebibyte_and_relayed_whole():
    body = bytes(range(256)) * (MAX_BODY // 256 + 2048)
    head = b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    harness, store = relay(head + body, OK, request_pieces=[head, body[:65536], body[65536:]])
    (exchange,) = store.newest_first()
    assert exchange.request.truncated and exchange.request.body_size == len(body)
    assert exchange.request.raw == head + body[:MAX_BODY]
    assert harness.target_bytes() == head + body
    assert store.held == len(head) + MAX_BODY + len(OK)


@pytest.mark.parametrize("reads", [1, 2])
def test_a_response_body_is_kept_up_to_a_mebibyte_whether_it_comes_in_one_read_or_more(reads):
    body = bytes(range(256)) * (MAX_BODY // 256 + 16)
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    cut = len(response) if reads == 1 else 1000
    harness, store = relay(GET, response, response_pieces=[response[:cut], response[cut:]])
    (exchange,) = store.newest_first()
    assert exchange.response.truncated and exchange.response.body_size == len(body)
    assert exchange.response.raw == response[:len(response) - len(body) + MAX_BODY]
    assert harness.session.visitor_bytes() == response
    assert store.held == len(GET) + len(exchange.response.raw)


def test_the_store_keeps_the_newest_and_counts_only_what_it_holds():
    store = ExchangeStore(keep=3)
    relay(GET * 5, OK * 5, store=store)
    assert [e.id for e in store.newest_first()] == [5, 4, 3]
    assert store.held == 3 * (len(GET) + len(OK))
    store.clear()
    assert len(store) == 0 and store.held == 0


def test_the_store_finds_what_it_holds_by_id_and_nothing_else():
    store = ExchangeStore(keep=3)
    relay(GET * 5, OK * 5, store=store)
    assert [store.get(n).id if store.get(n) else None for n in range(-1, 8)] == [None, None, None, None, 3, 4, 5, None, None]
    store.clear()
    assert store.get(5) is None
    relay(GET, OK, store=store)
    assert store.get(6).id == 6 and store.get(5) is None


def test_past_the_byte_budget_the_oldest_go_then_bodies_stop_being_kept():
    store = ExchangeStore(max_bytes=2 * (len(GET) + len(OK)))
    relay(GET * 3, OK * 3, store=store)
    assert [e.id for e in store.newest_first()] == [3, 2] and store.held <= store.max_bytes
    tiny = ExchangeStore(max_bytes=len(POST) - 3)
    harness, tiny = relay(POST, OK, store=tiny)
    (exchange,) = tiny.newest_first()
    assert exchange.request.truncated and exchange.status == 200 and tiny.held <= tiny.max_bytes
    assert harness.target_bytes() == POST and harness.session.visitor_bytes() == OK


def test_a_response_whose_body_is_past_the_budget_keeps_its_head():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    store = ExchangeStore(max_bytes=len(GET) + len(head) + 5)
    harness, store = relay(GET, head + b"0123456789", store=store)
    (exchange,) = store.newest_first()
    assert exchange.response.raw == head and exchange.response.truncated and exchange.status == 200
    assert exchange.response.body_size == 10 and store.held == len(GET) + len(head)
    assert harness.session.visitor_bytes() == head + b"0123456789"


def test_an_upgrade_keeps_its_handshake_only():
    upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    harness, store = relay(upgrade + b"\x81\x05hello" * 100, switching + b"\x81\x02hi" * 100)
    (exchange,) = store.newest_first()
    assert (exchange.status, exchange.upgrade) == (101, True)
    assert exchange.request.raw == upgrade and exchange.response.raw == switching
    assert store.held == len(upgrade) + len(switching)


def test_requests_left_unanswered_are_kept_with_how_the_conversation_ended():
    harness, store = relay(GET + POST, OK + b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
    harness.target_closes()
    second, first = store.newest_first()
    assert first.status == 200 and (second.status, second.outcome) == (None, "closed")
    assert second.response.raw.endswith(b"part")


def test_an_unreachable_target_is_said_for_its_requests():
    harness, store = inspected()
    harness.visit(GET)
    harness.conversation.could_not_connect()
    (exchange,) = store.newest_first()
    assert (exchange.status, exchange.outcome, exchange.response) == (None, "target unreachable", None)


def test_a_basic_auth_login_is_never_kept():
    credentials = b"Authorization: Basic dXNlcjpzZWNyZXQ=\r\n"  # user:secret
    harness, store = inspected(basic_auth="user:secret")
    harness.visit(b"GET / HTTP/1.1\r\nHost: a\r\n" + credentials + b"\r\n")
    harness.target_up()
    harness.answer(OK)
    (exchange,) = store.newest_first()
    assert exchange.status == 200 and b"dXNlcjpzZWNyZXQ" not in exchange.request.raw


def test_the_host_rewrite_is_what_the_inspector_sees():
    harness, store = inspected(host_rewrite="localhost:8000")
    harness.visit(GET)
    harness.target_up()
    harness.answer(OK)
    (exchange,) = store.newest_first()
    assert b"Host: localhost:8000\r\n" in exchange.request.raw and exchange.request.raw == harness.target_bytes()


def test_the_store_tells_its_listeners_of_each_exchange_and_of_clearing():
    store = ExchangeStore()
    heard = []
    store.listeners.append(heard.append)
    relay(GET * 2, OK * 2, store=store)
    store.clear()
    assert [e.id if e is not None else None for e in heard] == [1, 2, None]
