"""Server-side hardening, in memory and as units: every limit and timeout proven to bite.

FailureLimiter and the Authenticator's 429, name reservations for the reclaim extension
(over the wire; the store's own rules are in its contract suite), SilenceTimer, the visitor idle timeout, the per-address
connection cap, /api/status, and 4180 for oversized or malformed WebSocket messages.
Every test here runs on a memory clock; none opens a socket.  An autouse fixture checks
that nothing was logged as an error (no exception escaped into Twisted's log).
"""

import json

import pytest
from twisted.internet import task
from twisted.logger import globalLogPublisher

from tests.support.deferreds import failed, succeeded
from tests.support.memory import (
    BINARY,
    CLOSE,
    TEXT,
    MemoryServer,
    data,
    encode_frame,
    parse_response,
    settle,
    signal,
    upgrade_request,
    use_clock,
    visit,
    visitor_request,
)
from tpot.http.head import HeadError
from tpot.protocol import auth
from tpot.protocol.auth import FailureLimiter
from tpot.protocol.codec import (
    CLOSE_PROTOCOL_ERROR,
    EXTENSIONS_HEADER,
    MAX_MESSAGE_SIZE,
    RECLAIM_HEADER,
    RECLAIM_TOKEN_HEADER,
)
from tpot.server.authenticator import Authenticator
from tpot.server.memory_store import MemoryNameStore
from tpot.server.router import IDLE_TIMEOUT, RouterProtocol
from tpot.server.store import RESERVE_SECONDS
from tpot.server.timers import SilenceTimer
from tpot.server.visitor import VisitorProtocol

KEY = "h" * 40
NOW_MS = 1_800_000_000_000
ASK_RECLAIM = (EXTENSIONS_HEADER, "reclaim")


# ---------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(autouse=True)
def logged_errors():
    """Every error Twisted (or Autobahn, through txaio) logs during a test; must stay empty."""
    errors = []

    def observer(event):
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observer)
    yield errors
    globalLogPublisher.removeObserver(observer)
    assert not errors, [
        (event.get("log_format"), event["log_failure"].getTraceback() if event.get("log_failure") else None)
        for event in errors
    ]


class HardenedServer(MemoryServer):
    """A MemoryServer whose name store has a tunnel limit, with router limits set."""

    def __init__(self, key=None, clock_ms=None, max_tunnels=None, **router_limits):
        super().__init__(key=key, clock_ms=clock_ms)
        self.store = MemoryNameStore(max_tunnels=max_tunnels, clock=self.clock)
        self.tunnels.store = self.store
        self.router.store = self.store
        for name, value in router_limits.items():
            assert hasattr(self.router, name), name
            setattr(self.router, name, value)


def make(**options):
    server = HardenedServer(**options)
    server.restore = use_clock(server.clock)
    return server


@pytest.fixture
def servers():
    made = []

    def start(**options):
        server = make(**options)
        made.append(server)
        return server

    yield start
    for server in made:
        server.restore()


@pytest.fixture
def server(servers):
    return servers()


def response_of(server, transport, status):
    settle(server.clock)
    response = parse_response(transport.value())
    assert response.status == status, transport.value()
    assert int(response.header("content-length")) == len(response.body)
    assert transport.lost
    return response


def close_frame(peer):
    """The one frame the server sent since the last read, which must be a close; (code, reason)."""
    frames = peer.new_frames()
    assert [frame.opcode for frame in frames] == [CLOSE], frames
    return frames[0].close_code, frames[0].payload[2:].decode("utf-8")


def status_document(server, method="GET"):
    transport = server.connect(f"{method} /api/status HTTP/1.1\r\nHost: localhost:3000\r\n\r\n".encode())
    settle(server.clock)
    response = parse_response(transport.value())
    assert transport.lost
    return response


def counts(server):
    response = status_document(server)
    assert response.status == 200
    document = json.loads(response.body)
    return document["tunnels"], document["conversations"]


# ---------------------------------------------------------------------------------------
# FailureLimiter


T0 = 1_750_000_000_000


def fail(limiter, source, times, now):
    for _ in range(times):
        limiter.failed(source, now)


def test_limiter_blocks_only_from_the_fifth_failure_within_the_window():
    limiter = FailureLimiter()
    for attempt in range(4):
        limiter.failed("a", T0 + attempt * 1000)
        assert limiter.retry_after("a", T0 + attempt * 1000) is None
    limiter.failed("a", T0 + 4000)
    # The window started with the first failure: 60 s from T0.
    assert limiter.retry_after("a", T0 + 4000) == 56
    assert limiter.retry_after("b", T0 + 4000) is None


@pytest.mark.parametrize(
    "offset_ms, expected",
    [(0, 60), (500, 60), (10_500, 50), (59_000, 1), (59_999, 1), (60_000, None), (120_000, None)],
)
def test_limiter_retry_after_is_the_rest_of_the_window_rounded_up(offset_ms, expected):
    limiter = FailureLimiter()
    fail(limiter, "a", 5, T0)
    assert limiter.retry_after("a", T0 + offset_ms) == expected


def test_limiter_windows_are_fixed_and_failures_do_not_carry_over():
    limiter = FailureLimiter()
    fail(limiter, "a", 4, T0)
    fail(limiter, "a", 4, T0 + 60_000)  # a new window: the count starts again
    assert limiter.retry_after("a", T0 + 60_000) is None
    limiter.failed("a", T0 + 119_999)
    assert limiter.retry_after("a", T0 + 119_999) == 1
    assert limiter.retry_after("a", T0 + 120_000) is None


def test_limiter_custom_limits():
    limiter = FailureLimiter(max_failures=2, window_ms=10_000)
    fail(limiter, "a", 2, T0)
    assert limiter.retry_after("a", T0 + 2500) == 8
    assert limiter.retry_after("a", T0 + 10_000) is None


def test_limiter_default_memory_bound():
    limiter = FailureLimiter()
    assert limiter.max_sources <= 100_000
    for i in range(limiter.max_sources + 10):
        limiter.failed(i, T0)
    assert len(limiter) == limiter.max_sources


def test_limiter_memory_is_bounded_and_forgets_the_least_recent_first():
    limiter = FailureLimiter(max_sources=100)
    fail(limiter, "keep", 5, T0)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", T0 + 1)
        if i % 50 == 0:
            fail(limiter, "keep", 1, T0 + 1)  # still failing: stays remembered
    assert len(limiter) == 100
    assert limiter.retry_after("keep", T0 + 2) == 60
    assert limiter.retry_after("10.0.0.0", T0 + 2) is None
    assert "10.0.0.0" not in limiter._windows
    assert "10.0.3.231" in limiter._windows  # the newest (i = 999)


# ---------------------------------------------------------------------------------------
# Authenticator: 429 per source


class CountingKdf:
    def __init__(self):
        self.calls = 0

    def __call__(self, f, *args):
        from twisted.internet import defer

        self.calls += 1
        return defer.maybeDeferred(f, *args)


def header(key=KEY, timestamp_ms=NOW_MS):
    return auth.make_authorization(key, timestamp_ms=timestamp_ms)


def test_authenticator_429_after_five_failures_from_one_source_only():
    now = [NOW_MS]
    kdf = CountingKdf()
    checker = Authenticator(KEY, kdf, clock_ms=lambda: now[0])
    for _ in range(5):
        assert failed(checker.check(header(key="w" * 40), "10.0.0.1"), HeadError).status == 401
    assert kdf.calls == 5
    # Now even a good header from that source is refused, with no KDF run.
    error = failed(checker.check(header(), "10.0.0.1"), HeadError)
    assert error.status == 429
    assert dict(error.headers) == {"Retry-After": "60"}
    error = failed(checker.check("garbage", "10.0.0.1"), HeadError)
    assert error.status == 429
    assert kdf.calls == 5
    # Another source is judged on its own merits.
    assert failed(checker.check(header(key="w" * 40), "10.0.0.2"), HeadError).status == 401
    assert succeeded(checker.check(header(), "10.0.0.2")) is None
    # Retry-After counts down; once the window is over the source may try again.
    now[0] += 30_500
    assert dict(failed(checker.check(header(), "10.0.0.1"), HeadError).headers) == {"Retry-After": "30"}
    now[0] = NOW_MS + 60_000
    assert succeeded(checker.check(header(timestamp_ms=now[0]), "10.0.0.1")) is None


def test_malformed_and_stale_headers_count_as_failures():
    checker = Authenticator(KEY, CountingKdf(), clock_ms=lambda: NOW_MS)
    for value in (None, "Basic x", "TPoT-1 !!", header(timestamp_ms=NOW_MS - 61_000), header(key="w" * 40)):
        assert failed(checker.check(value, "10.0.0.9"), HeadError).status == 401
    assert failed(checker.check(header(), "10.0.0.9"), HeadError).status == 429


def test_router_answers_429_with_retry_after_and_closes(servers):
    server = servers(key=KEY, clock_ms=lambda: NOW_MS)
    bad = [("Authorization", header(key="w" * 40))]
    for port in range(41000, 41005):
        transport = server.connect(upgrade_request("/create-tpot?subdomain=wire", headers=bad), peer=("10.0.0.1", port))
        assert response_of(server, transport, 401).header("www-authenticate") == "TPoT-1"
    good = [("Authorization", header())]
    transport = server.connect(upgrade_request("/create-tpot?subdomain=wire", headers=good), peer=("10.0.0.1", 41006))
    response = response_of(server, transport, 429)
    assert response.header("retry-after") == "60"
    assert response.header("connection") == "close"
    assert server.tunnel_serving("wire") is None
    # That header is used up, even though it was refused before its check...
    transport = server.connect(upgrade_request("/create-tpot?subdomain=wire", headers=good), peer=("10.0.0.2", 41007))
    response_of(server, transport, 401)
    # ...and another address with a good header of its own gets its tunnel.
    peer = server.open_tunnel("wire", headers=[("Authorization", header())], peer=("10.0.0.2", 41008))
    assert peer.name == "wire"


@pytest.mark.parametrize("request_path, status", [
    ("/create-tpot?subdomain=www", 400),  # a reserved name
    ("/create-tpot?subdomain=bad-", 400),
    ("/connect-tpot?subdomain=nothere", 503),  # no such TCP tunnel
])
def test_a_header_refused_before_its_check_is_used_up(servers, request_path, status):
    server = servers(key=KEY, clock_ms=lambda: NOW_MS)
    captured = [("Authorization", header())]
    response_of(server, server.connect(upgrade_request(request_path, headers=captured), peer=("10.0.0.1", 1)), status)
    transport = server.connect(upgrade_request("/create-tpot?subdomain=other", headers=captured), peer=("10.0.0.3", 2))
    response_of(server, transport, 401)


def test_a_header_refused_while_draining_is_used_up(servers):
    server = servers(key=KEY, clock_ms=lambda: NOW_MS)
    captured = [("Authorization", header())]
    server.router.draining = True
    response_of(server, server.connect(upgrade_request("/create-tpot?subdomain=one", headers=captured)), 503)
    server.router.draining = False
    response_of(server, server.connect(upgrade_request("/create-tpot?subdomain=one", headers=captured)), 401)


# ---------------------------------------------------------------------------------------
# Name reservations (the reclaim extension): the store-level rules are in the name store
# contract (tests/support/store_contract.py); here, what a client sees over the wire.


@pytest.fixture
def clock():
    return task.Clock()


def test_101_grants_reclaim_only_when_asked(server):
    plain = server.open_tunnel("plain")
    assert plain.response.header(EXTENSIONS_HEADER) is None
    assert plain.response.header(RECLAIM_TOKEN_HEADER) is None
    unknown = server.open_tunnel("unknown", headers=[(EXTENSIONS_HEADER, "teleport, x-y")])
    assert unknown.response.header(EXTENSIONS_HEADER) is None
    assert unknown.response.header(RECLAIM_TOKEN_HEADER) is None
    asked = server.open_tunnel("asked", headers=[(EXTENSIONS_HEADER, "teleport, Reclaim")])
    assert asked.response.header(EXTENSIONS_HEADER) == "reclaim"
    token = asked.response.header(RECLAIM_TOKEN_HEADER)
    assert token and token == server.tunnel_serving("asked").claim.token
    other = server.open_tunnel("other", headers=[ASK_RECLAIM])
    assert other.response.header(RECLAIM_TOKEN_HEADER) not in (None, token)


def upgrade(server, name, headers=(), peer=None):
    return server.connect(upgrade_request(f"/create-tpot?subdomain={name}", headers=headers), peer=peer)


def test_reclaim_after_a_drop(server):
    first = server.open_tunnel("wire", headers=[ASK_RECLAIM])
    token = first.response.header(RECLAIM_TOKEN_HEADER)
    waiting, _ = visit(server, first, 40001)
    first.transport.peer_closes()  # dropped: no close frame
    settle(server.clock)
    assert response_of(server, waiting, 503)
    assert server.tunnel_serving("wire") is None
    assert counts(server) == (0, 0)
    # Visitors meanwhile get 503; nobody else gets the name; a wrong token neither.
    assert response_of(server, server.visit("wire"), 503)
    response_of(server, upgrade(server, "wire"), 409)
    response_of(server, upgrade(server, "wire", [ASK_RECLAIM]), 409)
    response_of(server, upgrade(server, "wire", [ASK_RECLAIM, (RECLAIM_HEADER, token + "x")]), 409)
    server.clock.advance(RESERVE_SECONDS - 1)
    response_of(server, upgrade(server, "wire"), 409)
    # The holder of the token gets it back, and visitors reach the new tunnel.
    again = server.open_tunnel("wire", headers=[ASK_RECLAIM, (RECLAIM_HEADER, token)])
    assert again.name == "wire"
    assert server.tunnel_serving("wire") is again.protocol
    visitor, cid = visit(server, again, 40002)
    again.send(data(cid, b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert visitor.value() == b"HTTP/1.1 204 No Content\r\n\r\n"
    # The reservation's timer went with the reclaim: no expiry takes the name later.
    for _ in range(5):
        server.clock.advance(15)
        again.ping()  # keeps the new tunnel itself alive
    assert not again.transport.disconnecting
    assert server.tunnel_serving("wire") is again.protocol
    response_of(server, upgrade(server, "wire"), 409)


def test_a_close_other_than_1000_reserves_the_name(server):
    first = server.open_tunnel("wire", headers=[ASK_RECLAIM])
    token = first.response.header(RECLAIM_TOKEN_HEADER)
    first.close(1001)
    settle(server.clock)
    assert first.transport.lost
    response_of(server, upgrade(server, "wire"), 409)
    assert server.open_tunnel("wire", headers=[(RECLAIM_HEADER, token)]).name == "wire"


def test_a_client_closing_with_1000_has_left_and_frees_the_name(server):
    first = server.open_tunnel("wire", headers=[ASK_RECLAIM])
    first.close(1000)
    settle(server.clock)
    assert first.transport.lost
    assert server.open_tunnel("wire").name == "wire"


def test_reservation_expires_over_the_wire(server):
    first = server.open_tunnel("wire", headers=[ASK_RECLAIM])
    token = first.response.header(RECLAIM_TOKEN_HEADER)
    first.transport.peer_closes()
    settle(server.clock)
    server.clock.advance(RESERVE_SECONDS)
    settle(server.clock)
    someone = server.open_tunnel("wire")
    assert someone.name == "wire"
    # The old token does not take it from the new holder.
    response_of(server, upgrade(server, "wire", [ASK_RECLAIM, (RECLAIM_HEADER, token)]), 409)


def test_reference_clients_get_no_reservation(server):
    first = server.open_tunnel("wire")  # no TPoT-Extensions: the reference client
    first.transport.peer_closes()
    settle(server.clock)
    assert not [call for call in server.clock.getDelayedCalls() if "_expire" in repr(call.func)]
    assert server.open_tunnel("wire").name == "wire"


# ---------------------------------------------------------------------------------------
# SilenceTimer


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, silent_for):
        self.calls.append(silent_for)


def test_silence_timer_fires_after_the_timeout_of_silence(clock):
    fired = Recorder()
    timer = SilenceTimer(clock, 10, fired)
    timer.start()
    clock.advance(9.999)
    assert fired.calls == []
    clock.advance(0.001)
    assert fired.calls == [10]
    clock.advance(100)
    assert fired.calls == [10]  # once
    assert not clock.getDelayedCalls()


def test_silence_timer_touch_postpones_without_rescheduling(clock):
    fired = Recorder()
    timer = SilenceTimer(clock, 10, fired)
    timer.start()
    (call,) = clock.getDelayedCalls()
    for _ in range(1000):
        clock.advance(0.005)
        timer.touch()
    # A thousand touches, still the one pending call, not moved.
    assert clock.getDelayedCalls() == [call] and call.getTime() == 10
    clock.advance(10 - clock.seconds())
    assert fired.calls == []  # it fired early and re-armed for the remainder
    assert clock.getDelayedCalls()[0].getTime() == pytest.approx(15)
    clock.advance(4.999)
    assert fired.calls == []
    clock.advance(0.001)
    assert fired.calls == [pytest.approx(10)]


def test_silence_timer_stop_and_disabled(clock):
    fired = Recorder()
    timer = SilenceTimer(clock, 10, fired)
    timer.start()
    timer.stop()
    timer.stop()
    assert not clock.getDelayedCalls()
    assert timer.on_silence is None  # let go: no cycle with its owner left to the collector
    clock.advance(100)
    for timeout in (None, 0):
        SilenceTimer(clock, timeout, fired).start()
        assert not clock.getDelayedCalls()
    clock.advance(100)
    assert fired.calls == []


# ---------------------------------------------------------------------------------------
# Visitor idle timeout


def test_idle_visitor_is_closed_after_the_idle_timeout(servers):
    server = servers(idle_timeout=20)
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    server.clock.advance(19)
    peer.ping()
    settle(server.clock)
    assert not visitor.disconnecting
    server.clock.advance(1)
    settle(server.clock)
    assert visitor.lost
    assert visitor.value() == b""
    # The client hears the conversation is over; the tunnel itself lives on.
    assert [f.payload for f in peer.new_frames() if f.opcode == BINARY] == [signal(cid, b"X")]
    assert not peer.transport.disconnecting
    assert counts(server) == (1, 0)


def test_visitor_with_traffic_either_way_is_not_idle(servers):
    server = servers(idle_timeout=20)
    peer = server.open_tunnel("wire")
    talks, _ = visit(server, peer, 40001)
    listens, listens_id = visit(server, peer, 40002)
    silent, _ = visit(server, peer, 40003)
    for step in range(1, 13):  # 180 s, nine idle timeouts
        server.clock.advance(15)
        talks.receive(b"more")  # visitor -> tunnel
        peer.send(data(listens_id, b"."))  # tunnel -> visitor (also keeps the tunnel alive)
        settle(server.clock)
        assert silent.lost == (step >= 2), step  # closed at 20 s
    assert not talks.disconnecting and not listens.disconnecting
    assert listens.value() == b"." * 12
    assert counts(server) == (1, 2)


def test_default_idle_timeout_is_generous_but_applies(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    assert isinstance(visitor.protocol._next, VisitorProtocol)
    for _ in range(int(IDLE_TIMEOUT // 15) - 1):
        server.clock.advance(15)
        peer.ping()  # the tunnel stays alive; the visitor says nothing
    settle(server.clock)
    assert not visitor.disconnecting
    server.clock.advance(15)
    settle(server.clock)
    assert visitor.lost


# ---------------------------------------------------------------------------------------
# Pause: what an honest client still has in flight is not mistaken for ignoring it


def test_data_in_flight_when_pausing_is_delivered_not_cut(server):
    """After P, an honest client's kernel send buffer (Linux tcp_wmem max: 4 MiB by
    default) and our receive buffer still drain to us; seen in e2e as ~4.4 MiB."""
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    visitor.hold()
    visitor.producer.pauseProducing()
    assert peer.new_messages() == [signal(cid, b"P")]
    chunk = b"f" * (64 * 1024)
    in_flight = 6 * 1024 * 1024
    for _ in range(in_flight // len(chunk)):
        peer.send(data(cid, chunk))
    settle(server.clock)
    assert not visitor.aborted and not visitor.disconnecting
    assert len(visitor.value()) == in_flight
    assert peer.new_messages() == []  # no X: the conversation goes on
    visitor.drain()
    assert peer.new_messages() == [signal(cid, b"C")]


# ---------------------------------------------------------------------------------------
# Header timeout (--header-timeout)


def test_configured_header_timeout_408s_slow_heads_without_delaying_others(servers):
    server = servers(header_timeout=2)
    peer = server.open_tunnel("wire")
    slow = [server.connect(b"GET /slow HTTP/1.1\r\nHo", peer=("10.0.0.1", port)) for port in range(1000, 1300)]
    server.clock.advance(1.5)
    visitor, cid = visit(server, peer, 40001)  # routed at once, however many heads are pending
    peer.send(data(cid, b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert visitor.value() == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert not any(transport.disconnecting for transport in slow)
    server.clock.advance(0.5)
    settle(server.clock)
    for transport in slow:
        assert parse_response(transport.value()).status == 408 and transport.lost
    assert not visitor.disconnecting and not peer.transport.disconnecting
    assert not [call for call in server.clock.getDelayedCalls() if isinstance(getattr(call.func, "__self__", None), RouterProtocol)]


# ---------------------------------------------------------------------------------------
# Per-address connection cap


def admitted(server, transport):
    settle(server.clock)
    assert not transport.disconnecting and not transport.lost, transport.value()
    return transport


def test_per_address_cap_is_429_and_released_as_connections_close(servers):
    server = servers(max_per_source=3)
    me = "10.0.0.1"
    tunnel = server.open_tunnel("wire", peer=(me, 1))  # handed over to the tunnel's WebSocket
    visitor = admitted(server, server.connect(visitor_request("wire"), peer=(me, 2)))  # handed over to a relay
    slow = admitted(server, server.connect(b"GET / HT", peer=(me, 3)))  # still reading its head
    assert isinstance(visitor.protocol, RouterProtocol) and isinstance(visitor.protocol._next, VisitorProtocol)

    # The fourth connection from that address is refused at once.
    response = response_of(server, server.connect(peer=(me, 4)), 429)
    assert response.header("connection") == "close"
    assert b"too many connections" in response.body.lower()
    # Another address is not affected.
    assert counts(server) == (1, 1)

    # A connection that never got past its head frees its slot when it goes...
    slow.peer_closes()
    settle(server.clock)
    slow = admitted(server, server.connect(b"GET / HT", peer=(me, 5)))
    response_of(server, server.connect(peer=(me, 6)), 429)

    # ...and so does a handed-over visitor...
    visitor.peer_closes()
    settle(server.clock)
    visitor = admitted(server, server.connect(visitor_request("wire"), peer=(me, 7)))
    response_of(server, server.connect(peer=(me, 8)), 429)

    # ...and a handed-over tunnel (whose visitor the server then closes, freeing its slot too).
    tunnel.transport.peer_closes()
    settle(server.clock)
    response_of(server, visitor, 503)
    again = server.open_tunnel("again", peer=(me, 9))
    other_visitor = admitted(server, server.connect(visitor_request("again"), peer=(me, 10)))
    response_of(server, server.connect(peer=(me, 11)), 429)

    # When everything is gone nothing is left counted.
    for transport in (slow, other_visitor, again.transport):
        transport.peer_closes()
    settle(server.clock)
    assert server.router._per_source == {}
    for port in range(20, 23):
        admitted(server, server.connect(b"GET / HT", peer=(me, port)))


def test_no_cap_by_default(server):
    for port in range(100):
        admitted(server, server.connect(b"GET / HT", peer=("10.0.0.1", port)))
    assert server.router._per_source == {}


# ---------------------------------------------------------------------------------------
# /api/status


def test_status_counts_tunnels_and_conversations_and_returns_to_zero(server):
    response = status_document(server)
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    assert response.header("cache-control") == "no-store"
    document = json.loads(response.body)
    assert document["tunnels"] == 0 and document["conversations"] == 0
    assert set(document) >= {"tunnels", "conversations", "uptime_s", "version"}

    one = server.open_tunnel("one")
    two = server.open_tunnel("two", headers=[ASK_RECLAIM])
    a, a_id = visit(server, one, 40001)
    b, _ = visit(server, one, 40002)
    c, _ = visit(server, two, 40003)
    server.connect(b"GET / HT")  # not yet routed: not a conversation
    assert counts(server) == (2, 3)
    server.clock.advance(5)
    one.ping(), two.ping()
    assert json.loads(status_document(server).body)["uptime_s"] == pytest.approx(5)

    one.send(signal(a_id, b"X"))
    settle(server.clock)
    assert counts(server) == (2, 2)
    b.peer_closes()
    settle(server.clock)
    assert counts(server) == (2, 1)
    two.transport.peer_closes()  # reserved for reclaim: not an active tunnel
    settle(server.clock)
    assert c.lost
    assert counts(server) == (1, 0)
    one.close()
    settle(server.clock)
    assert counts(server) == (0, 0)


def test_status_head_has_no_body_and_other_methods_are_405(server):
    server.open_tunnel("one")
    head = status_document(server, "HEAD")
    assert head.status == 200
    assert head.body == b"", "a response to HEAD must not carry a body"
    assert int(head.header("content-length")) == len(status_document(server).body)
    refused = status_document(server, "POST")
    assert refused.status == 405


def test_status_is_only_on_the_bare_domain(server):
    server.open_tunnel("one")
    transport = server.connect(b"GET /api/status HTTP/1.1\r\nHost: one.localhost\r\n\r\n")
    settle(server.clock)
    # Relayed to the tunnel like any visitor request, not answered by the server.
    assert transport.value() == b"" and not transport.disconnecting
    assert counts(server) == (1, 1)


# ---------------------------------------------------------------------------------------
# Oversized and malformed WebSocket messages: 4180, only that tunnel


def two_tunnels(server):
    bad = server.open_tunnel("bad")
    good = server.open_tunnel("good")
    bad_visitor, _ = visit(server, bad, 40001)
    good_visitor, good_id = visit(server, good, 40002)
    return bad, bad_visitor, good, good_visitor, good_id


def only_bad_one_died(server, bad, bad_visitor, good, good_visitor, good_id):
    bad.close(CLOSE_PROTOCOL_ERROR)
    settle(server.clock)
    assert bad.transport.lost
    assert parse_response(bad_visitor.value()).status == 503 and bad_visitor.lost
    assert server.tunnel_serving("bad") is None
    assert not good.transport.disconnecting and not good_visitor.disconnecting
    good.send(data(good_id, b"fine"))
    good_visitor.receive(b"also fine")
    assert good_visitor.value() == b"fine"
    assert good.new_messages() == [data(good_id, b"also fine")]
    assert counts(server) == (1, 1)


def test_frame_larger_than_1_mib_closes_with_4180(server):
    bad, bad_visitor, good, good_visitor, good_id = two_tunnels(server)
    payload = data(1, b"x" * (MAX_MESSAGE_SIZE - 4 + 1))
    assert len(payload) == MAX_MESSAGE_SIZE + 1
    frame = encode_frame(BINARY, payload)
    bad.transport.receive(frame[:14])  # the header alone is enough to refuse it
    code, reason = close_frame(bad)
    assert code == CLOSE_PROTOCOL_ERROR
    assert "larger than" in reason
    bad.transport.receive(frame[14:])  # the rest is read and thrown away
    assert bad.new_frames() == []
    assert bad_visitor.value() == b""  # nothing of it was relayed
    only_bad_one_died(server, bad, bad_visitor, good, good_visitor, good_id)


def test_fragmented_message_larger_than_1_mib_closes_with_4180(server):
    bad, bad_visitor, good, good_visitor, good_id = two_tunnels(server)
    half = MAX_MESSAGE_SIZE // 2
    bad.send(data(1, b"a" * half), fin=False)
    assert bad.new_frames() == []
    bad.send(b"b" * half, opcode=0x0, fin=True)
    code, reason = close_frame(bad)
    assert code == CLOSE_PROTOCOL_ERROR and reason
    assert bad_visitor.value() == b""
    only_bad_one_died(server, bad, bad_visitor, good, good_visitor, good_id)


def test_a_message_of_exactly_1_mib_is_accepted(server):
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    body = bytes(range(256)) * ((MAX_MESSAGE_SIZE - 4) // 256)
    body += b"z" * (MAX_MESSAGE_SIZE - 4 - len(body))
    peer.send(data(cid, body))
    assert peer.new_frames() == []
    assert visitor.value() == body


MALFORMED = [
    ("empty", b"", BINARY),
    ("unknown-type-00", b"\x00\x01\x00D", BINARY),
    ("unknown-type-13", b"\x13\x01\x00Dhi", BINARY),
    ("unknown-type-ff", b"\xff", BINARY),
    ("truncated-1", b"\x12", BINARY),
    ("truncated-2", b"\x12\x01", BINARY),
    ("truncated-3", b"\x12\x01\x00", BINARY),
    ("unknown-code", b"\x12\x01\x00Z", BINARY),
    ("unknown-code-lower-d", b"\x12\x01\x00dhi", BINARY),
    ("pause-trailing", b"\x12\x01\x00P!", BINARY),
    ("resume-trailing", b"\x12\x01\x00C!", BINARY),
    ("close-trailing", b"\x12\x01\x00X!", BINARY),
    ("noconnect-trailing", b"\x12\x01\x00N!", BINARY),
    ("control-truncated", b"\x11", BINARY),
    ("control-greeting", b"\x11GTPoT/1 evil", BINARY),
    ("control-bad-greeting", b"\x11Gnot tpot", BINARY),
    ("control-open", b"\x11H\x01\x00\x7f\x00\x00\x01\x08\xcb", BINARY),
    ("control-open-truncated", b"\x11H\x01", BINARY),
    ("control-raw-reserved", b"\x11R\x01\x00", BINARY),
    ("control-unknown", b"\x11Q", BINARY),
    ("text-data", b"\x12\x01\x00Dhello", TEXT),
    ("text-empty", b"", TEXT),
]


@pytest.mark.parametrize("payload, opcode", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_every_malformed_message_closes_only_that_tunnel_with_4180_and_a_reason(server, logged_errors, payload, opcode):
    bad, bad_visitor, good, good_visitor, good_id = two_tunnels(server)
    bad.send(payload, opcode)
    code, reason = close_frame(bad)
    assert code == CLOSE_PROTOCOL_ERROR
    assert reason.strip(), "the close frame carries no reason"
    assert bad_visitor.value() == b""
    only_bad_one_died(server, bad, bad_visitor, good, good_visitor, good_id)
    assert logged_errors == []


def test_nothing_from_a_tunnel_is_relayed_after_its_4180(server):
    """RFC 6455 7.1.7: once the server fails the connection it processes no more data."""
    peer = server.open_tunnel("wire")
    visitor, cid = visit(server, peer, 40001)
    peer.send(signal(cid, b"X") + b"junk")
    assert close_frame(peer)[0] == CLOSE_PROTOCOL_ERROR
    peer.send(data(cid, b"HTTP/1.1 200 OK\r\n\r\nlate"))  # in flight before the client saw the close
    peer.send(signal(cid, b"X"))
    assert visitor.value() == b"" and not visitor.disconnecting
    peer.close(CLOSE_PROTOCOL_ERROR)
    settle(server.clock)
    assert peer.transport.lost
    assert parse_response(visitor.value()).status == 503


def test_a_tunnel_ignoring_the_4180_close_is_dropped(server):
    bad, bad_visitor, good, good_visitor, good_id = two_tunnels(server)
    bad.send(b"\x42")
    assert close_frame(bad)[0] == CLOSE_PROTOCOL_ERROR
    server.clock.advance(10)
    settle(server.clock)
    assert bad.transport.lost
    assert parse_response(bad_visitor.value()).status == 503
    assert not good.transport.disconnecting
