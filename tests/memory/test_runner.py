"""Running the client (tpot.client.runner): backoff, what is final and what is retried,
what is printed, and the headers each reconnection attempt carries; plus the client's
liveness (ping / pong timeout) on a memory transport.

Nothing here opens a socket: `connect_tcp` is replaced by a recorder, and each attempt's
factory is driven either directly or through a real WebSocket handshake on a
`MemoryTransport`, with Autobahn's timers on the same memory clock.
"""

import base64
import io
import re

import pytest
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

import tpot.client.runner as runner
from tests.support.memory import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    FrameReader,
    MemoryTransport,
    close_payload,
    connect,
    encode_frame,
    settle,
    websocket_accept,
)
from tpot.client.reclaims import ReclaimTokens
from tpot.client.runner import MAX_DELAY, ClientRun, backoff_delay
from tpot.client.session import PING_INTERVAL, PING_TIMEOUT, TunnelClientFactory
from tpot.client.settings import client_settings
from tpot.protocol.auth import parse_authorization

KEY = "unit-test-key-0123456789abcdefghijklmnop"
SERVER = "http://localhost:3000"


# ---------------------------------------------------------------------------------------
# backoff_delay


def test_first_delay_is_between_1_and_1_5_s():
    assert backoff_delay(0, rand=lambda: 0.0) == 1.0
    assert backoff_delay(0, rand=lambda: 0.999999) == pytest.approx(1.5, abs=1e-5)
    assert 1.0 <= backoff_delay(0) <= 1.5


def test_delay_doubles_with_each_attempt():
    assert [backoff_delay(n, rand=lambda: 0.0) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert [backoff_delay(n, rand=lambda: 0.5) for n in range(4)] == [1.25, 2.5, 5.0, 10.0]


def test_delay_is_capped_at_30_s():
    assert MAX_DELAY == 30.0
    for attempt in (5, 6, 10, 50, 1000):
        assert backoff_delay(attempt, rand=lambda: 0.0) == 30.0
        assert backoff_delay(attempt, rand=lambda: 0.999) == 30.0


def test_jitter_comes_from_rand():
    values = iter([0.0, 0.2, 0.8])
    assert [backoff_delay(1, rand=lambda: next(values)) for _ in range(3)] == [2.0, 2.2, 2.8]


# ---------------------------------------------------------------------------------------
# ClientRun on a memory reactor


class Harness:
    """A ClientRun whose connect_tcp only records the factories it is given."""

    def __init__(self, clock, monkeypatch, subdomain="demo", auth_key=None, rand=lambda: 0.5, target="8080",
                 tokens=None, **options):
        self.clock = clock
        clock.running = True  # as inside reactor.run(); stop() clears it
        self.factories = []
        monkeypatch.setattr(runner, "connect_tcp",
                            lambda reactor, host, port, factory, tls=None: self.factories.append(factory))
        self.settings = client_settings(
            target, server=SERVER, subdomain=subdomain, auth_key=auth_key, env={}, config={}, **options
        )
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.run = ClientRun(self.settings, clock, out=self.out, err=self.err, rand=rand, tokens=tokens)
        self.run.start()

    @property
    def factory(self):
        return self.factories[-1]

    def out_lines(self):
        return self.out.getvalue().splitlines()

    def err_lines(self):
        return self.err.getvalue().splitlines()

    # Outcomes of the latest attempt, reported the way the factory reports them.

    def unreachable(self):
        self.factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))

    def greet(self, name="demo", target_listens=True):
        checks = len(self.clock.tcpClients)
        self.factory.greeted(name)
        answer_checks(self.clock, checks, target_listens)

    def refused(self, status):
        self.factory.closed(status, 1006, None)

    def dropped(self):
        self.factory.closed(None, 1006, "connection was closed uncleanly")

    def retry_delays(self):
        return sorted(call.getTime() - self.clock.seconds() for call in self.clock.getDelayedCalls())

    def next_attempt(self):
        """Let the one scheduled retry happen; returns the new factory."""
        delays = self.retry_delays()
        assert len(delays) == 1, delays
        before = len(self.factories)
        self.clock.advance(delays[0])
        assert len(self.factories) == before + 1
        return self.factory


def answer_checks(clock, since, listens=True):
    """The first greeting's check of the target (one TCP connection, the ones made on
    `clock` from index `since`) finds it listening, or refused."""
    for host, port, factory, _, _ in clock.tcpClients[since:]:
        if listens:
            connect(factory.buildProtocol(IPv4Address("TCP", host, port)), MemoryTransport(clock))
        else:
            factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
    # HostnameEndpoint notices on its next attempt tick that no address is left.
    clock.advance(0 if listens else 0.3)


def headers_of(factory):
    return dict(factory.headers or {})


TOKEN = "kept-token-0123456789abcdef"


def test_the_next_run_presents_the_token_its_named_tunnel_had(clock, monkeypatch, tmp_path):
    tokens = ReclaimTokens(tmp_path)
    first = Harness(clock, monkeypatch, tokens=tokens)
    assert "TPoT-Reclaim" not in headers_of(first.factory)
    first.factory.on_token(TOKEN)
    first.greet("demo")
    again = Harness(clock, monkeypatch, tokens=tokens)  # after a kill -9, say
    assert headers_of(again.factory)["TPoT-Reclaim"] == TOKEN


def test_tokens_are_kept_only_for_a_name_asked_for_outside_a_pool(clock, monkeypatch, tmp_path):
    tokens = ReclaimTokens(tmp_path)
    random_name = Harness(clock, monkeypatch, subdomain=None, tokens=tokens)
    random_name.factory.on_token(TOKEN)
    random_name.greet("x7k2m9q1")
    pooled = Harness(clock, monkeypatch, subdomain="shared", pool=POOL_SECRET, tokens=tokens)
    pooled.factory.on_token(TOKEN)
    pooled.greet("shared")
    assert list(tmp_path.iterdir()) == []


def test_start_connects_once_asking_for_the_subdomain_with_the_reclaim_extension(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    assert len(h.factories) == 1
    assert h.factory.url == "ws://localhost:3000/create-tpot?subdomain=demo"
    headers = headers_of(h.factory)
    assert headers["TPoT-Extensions"] == "reclaim, ipv6"
    assert "TPoT-Reclaim" not in headers
    assert "Authorization" not in headers
    assert ("before", "shutdown") in [
        (phase, event) for phase, events in clock.triggers.items() for event in events
    ]


def test_first_connection_greeting_prints_connected_and_url(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    h.greet()
    assert h.out_lines() == ["tpot connected", "http://demo.localhost:3000",
                             "Forwarding http://demo.localhost:3000 -> http://localhost:8080"]
    assert h.err.getvalue() == ""
    assert h.run.exit_code == 0 and not clock.hasStopped


def test_a_hostile_servers_greeting_and_close_reason_reach_the_terminal_escaped(clock, monkeypatch):
    h = Harness(clock, monkeypatch, subdomain=None)
    h.greet("x\x1b]0;pwned\x07\x1b[2J")
    h.factory.on_closed(None, 4000, "bye\x1b[31m\r\nfake line")
    everything = h.out.getvalue() + h.err.getvalue()
    assert "\x1b" not in everything and "\x07" not in everything and "\r" not in everything
    assert "%1B]0;pwned%07%1B[2J" in h.out_lines()[1]
    assert "bye\\x1b[31m\\r\\nfake line" in h.err.getvalue()


SECRET = "S3cret-" * 6
POOL_SECRET = "P00l-s3cret-" * 3


def test_tcp_tunnel_asks_for_tcp_with_its_secret_and_prints_how_to_connect(clock, monkeypatch):
    h = Harness(clock, monkeypatch, target="22", kind="tcp", access_secret=SECRET)
    headers = headers_of(h.factory)
    assert headers["TPoT-Extensions"] == "reclaim, ipv6, tcp"
    assert headers["TPoT-Access-Secret"] == SECRET
    h.greet()
    assert h.out_lines() == [
        "tpot connected",
        "TCP tunnel demo on http://localhost:3000",
        f"access secret: {SECRET}",
        f"connect with: tpot connect demo -t http://localhost:3000 --secret {SECRET} --listen 127.0.0.1:PORT (or --stdio)",
        "Forwarding TCP tunnel demo on http://localhost:3000 -> localhost:22",
    ]
    h.dropped()
    retry = h.next_attempt()
    assert headers_of(retry)["TPoT-Access-Secret"] == SECRET  # the same secret after a reconnection
    h.greet()
    assert h.out_lines()[-1] == "tpot reconnected: TCP tunnel demo"


def test_nothing_listening_at_the_target_is_said_once_and_the_tunnel_runs_on(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    h.greet(target_listens=False)
    assert h.out_lines()[:2] == ["tpot connected", "http://demo.localhost:3000"]
    assert h.err_lines() == ["tpot: nothing is listening on localhost:8080 yet; visitors will get 502 until it is."]
    assert h.run.exit_code == 0 and not clock.hasStopped and h.retry_delays() == []
    h.dropped()
    retry = h.next_attempt()
    h.greet()  # a reconnection checks nothing: the visitors' connections tell
    assert retry.target.warnings is h.run.target_warnings  # still down, across the reconnection
    retry.target.reached()
    retry.target.reached()
    assert h.err_lines()[-1] == "tpot: the target localhost:8080 answers again."
    assert len(h.err_lines()) == 3  # the reconnection's line in between


def test_a_target_listening_at_start_up_is_not_mentioned(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    h.greet(target_listens=True)
    assert [host for host, *_ in clock.tcpClients] == ["127.0.0.1"]  # the one check
    assert h.err_lines() == [] and h.run.target_warnings.health.answering is True


def test_a_tcp_tunnel_checks_its_target_too(clock, monkeypatch):
    h = Harness(clock, monkeypatch, target="22", kind="tcp", access_secret=SECRET)
    h.greet(target_listens=False)
    assert h.err_lines() == [
        "tpot: nothing is listening on localhost:22 yet; connections through the tunnel will fail until it is."]


def test_tcp_tunnel_refused_by_a_server_without_tcp_is_final(clock, monkeypatch):
    h = Harness(clock, monkeypatch, target="22", kind="tcp", access_secret=SECRET)
    h.factory.on_unsupported(frozenset({"tcp"}))
    assert h.err_lines() == ["tpot: The server localhost:3000 does not support TCP tunnels (it did not grant the tcp extension)."]
    assert h.run.exit_code == 1 and clock.hasStopped
    assert h.retry_delays() == []


def test_a_pool_member_sends_its_pool_secret_on_every_attempt(clock, monkeypatch):
    h = Harness(clock, monkeypatch, subdomain="shared", pool=POOL_SECRET)
    first = headers_of(h.factory)
    assert "pool" in first["TPoT-Extensions"].split(", ") and first["TPoT-Pool"] == POOL_SECRET
    h.greet("shared")
    assert h.out_lines() == ["tpot connected", "http://shared.localhost:3000",
                             "Forwarding http://shared.localhost:3000 -> http://localhost:8080",
                             "pool: visitors are shared with every client started with this --pool secret"]
    h.dropped()
    assert headers_of(h.next_attempt())["TPoT-Pool"] == POOL_SECRET


def test_a_pool_refused_by_a_server_without_pools_is_final(clock, monkeypatch):
    h = Harness(clock, monkeypatch, subdomain="shared", pool=POOL_SECRET)
    h.factory.on_unsupported(frozenset({"pool"}))
    assert h.err_lines() == ["tpot: The server localhost:3000 does not support pools (it did not grant the pool extension)."]
    assert h.run.exit_code == 1 and h.retry_delays() == []


@pytest.mark.parametrize(
    "outcome, words",
    [
        (lambda h: h.unreachable(), "could not be reached"),
        (lambda h: h.refused(401), "requires an auth key (401): pass -k KEY or set TPOT_AUTH_KEY"),
        (lambda h: h.refused(409), "already in use"),
        (lambda h: h.refused(503), "503"),
        (lambda h: h.refused(404), "404"),
        (lambda h: h.dropped(), "closed the connection before the tunnel opened"),
    ],
    ids=["unreachable", "401", "409", "503", "404", "closed-before-greeting"],
)
def test_first_connection_failing_is_final(clock, monkeypatch, outcome, words):
    h = Harness(clock, monkeypatch)
    outcome(h)
    assert h.run.exit_code == 1
    lines = h.err_lines()
    assert len(lines) == 1 and words in lines[0], lines
    assert "Reconnecting" not in lines[0]
    assert clock.hasStopped and not clock.running
    assert h.out.getvalue() == ""
    clock.advance(MAX_DELAY * 4)
    assert len(h.factories) == 1, "no retry after a failed first connection"


def test_drop_after_greeting_is_retried_with_the_same_name_and_reclaim_token(clock, monkeypatch):
    h = Harness(clock, monkeypatch, subdomain=None)  # the server picks the name
    h.factory.on_token("secret-token")
    h.greet("x7k2m9qa")
    h.dropped()
    lines = h.err_lines()
    assert len(lines) == 1 and "reconnecting" in lines[0].lower(), lines
    assert h.run.exit_code == 0 and not clock.hasStopped
    delays = h.retry_delays()
    assert len(delays) == 1 and 1.0 <= delays[0] <= 1.5
    clock.advance(delays[0] - 0.01)
    assert len(h.factories) == 1
    factory = h.next_attempt()
    assert factory.url == "ws://localhost:3000/create-tpot?subdomain=x7k2m9qa"
    headers = headers_of(factory)
    assert headers["TPoT-Extensions"] == "reclaim, ipv6"
    assert headers["TPoT-Reclaim"] == "secret-token"
    h.greet("x7k2m9qa")
    assert h.out_lines() == ["tpot connected", "http://x7k2m9qa.localhost:3000",
                             "Forwarding http://x7k2m9qa.localhost:3000 -> http://localhost:8080",
                             "tpot reconnected: http://x7k2m9qa.localhost:3000"]
    assert len(h.err_lines()) == 1


def test_each_attempt_carries_a_fresh_authorization(clock, monkeypatch):
    h = Harness(clock, monkeypatch, auth_key=KEY)
    first = headers_of(h.factory)["Authorization"]
    h.greet()
    h.dropped()
    second = headers_of(h.next_attempt())["Authorization"]
    h.unreachable()
    third = headers_of(h.next_attempt())["Authorization"]
    nonces = [parse_authorization(value).nonce for value in (first, second, third)]
    assert len(set(nonces)) == 3, nonces
    assert all(len(base64.b64decode(nonce)) == 32 for nonce in nonces)


def test_backoff_grows_while_reconnecting_and_resets_after_a_greeting(clock, monkeypatch):
    h = Harness(clock, monkeypatch, rand=lambda: 0.0)
    h.greet()
    h.dropped()
    assert h.retry_delays() == [1.0]
    h.next_attempt()
    h.unreachable()
    assert h.retry_delays() == [2.0]
    h.next_attempt()
    h.dropped()  # reached, closed before the greeting
    assert h.retry_delays() == [4.0]
    h.next_attempt()
    h.refused(503)
    assert h.retry_delays() == [8.0]
    h.next_attempt()
    h.greet()
    assert h.run.failed_attempts == 0
    h.dropped()
    assert h.retry_delays() == [1.0]
    assert h.out_lines().count("tpot reconnected: http://demo.localhost:3000") == 1
    assert len(h.err_lines()) == 5 and all("Reconnecting" in line for line in h.err_lines())


def test_backoff_caps_at_30_s_while_the_server_stays_away(clock, monkeypatch):
    h = Harness(clock, monkeypatch, rand=lambda: 0.0)
    h.greet()
    h.dropped()
    delays = []
    for _ in range(8):
        delays.append(h.retry_delays()[0])
        h.next_attempt()
        h.unreachable()
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert h.run.exit_code == 0 and not clock.hasStopped


def test_409_while_reconnecting_is_retried(clock, monkeypatch):
    """The old tunnel may still hold the name until the server's liveness timer drops it."""
    h = Harness(clock, monkeypatch)
    h.greet()
    h.dropped()
    h.next_attempt()
    h.refused(409)
    assert h.run.exit_code == 0 and not clock.hasStopped
    assert len(h.retry_delays()) == 1
    factory = h.next_attempt()
    assert factory.url.endswith("?subdomain=demo")
    h.greet()
    assert h.out_lines()[-1] == "tpot reconnected: http://demo.localhost:3000"


@pytest.mark.parametrize("status", [401, 400])
def test_401_or_400_while_reconnecting_is_final(clock, monkeypatch, status):
    h = Harness(clock, monkeypatch)
    h.greet()
    h.dropped()
    h.next_attempt()
    h.refused(status)
    assert h.run.exit_code == 1
    assert clock.hasStopped
    last = h.err_lines()[-1]
    assert str(status) in last and "Reconnecting" not in last
    assert len(h.err_lines()) == 2
    count = len(h.factories)
    clock.advance(MAX_DELAY * 4)
    assert len(h.factories) == count


def test_stop_while_waiting_to_reconnect_cancels_the_retry(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    h.greet()
    h.dropped()
    assert h.run.stop() is None  # no open tunnel to close
    clock.advance(MAX_DELAY * 4)
    assert len(h.factories) == 1
    assert h.run.exit_code == 0


# The same, through a real WebSocket handshake on a memory transport.


class Wire:
    """The server end of one attempt's connection, scripted by the test."""

    def __init__(self, clock, factory):
        self.clock = clock
        self.factory = factory
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3000))
        self.transport = connect(self.protocol, MemoryTransport(clock, peer=("127.0.0.1", 3000)))
        self.reader = FrameReader()
        self._seen = 0

    def request_lines(self):
        return self.transport.value().split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")

    def request_header(self, name):
        for line in self.request_lines()[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def accept(self, token=None, name="demo"):
        key = self.request_header("Sec-WebSocket-Key")
        extra = f"TPoT-Extensions: reclaim\r\nTPoT-Reclaim-Token: {token}\r\n" if token else ""
        head = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {websocket_accept(key)}\r\n{extra}\r\n"
        )
        self._seen = len(self.transport.value())
        self.transport.receive(head.encode("latin-1"))
        checks = len(self.clock.tcpClients)
        self.transport.receive(encode_frame(BINARY, b"\x11GTPoT/1 " + name.encode(), mask=False))
        answer_checks(self.clock, checks)
        settle(self.clock)

    def refuse(self, status):
        body = "no\n"
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}"
        )
        self.transport.receive(head.encode("latin-1"))
        settle(self.clock)
        if not self.transport.lost:
            self.transport.peer_closes()
        settle(self.clock)

    def frames(self):
        new = self.transport.value()[self._seen:]
        self._seen += len(new)
        return self.reader.feed(new)


def test_reclaim_token_from_the_101_is_sent_when_reconnecting(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    first = Wire(clock, h.factory)
    assert first.request_header("TPoT-Extensions") == "reclaim, ipv6"
    assert first.request_header("TPoT-Reclaim") is None
    first.accept(token="tok-123")
    assert h.out_lines()[:2] == ["tpot connected", "http://demo.localhost:3000"]
    first.transport.peer_closes()  # the server went away without a closing handshake
    settle(clock)
    lines = h.err_lines()
    assert len(lines) == 1 and "1006" in lines[0] and "Reconnecting in 1 s" in lines[0], lines
    second = Wire(clock, h.next_attempt())
    assert second.request_lines()[0] == "GET /create-tpot?subdomain=demo HTTP/1.1"
    assert second.request_header("TPoT-Reclaim") == "tok-123"
    assert second.request_header("TPoT-Extensions") == "reclaim, ipv6"
    second.accept(token="tok-123")
    assert h.out_lines()[3:] == ["tpot reconnected: http://demo.localhost:3000"]
    assert h.run.failed_attempts == 0


def test_real_401_after_having_been_connected_is_final(clock, monkeypatch):
    h = Harness(clock, monkeypatch, auth_key=KEY)
    first = Wire(clock, h.factory)
    first.accept(token="tok")
    first.transport.peer_closes()
    settle(clock)
    second = Wire(clock, h.next_attempt())
    assert second.request_header("Authorization") != first.request_header("Authorization")
    second.refuse(401)
    assert h.run.exit_code == 1 and clock.hasStopped
    assert "401" in h.err_lines()[-1] and "auth key" in h.err_lines()[-1]
    clock.advance(MAX_DELAY * 4)
    assert len(h.factories) == 2


def test_real_409_while_reconnecting_is_retried(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    first = Wire(clock, h.factory)
    first.accept(token="tok")
    first.transport.peer_closes()
    settle(clock)
    second = Wire(clock, h.next_attempt())
    second.refuse(409)
    assert h.run.exit_code == 0 and not clock.hasStopped
    third = Wire(clock, h.next_attempt())
    assert third.request_header("TPoT-Reclaim") == "tok"
    third.accept(token="tok")
    assert h.out_lines()[-1] == "tpot reconnected: http://demo.localhost:3000"
    assert h.out_lines().count("tpot reconnected: http://demo.localhost:3000") == 1


def test_stop_closes_the_open_tunnel_with_1000_and_does_not_reconnect(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    wire = Wire(clock, h.factory)
    wire.accept(token="tok")
    wire.frames()
    done = h.run.stop()
    assert done is not None
    closes = [frame for frame in wire.frames() if frame.opcode == CLOSE]
    assert [frame.close_code for frame in closes] == [1000]
    fired = []
    done.addCallback(fired.append)
    wire.transport.receive(encode_frame(CLOSE, close_payload(1000), mask=False))
    wire.transport.peer_closes()
    settle(clock)
    assert fired == [None]
    clock.advance(MAX_DELAY * 4)
    assert len(h.factories) == 1
    assert h.run.exit_code == 0 and h.err.getvalue() == ""


# ---------------------------------------------------------------------------------------
# liveness: ping every 15 s, give up after 30 s without a pong


def live_client(clock):
    closes = []
    settings = client_settings("8080", server=SERVER, subdomain="demo", env={}, config={})
    factory = TunnelClientFactory(settings, clock, {}, lambda name: None, lambda *args: closes.append(args))
    wire = Wire(clock, factory)
    wire.accept()
    wire.frames()
    return factory, wire, closes


def test_factory_liveness_options():
    assert (PING_INTERVAL, PING_TIMEOUT) == (15, 30)
    settings = client_settings("8080", server=SERVER, env={}, config={})
    factory = TunnelClientFactory(settings, MemoryReactorClock(), {}, lambda name: None, lambda *a: None)
    assert factory.autoPingInterval == PING_INTERVAL
    assert factory.autoPingTimeout == PING_TIMEOUT


def test_unanswered_ping_drops_the_connection_after_the_timeout(clock):
    factory, wire, closes = live_client(clock)
    clock.advance(15 - 0.5)
    assert [f for f in wire.frames() if f.opcode == PING] == []
    clock.advance(0.5)
    pings = [f for f in wire.frames() if f.opcode == PING]
    assert len(pings) == 1
    clock.advance(30 - 1)
    settle(clock)
    assert not wire.transport.lost and closes == []
    clock.advance(1)
    settle(clock)
    assert wire.transport.lost
    assert len(closes) == 1
    status, code, _reason = closes[0]
    assert status is None and code == 1006


def test_answered_pings_keep_the_connection(clock):
    factory, wire, closes = live_client(clock)
    for _ in range(8):  # two minutes
        clock.advance(15)
        pings = [f for f in wire.frames() if f.opcode == PING]
        assert len(pings) == 1
        wire.transport.receive(encode_frame(PONG, pings[0].payload, mask=False))
        settle(clock)
    assert not wire.transport.lost and closes == []
    assert factory.current.tunnel_open()


def test_liveness_drop_leads_to_a_reconnection(clock, monkeypatch):
    h = Harness(clock, monkeypatch)
    wire = Wire(clock, h.factory)
    wire.accept(token="tok")
    clock.advance(PING_INTERVAL)
    clock.advance(PING_TIMEOUT)
    settle(clock)
    assert wire.transport.lost
    lines = h.err_lines()
    assert len(lines) == 1 and re.search(r"Reconnecting in 1 s", lines[0]), lines
    second = Wire(clock, h.next_attempt())
    assert second.request_header("TPoT-Reclaim") == "tok"
