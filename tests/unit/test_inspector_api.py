"""The inspector's web side (tpot.client.inspector.api, service) on a MemoryReactorClock:
real twisted.web requests over StringTransports to a real Inspector, replays to a target
connection made by hand.  Who may ask (Host, token), what the JSON says, the live events."""

import base64
import json

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.support.captures import relay
from tpot.client.inspector.api import MAX_API_BODY, MAX_EVENT_STREAMS
from tpot.client.inspector.guard import TOKEN_HEADER
from tpot.client.inspector.present import message_body, split_message
from tpot.client.inspector.service import Inspector
from tpot.client.settings import InspectSettings, client_settings

HOOK = (b"POST /hook HTTP/1.1\r\nHost: web.localhost:3000\r\nContent-Type: application/json\r\n"
        b"Content-Length: 9\r\n\r\n{\"a\": 1}\n")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Page:
    """A browser's connection to the inspector."""

    def __init__(self, inspector):
        site = inspector.reactor.tcpServers[0][1]
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.protocol.makeConnection(self.transport)

    def send(self, method, path, host="127.0.0.1:4040", headers=(), body=b""):
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
        if body or method in ("POST", "DELETE"):
            lines.append(f"Content-Length: {len(body)}")
        self.protocol.dataReceived("\r\n".join(lines).encode() + b"\r\n\r\n" + body)

    def response(self):
        raw = self.transport.value()
        self.transport.clear()
        lines, _ = split_message(raw)
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines[1:])}
        return int(lines[0].split(b" ")[1]), headers, message_body(raw)


@pytest.fixture
def inspector():
    inspector = Inspector(InspectSettings(host="127.0.0.1", port=4040, search=False), MemoryReactorClock())
    assert inspector.listen() == "http://127.0.0.1:4040"
    tunnel = inspector.watch(client_settings("127.0.0.1:8000", server="https://example.com"))
    tunnel.online("web")
    return inspector


def ask(inspector, method, path, **options):
    page = Page(inspector)
    page.send(method, path, **options)
    status, headers, body = page.response()
    if headers.get(b"content-type") == b"application/json":
        return status, json.loads(body)
    return status, body


def captured(inspector, requests=HOOK, responses=OK):
    relay(requests, responses, store=inspector.store, tunnel=inspector.tunnels[0])
    return next(inspector.store.newest_first())


@pytest.mark.parametrize("host", ["evil.example:4040", "127.0.0.1:4041", "localhost.evil:4040", "", "[::1]:4040",
                                  "127.0.0.2:4040"])
def test_a_request_for_another_host_is_refused(inspector, host):
    status, body = ask(inspector, "GET", "/api/tunnels", host=host)
    assert status == 403 and "own address or localhost" in body["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:4040", "localhost:4040", "LOCALHOST:4040"])
def test_the_inspectors_own_address_and_localhost_are_answered(inspector, host):
    assert ask(inspector, "GET", "/api/tunnels", host=host)[0] == 200


def test_the_page_carries_the_token_and_is_locked_down(inspector):
    page = Page(inspector)
    page.send("GET", "/")
    status, headers, body = page.response()
    assert status == 200 and inspector.token.encode() in body and b"{{TOKEN}}" not in body
    assert headers[b"content-security-policy"].startswith(b"default-src 'self'")
    assert headers[b"x-frame-options"] == b"DENY" and headers[b"cache-control"] == b"no-store"
    assert ask(inspector, "GET", "/static/app.js")[0] == 200


def test_tunnels(inspector):
    assert ask(inspector, "GET", "/api/tunnels") == (200, {"tunnels": [{
        "name": "web", "proto": "http", "public_url": "https://web.example.com",
        "target": "http://127.0.0.1:8000", "status": "online"}]})


def test_requests_are_listed_and_shown_with_bodies_in_base64(inspector):
    exchange = captured(inspector)
    status, listed = ask(inspector, "GET", "/api/requests?limit=5&status=2xx&path=/hook")
    assert status == 200 and [r["id"] for r in listed["requests"]] == [exchange.id]
    status, shown = ask(inspector, "GET", f"/api/requests/{exchange.id}")
    assert status == 200 and base64.b64decode(shown["request"]["body"]) == b'{"a": 1}\n'
    assert base64.b64decode(shown["response"]["raw"]) == OK
    assert ask(inspector, "GET", "/api/requests?status=4xx")[1] == {"requests": []}


@pytest.mark.parametrize("query, word", [("limit=0", "limit"), ("limit=x", "limit"), ("status=4x", "status")])
def test_a_bad_filter_is_a_400_that_says_what_to_send(inspector, query, word):
    status, body = ask(inspector, "GET", f"/api/requests?{query}")
    assert status == 400 and body["error"].startswith(word)


@pytest.mark.parametrize("path", ["/api/requests/999", "/api/requests/abc", "/api/requests/-1/replay"])
def test_an_unknown_exchange_is_a_404(inspector, path):
    status, body = ask(inspector, "GET", path)
    assert status == 404 and "No exchange" in body["error"]


def test_deleting_needs_the_token(inspector):
    captured(inspector)
    assert ask(inspector, "DELETE", "/api/requests")[0] == 403
    assert ask(inspector, "DELETE", "/api/requests", headers=[f"{TOKEN_HEADER}: wrong"])[0] == 403
    assert len(inspector.store) == 1
    assert ask(inspector, "DELETE", "/api/requests", headers=[f"{TOKEN_HEADER}: {inspector.token}"])[0] == 204
    assert len(inspector.store) == 0


def test_replaying_needs_the_token_and_sends_nothing_without_it(inspector):
    exchange = captured(inspector)
    status, body = ask(inspector, "POST", f"/api/requests/{exchange.id}/replay")
    assert status == 403 and TOKEN_HEADER in body["error"]
    assert inspector.reactor.tcpClients == []


def replay(inspector, exchange, edits=b""):
    page = Page(inspector)
    page.send("POST", f"/api/requests/{exchange.id}/replay", headers=[f"{TOKEN_HEADER}: {inspector.token}"], body=edits)
    return page


def test_a_replay_sends_the_request_again_and_answers_with_the_new_exchange(inspector):
    exchange = captured(inspector)
    page = replay(inspector, exchange)
    host, port, factory = inspector.reactor.tcpClients[0][:3]
    assert (host, port) == ("127.0.0.1", 8000)
    target = StringTransport()
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(target)
    assert target.value().startswith(b"POST /hook HTTP/1.1\r\n")
    assert target.value().endswith(b'\r\n\r\n{"a": 1}\n') and b"X-Forwarded-For: 127.0.0.1\r\n" in target.value()
    protocol.dataReceived(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
    assert target.disconnecting
    protocol.connectionLost(Failure(ConnectionDone()))
    status, _, body = page.response()
    answer = json.loads(body)
    assert status == 200 and answer["replay_of"] == exchange.id and answer["status"] == 202
    assert inspector.store.get(answer["id"]).replay_of == exchange.id


@pytest.mark.parametrize("edits, word", [
    (b"[1]", "JSON object"), (b"{", "JSON object"), (b'{"method": "GET X"}', "method"),
    (b'{"headers": [["Bad Name", "v"]]}', "header"), (b'{"headers": [["X", "a\\r\\nb: c"]]}', "header"),
    (b'{"body": "***"}', "base64"), (b'{"path": "/a b"}', "path"),
])
def test_bad_edits_are_a_400_and_send_nothing(inspector, edits, word):
    exchange = captured(inspector)
    status, _, body = replay(inspector, exchange, edits).response()
    assert status == 400 and word in json.loads(body)["error"]
    assert inspector.reactor.tcpClients == []


def test_edits_larger_than_the_bound_are_refused(inspector):
    exchange = captured(inspector)
    status, _, body = replay(inspector, exchange, b" " * (MAX_API_BODY + 1)).response()
    assert status == 413


def test_an_unreachable_target_is_a_502(inspector):
    exchange = captured(inspector)
    page = replay(inspector, exchange)
    factory = inspector.reactor.tcpClients[0][2]
    factory.clientConnectionFailed(inspector.reactor.connectors[0], Failure(ConnectionRefusedError()))
    inspector.reactor.advance(1)
    status, _, body = page.response()
    assert status == 502 and "could not be reached" in json.loads(body)["error"]


def test_events_are_pushed_and_a_backed_up_page_is_told_to_resync(inspector):
    page = Page(inspector)
    page.send("GET", "/api/events")
    status, headers, body = page.response()
    assert status == 200 and headers[b"content-type"] == b"text/event-stream"
    exchange = captured(inspector)
    stream = page.transport.value()
    assert b"event: exchange\n" in stream and f'"id": {exchange.id}'.encode() in stream
    page.transport.clear()
    page.transport.producer.pauseProducing()
    captured(inspector)
    captured(inspector)
    assert b"event: exchange" not in page.transport.value()
    page.transport.producer.resumeProducing()
    assert b"event: resync\n" in page.transport.value()
    page.transport.clear()
    inspector.store.clear()
    assert b"event: clear\n" in page.transport.value()


def test_the_number_of_pages_following_is_bounded(inspector):
    pages = [Page(inspector) for _ in range(MAX_EVENT_STREAMS + 1)]
    for page in pages:
        page.send("GET", "/api/events")
    assert pages[-1].response()[0] == 503
    pages[0].protocol.connectionLost(Failure(ConnectionDone()))
    assert len(inspector.store.listeners) == MAX_EVENT_STREAMS - 1
