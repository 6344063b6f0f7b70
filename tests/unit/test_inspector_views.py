"""The inspector's JSON (tpot.client.inspector.views) for exchanges captured from a real
client Conversation: summaries, details with base64 bodies, filters and their errors."""

import base64

import pytest

from tests.support.captures import Watched, relay
from tpot.client.inspector.capture import ExchangeStore
from tpot.client.inspector.views import DEFAULT_LIMIT, FilterError, detail, parse_limit, select, status_filter, summary, tunnels

HOOK = (b"POST /hook?event=push HTTP/1.1\r\nHost: web.localhost:3000\r\nContent-Type: application/json\r\n"
        b"Content-Length: 11\r\n\r\n{\"ref\":\"a\"}")
FORM = (b"POST /login HTTP/1.1\r\nHost: web.localhost:3000\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 7\r\n\r\nu=a&p=b")
PAGE = b"GET /page HTTP/1.1\r\nHost: web.localhost:3000\r\n\r\n"
CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
DENIED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
MISSING = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nmissing"


def three():
    _, store = relay(HOOK + FORM + PAGE, CREATED + DENIED + MISSING)
    return store


def test_a_summary_says_what_the_list_shows():
    hook = three().get(1)
    assert summary(hook) == {
        "id": 1, "tunnel": "web", "started": hook.started, "method": "POST", "path": "/hook?event=push",
        "status": 201, "duration": hook.duration, "request_size": 11, "response_size": 4,
        "visitor": "127.0.0.1", "replay_of": None, "upgrade": False, "outcome": None,
    }
    assert hook.duration is not None and hook.duration >= 0


def test_a_detail_has_both_messages_in_base64_and_their_views():
    result = detail(three().get(1))
    request, response = result["request"], result["response"]
    assert base64.b64decode(request["raw"]) == HOOK
    assert base64.b64decode(request["body"]) == b'{"ref":"a"}'
    assert request["display"]["start_line"] == "POST /hook?event=push HTTP/1.1"
    assert request["display"]["body"]["kind"] == "json"
    assert (request["body_size"], request["truncated"]) == (11, False)
    assert base64.b64decode(response["raw"]) == CREATED and response["display"]["body"]["text"] == "done"
    assert result["query"] == [["event", "push"]]
    assert result["curl"].endswith("'https://web.example.com/hook?event=push'")


def test_an_unanswered_request_has_no_response_and_says_why():
    _, store = relay(PAGE, b"")
    store_exchanges = list(store.newest_first())
    assert store_exchanges == []  # still waiting: nothing is listed before it ends
    harness, store = relay(PAGE, b"HTTP/1.1 200 OK\r\n")
    harness.target_closes()
    result = detail(next(store.newest_first()))
    assert result["status"] is None and result["response_size"] is None and result["outcome"]


def test_the_newest_come_first_and_the_limit_holds():
    store = three()
    assert [s["id"] for s in select(store.newest_first())] == [3, 2, 1]
    assert [s["id"] for s in select(store.newest_first(), limit=2)] == [3, 2]


@pytest.mark.parametrize("filters, ids", [
    ({"status": "4xx"}, [3, 2]),
    ({"status": "2XX"}, [1]),
    ({"status": "404"}, [3]),
    ({"status": "5xx"}, []),
    ({"path": "/log"}, [2]),
    ({"path": "event=push"}, [1]),
    ({"method": "post"}, [2, 1]),
    ({"method": "POST", "status": "403"}, [2]),
    ({"status": ""}, [3, 2, 1]),
])
def test_filters(filters, ids):
    assert [s["id"] for s in select(three().newest_first(), **filters)] == ids


@pytest.mark.parametrize("text", ["4x", "xx4", "99", "abc", "4xxx", "\u0664\u0660\u0664"])
def test_a_status_filter_that_is_not_one_is_an_error_that_says_what_to_send(text):
    with pytest.raises(FilterError, match="such as 404 or a class such as 4xx"):
        status_filter(text)


def test_the_limit_is_a_whole_number():
    assert parse_limit(None) == parse_limit("") == DEFAULT_LIMIT
    assert parse_limit("7") == 7
    for bad in ("0", "-1", "1.5", "ten", "\u0667"):
        with pytest.raises(FilterError, match="whole number of at least 1"):
            parse_limit(bad)


def test_tunnels_are_listed_with_their_addresses():
    assert tunnels([Watched(ExchangeStore())]) == [{
        "name": "web", "proto": "http", "public_url": "https://web.example.com",
        "target": "http://localhost:8000", "status": "online",
    }]
