"""Operating the server, in memory and as pure functions: /healthz, /metrics, /api/status,
the landing page, the SIGTERM drain, JSON logs, visitor addresses behind a trusted proxy
and the client's X-Forwarded-* headers.

The plain endpoints exist on the bare domain only; on NAME.DOMAIN every path, /healthz
included, belongs to the tunnel.
"""

import io
import json
import re
import struct

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import Service
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support.memory import CLOSE, parse_response, settle, upgrade_request, visitor_request
from tpot import __version__
from tpot.http.addresses import forwarded_client, parse_networks
from tpot.http.rewrite import Forwarded, HostRewriter
from tpot.protocol import codec
from tpot.protocol.codec import CLOSE_SERVER_RESTARTING
from tpot.server import endpoints, metrics
from tpot.server.cluster.view import IClusterView
from tpot.server.drain import CLOSE_WAIT, POLL, DrainingListeners
from tpot.server.logs import json_line, json_observer
from tpot.server.table import ITunnelCounts

TOKEN = "metrics-token-0123456789"


def request(path, host="localhost:3000", method="GET", headers=()):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ask(server, path, **options):
    """One request to the server; the parsed response, after checking the connection closed."""
    transport = server.connect(request(path, **options))
    settle(server.clock)
    response = parse_response(transport.value())
    assert transport.lost
    assert response.header("connection") == "close"
    return response


def scrape(server, headers=()):
    response = ask(server, "/metrics", headers=headers)
    assert response.status == 200, response.body
    assert response.header("content-type") == metrics.CONTENT_TYPE
    return response.body.decode("utf-8")


def samples(text):
    """{(name, ((label, value), ...)): value} for every sample of a scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text, name, **labels):
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def open_message(payload):
    return codec.decode(payload, codec.FROM_SERVER)


def data(conversation_id, payload):
    return b"\x12" + struct.pack("<H", conversation_id) + b"D" + payload


# ---------------------------------------------------------------------------------------
# /healthz


@pytest.mark.parametrize("host", ["localhost", "localhost:3000", "LOCALHOST:3000"])
def test_healthz_is_ok_on_the_bare_domain(server, host):
    response = ask(server, "/healthz", host=host)
    assert response.status == 200
    assert response.body == b"ok\n"
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert int(response.header("content-length")) == len(response.body)
    assert response.header("cache-control") == "no-store"


def test_head_healthz_has_the_head_only(server):
    transport = server.connect(request("/healthz", method="HEAD"))
    settle(server.clock)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 3" in head
    assert body == b""


def test_post_healthz_is_405(server):
    response = ask(server, "/healthz", method="POST")
    assert response.status == 405
    assert response.header("allow") == "GET"


def test_healthz_is_503_while_draining(server):
    server.router.draining = True
    response = ask(server, "/healthz")
    assert response.status == 503
    assert response.body == b"draining\n"


def test_healthz_of_a_tunnel_goes_to_the_tunnel(server):
    peer = server.open_tunnel("demo")
    raw = request("/healthz", host="demo.localhost:3000")
    transport = server.visit("demo", raw)
    opened, relayed = peer.new_messages()
    assert isinstance(open_message(opened), codec.OpenHTTP)
    assert relayed[4:] == raw
    assert transport.value() == b""  # nothing answered by the server itself
    assert not transport.lost


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/api/status", "/"])
def test_endpoints_of_an_unknown_tunnel_are_503(server, path):
    assert ask(server, path, host="nobody.localhost:3000").status == 503


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/api/status", "/"])
def test_endpoints_of_another_host_are_404(server, path):
    assert ask(server, path, host="example.com").status == 404


# ---------------------------------------------------------------------------------------
# /api/status and the landing page


def test_status_counts_tunnels_and_conversations_and_names_nobody(server):
    before = ask(server, "/api/status")
    assert before.status == 200 and before.header("content-type") == "application/json"
    report = json.loads(before.body)
    assert set(report) == {"node", "nodes", "cluster_tunnels", "registry_up", "tunnels", "conversations",
                           "forwarded", "uptime_s", "version", "draining"}
    assert report["forwarded"] == {"in": 0, "out": 0, "workers_in": 0, "workers_out": 0, "links_in": 0, "links_out": 0}
    assert report["tunnels"] == 0 and report["conversations"] == 0 and report["draining"] is False
    # A server of one process is its own cluster.
    assert (report["node"], report["nodes"], report["cluster_tunnels"], report["registry_up"]) == (None, 1, 0, True)
    assert report["version"] == __version__
    server.open_tunnel("secretname")
    server.visit("secretname", peer=("10.9.8.7", 4321))
    server.clock.advance(12.5)
    after = ask(server, "/api/status")
    report = json.loads(after.body)
    assert (report["tunnels"], report["conversations"], report["cluster_tunnels"]) == (1, 1, 1)
    assert report["uptime_s"] == pytest.approx(12.5)
    assert b"secretname" not in after.body and b"10.9.8.7" not in after.body
    server.router.draining = True
    assert json.loads(ask(server, "/api/status").body)["draining"] is True


def test_landing_page_shows_how_to_connect(server):
    response = ask(server, "/", host="localhost:3000")
    assert response.status == 200
    assert response.header("content-type") == "text/html; charset=utf-8"
    page = response.body.decode("utf-8")
    assert page.startswith("<!doctype html>")
    assert "tpot http 8080 -t http://localhost:3000" in page
    assert "NAME.localhost" in page


def test_landing_page_behind_tls_proxy_says_https(server):
    page = ask(server, "/", host="localhost", headers=[("X-Forwarded-Proto", "HTTPS")]).body.decode()
    assert "tpot http 8080 -t https://localhost</pre>" in page


def test_landing_page_escapes_the_domain():
    class Server:
        domain = "a<b>.test"

    head = type("Head", (), {"header": staticmethod(lambda name: None)})()
    _, _, body = endpoints._landing(head, Server())
    assert b"<b>" not in body and b"a&lt;b&gt;.test" in body


# ---------------------------------------------------------------------------------------
# /metrics


def test_metrics_lists_every_family(server):
    text = scrape(server)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names == {
        "tpot_tunnels_active", "tpot_conversations_active", "tpot_conversations", "tpot_bytes",
        "tpot_auth_failures", "tpot_http_errors", "tpot_cluster_nodes", "tpot_registry_up",
        "tpot_forwarded_conversations", "tpot_peer_links",
    }
    assert value(text, "tpot_bytes_total", direction="upstream") == 0
    assert value(text, "tpot_bytes_total", direction="downstream") == 0


def test_metrics_follow_traffic_and_name_nobody(server):
    peer = server.open_tunnel("hidden-name")
    assert value(scrape(server), "tpot_tunnels_active") == 1
    raw = visitor_request("hidden-name", path="/some/path")
    visitor = server.visit("hidden-name", raw, peer=("10.1.2.3", 5555))
    conversation_id = open_message(peer.new_messages()[0]).id
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    peer.send(data(conversation_id, answer))
    settle(server.clock)
    assert visitor.value() == answer
    text = scrape(server)
    assert value(text, "tpot_conversations_active") == 1
    assert value(text, "tpot_conversations_total") == 1
    assert value(text, "tpot_bytes_total", direction="upstream") == len(raw)
    assert value(text, "tpot_bytes_total", direction="downstream") == len(answer)
    assert "hidden-name" not in text and "10.1.2.3" not in text and "127.0.0.1" not in text
    visitor.peer_closes()
    settle(server.clock)
    text = scrape(server)
    assert value(text, "tpot_conversations_active") == 0
    assert value(text, "tpot_conversations_total") == 1


def test_metrics_count_error_responses_by_status(server):
    ask(server, "/", host="nobody.localhost")
    ask(server, "/", host="nobody.localhost")
    ask(server, "/nowhere")
    text = scrape(server)
    assert value(text, "tpot_http_errors_total", code="503") == 2
    assert value(text, "tpot_http_errors_total", code="404") == 1
    assert value(text, "tpot_auth_failures_total") == 0


def test_metrics_count_authentication_failures(keyed):
    transport = keyed.connect(upgrade_request("/create-tpot?subdomain=x", headers=[("Authorization", "TPoT-1 bad")]))
    settle(keyed.clock)
    assert parse_response(transport.value()).status == 401
    text = scrape(keyed)
    assert value(text, "tpot_auth_failures_total") == 1
    assert value(text, "tpot_http_errors_total", code="401") == 1


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN, "Bearer", f"Bearer {TOKEN[:-1]}"],
)
def test_metrics_token_refuses_anything_but_the_bearer(server, authorization):
    server.router.metrics_token = TOKEN
    headers = [] if authorization is None else [("Authorization", authorization)]
    response = ask(server, "/metrics", headers=headers)
    assert response.status == 401
    # Its own challenge only (not the tunnels' TPoT-1), and not a tunnel auth failure.
    assert [v for k, v in response.headers if k == "www-authenticate"] == ["Bearer"]
    assert b"tpot_" not in response.body
    assert server.router.stats.auth_failures == 0
    assert server.router.stats.http_errors[401] == 1


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "])
def test_metrics_token_accepts_the_bearer(server, authorization):
    server.router.metrics_token = TOKEN
    text = scrape(server, headers=[("Authorization", authorization)])
    assert "tpot_tunnels_active" in text


def test_metrics_token_leaves_the_other_endpoints_open(server):
    server.router.metrics_token = TOKEN
    assert ask(server, "/healthz").status == 200
    assert ask(server, "/api/status").status == 200


def test_tunnel_auth_refusal_still_challenges_tpot1(keyed):
    keyed.router.metrics_token = TOKEN
    transport = keyed.connect(upgrade_request("/create-tpot", headers=[("Authorization", "Bearer " + TOKEN)]))
    settle(keyed.clock)
    response = parse_response(transport.value())
    assert response.status == 401
    assert [v for k, v in response.headers if k == "www-authenticate"] == ["TPoT-1"]
    assert keyed.router.stats.auth_failures == 1


def test_render_is_counts_only():
    @implementer(ITunnelCounts)
    class Counts:
        def active_tunnels(self):
            return 3

        def active_conversations(self):
            return 7

    stats = metrics.Stats()
    stats.conversations_total = 11
    stats.bytes_upstream = 1000
    stats.bytes_downstream = 2000
    for status in (401, 401, 503, 429):
        stats.count_refusal(status)
    stats.forwarded_in, stats.forwarded_out = 4, 5
    stats.links_in, stats.links_out = 2, 1

    @implementer(IClusterView)
    class Cluster:
        node_id = "node-a"

        def registry_up(self):
            return False

        def nodes_alive(self):
            return 3

        def cluster_tunnels(self):
            return 9

    assert verifyObject(ITunnelCounts, Counts())
    assert verifyObject(IClusterView, Cluster())
    text = metrics.render(stats, Counts(), Cluster()).decode("utf-8")
    assert samples(text) == {
        ("tpot_tunnels_active", ()): 3,
        ("tpot_conversations_active", ()): 7,
        ("tpot_conversations_total", ()): 11,
        ("tpot_bytes_total", (("direction", "upstream"),)): 1000,
        ("tpot_bytes_total", (("direction", "downstream"),)): 2000,
        ("tpot_auth_failures_total", ()): 2,
        ("tpot_http_errors_total", (("code", "401"),)): 2,
        ("tpot_http_errors_total", (("code", "429"),)): 1,
        ("tpot_http_errors_total", (("code", "503"),)): 1,
        ("tpot_cluster_nodes", ()): 3,
        ("tpot_registry_up", ()): 0,
        ("tpot_forwarded_conversations_total", (("direction", "in"),)): 4,
        ("tpot_forwarded_conversations_total", (("direction", "out"),)): 5,
        ("tpot_peer_links_total", (("direction", "in"),)): 2,
        ("tpot_peer_links_total", (("direction", "out"),)): 1,
    }
    # Each family declared once with its type (a counter's TYPE line names it with or without
    # _total, depending on the prometheus_client version).
    declared = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    types = {name.removesuffix("_total") if kind == "counter" else name: kind for name, kind in declared}
    assert len(types) == len(declared), declared
    assert types == {"tpot_tunnels_active": "gauge", "tpot_conversations_active": "gauge",
                     "tpot_conversations": "counter", "tpot_bytes": "counter", "tpot_auth_failures": "counter",
                     "tpot_http_errors": "counter", "tpot_cluster_nodes": "gauge", "tpot_registry_up": "gauge",
                     "tpot_forwarded_conversations": "counter", "tpot_peer_links": "counter"}
    # A fresh registry per scrape: rendering twice does not fail or double anything.
    assert metrics.render(stats, Counts(), Cluster()).decode("utf-8") == text


# ---------------------------------------------------------------------------------------
# draining


class Recorder(Service):
    def __init__(self):
        self.stopped = False

    def stopService(self):
        self.stopped = True
        return super().stopService()


def draining(server, timeout):
    listeners = DrainingListeners(server.router, server.table, server.clock, timeout)
    port = Recorder()
    port.setServiceParent(listeners)
    listeners.startService()
    return listeners, port


def close_frames(peer):
    return [frame for frame in peer.new_frames() if frame.opcode == CLOSE]


def test_drain_waits_for_conversations_then_closes_tunnels_with_4012(server):
    peer = server.open_tunnel("demo")
    visitor = server.visit("demo")
    peer.new_messages()
    listeners, port = draining(server, 20)
    done = listeners.stopService()
    results = []
    done.addBoth(results.append)
    assert server.router.draining
    assert ask(server, "/healthz").status == 503
    late = ask(server, "/", host="demo.localhost")
    assert late.status == 503 and b"restarting" in late.body
    new_tunnel = server.connect(upgrade_request("/create-tpot?subdomain=other"))
    settle(server.clock)
    assert parse_response(new_tunnel.value()).status == 503
    server.clock.advance(5)
    assert close_frames(peer) == [] and not port.stopped and not results
    visitor.peer_closes()  # the last conversation ends
    settle(server.clock)
    server.clock.advance(POLL)
    [close] = close_frames(peer)
    assert close.close_code == CLOSE_SERVER_RESTARTING
    assert not port.stopped  # the ports close only after the tunnels
    peer.close(CLOSE_SERVER_RESTARTING)
    settle(server.clock)
    server.clock.advance(POLL)
    settle(server.clock)
    assert port.stopped and len(results) == 1 and not isinstance(results[0], Failure)
    assert server.table.active_tunnels() == 0


def test_drain_is_bounded_by_its_timeout_and_the_close_wait(server):
    peer = server.open_tunnel("demo")
    visitor = server.visit("demo")  # stays open, idle
    peer.new_messages()
    listeners, port = draining(server, 2)
    results = []
    listeners.stopService().addBoth(results.append)
    server.clock.advance(1.8)
    assert close_frames(peer) == [] and not visitor.lost  # the idle visitor is not cut early
    for _ in range(int(0.4 / POLL) + 1):
        server.clock.advance(POLL)
    [close] = close_frames(peer)
    assert close.close_code == CLOSE_SERVER_RESTARTING
    # The client does not answer the close: the ports close anyway after CLOSE_WAIT.
    for _ in range(int(CLOSE_WAIT / POLL) + 2):
        server.clock.advance(POLL)
    settle(server.clock)
    assert port.stopped and len(results) == 1
    assert not isinstance(results[0], Failure)


def test_drain_with_nothing_open_stops_at_once(server):
    listeners, port = draining(server, 30)
    results = []
    listeners.stopService().addBoth(results.append)
    settle(server.clock)
    assert port.stopped and len(results) == 1


def test_drained_shutdown_clears_the_signal_twistd_would_exit_with(server):
    # twistd re-raises the signal that stopped the reactor (exit 143); after a drain: 0.
    server.clock._exitSignal = 15
    listeners, port = draining(server, 30)
    listeners.stopService()
    settle(server.clock)
    assert port.stopped and server.clock._exitSignal is None


# ---------------------------------------------------------------------------------------
# visitor addresses behind a trusted proxy


LOOPBACK = parse_networks(["127.0.0.1/32"])


def test_parse_networks():
    assert [str(n) for n in parse_networks(["10.0.0.0/8", " 192.168.1.7 ", "::1", "10.1.2.3/8"])] == [
        "10.0.0.0/8", "192.168.1.7/32", "::1/128", "10.0.0.0/8",
    ]
    with pytest.raises(ValueError, match="--trusted-proxy 'nonsense' is not an address or CIDR range"):
        parse_networks(["10.0.0.0/8", "nonsense"])


@pytest.mark.parametrize(
    "peer, header, networks, expected",
    [
        ("127.0.0.1", "198.51.100.9", LOOPBACK, "198.51.100.9"),
        ("127.0.0.1", " 198.51.100.9 ", LOOPBACK, "198.51.100.9"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.9", LOOPBACK, "198.51.100.9"),  # right-most untrusted wins
        ("127.0.0.1", "198.51.100.9, 127.0.0.1", LOOPBACK, "198.51.100.9"),  # skips trusted hops
        ("127.0.0.1", "127.0.0.1", LOOPBACK, None),  # only proxies: the peer itself
        ("127.0.0.1", "", LOOPBACK, None),
        ("127.0.0.1", None, LOOPBACK, None),
        ("127.0.0.1", ",,", LOOPBACK, None),
        ("127.0.0.1", "not-an-address", LOOPBACK, None),
        ("127.0.0.1", "198.51.100.9, unknown", LOOPBACK, None),
        ("127.0.0.1", "[2001:db8::1]", LOOPBACK, "2001:db8::1"),
        ("::ffff:127.0.0.1", "198.51.100.9", LOOPBACK, "198.51.100.9"),  # mapped peer
        ("10.0.0.5", "198.51.100.9", LOOPBACK, None),  # untrusted peer: its header is ignored
        ("127.0.0.1", "198.51.100.9", (), None),  # no --trusted-proxy
        ("10.0.0.5", "198.51.100.9, 10.0.0.4", parse_networks(["10.0.0.0/24"]), "198.51.100.9"),
    ],
)
def test_forwarded_client(peer, header, networks, expected):
    assert forwarded_client(peer, header, networks) == expected


def visit_and_open(server, headers=()):
    peer = server.open_tunnel("demo")
    raw = request("/", host="demo.localhost", headers=headers)
    server.visit("demo", raw, peer=("127.0.0.1", 43210))
    return open_message(peer.new_messages()[0])


def test_trusted_proxy_address_reaches_the_client(server):
    server.router.trusted_proxies = LOOPBACK
    opened = visit_and_open(server, [("X-Forwarded-For", "6.6.6.6, 198.51.100.9")])
    assert (opened.host, opened.port) == ("198.51.100.9", 0)


def test_every_x_forwarded_for_line_is_one_list_and_its_right_most_untrusted_entry_wins(server):
    # What HAProxy's `option forwardfor` sends for a visitor who brought a line of its own.
    server.router.trusted_proxies = LOOPBACK
    opened = visit_and_open(server, [("X-Forwarded-For", "10.9.9.9"), ("X-Forwarded-For", "198.51.100.9")])
    assert (opened.host, opened.port) == ("198.51.100.9", 0)


def test_behind_a_trusted_proxy_the_per_address_cap_counts_visitors_not_the_proxy(server):
    server.router.trusted_proxies = LOOPBACK
    server.router.max_per_source = 1
    tunnel = server.open_tunnel("demo", peer=("203.0.113.1", 1))
    slow = [server.connect(b"GET / HT", peer=("127.0.0.1", 40000 + n)) for n in range(10)]
    settle(server.clock)
    assert not any(transport.disconnecting for transport in slow)
    assert server.router._per_source == {"203.0.113.1": 1}
    visitors = [
        server.connect(request("/", host="demo.localhost", headers=[("X-Forwarded-For", f"198.51.100.{n}")]),
                       peer=("127.0.0.1", 41000 + n))
        for n in range(10)
    ]
    settle(server.clock)
    assert not any(transport.disconnecting for transport in visitors)
    assert server.router._per_source == {"203.0.113.1": 1, **{f"198.51.100.{n}": 1 for n in range(10)}}
    # The cap still holds per visitor.
    again = server.connect(request("/", host="demo.localhost", headers=[("X-Forwarded-For", "198.51.100.3")]),
                           peer=("127.0.0.1", 42000))
    settle(server.clock)
    assert parse_response(again.value()).status == 429
    for transport in slow + visitors + [tunnel.transport]:
        transport.peer_closes()
    settle(server.clock)
    assert server.router._per_source == {}


def test_without_trusted_proxy_the_peer_is_reported(server):
    opened = visit_and_open(server, [("X-Forwarded-For", "198.51.100.9")])
    assert (opened.host, opened.port) == ("127.0.0.1", 43210)


def test_trusted_proxy_without_header_reports_the_peer(server):
    server.router.trusted_proxies = LOOPBACK
    opened = visit_and_open(server)
    assert (opened.host, opened.port) == ("127.0.0.1", 43210)


# ---------------------------------------------------------------------------------------
# the client's X-Forwarded-* headers (tpot.http.rewrite.Forwarded)


def heads(stream):
    return [part.split(b"\r\n") for part in stream.split(b"\r\n\r\n") if part]


def test_forwarded_headers_on_every_request_of_a_keep_alive_stream():
    rewriter = HostRewriter("127.0.0.1:8080", Forwarded("203.0.113.7", "https"))
    stream = (
        b"POST /a HTTP/1.1\r\nHost: demo.localhost:3000\r\nContent-Length: 4\r\n\r\nbody"
        b"GET /b HTTP/1.1\r\nHost: demo.localhost:3000\r\nX-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: evil.example\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\r\n"
    )
    out = b"".join(rewriter.feed(stream[i:i + 7]) for i in range(0, len(stream), 7))
    first, second = out.split(b"body")
    assert first.split(b"\r\n")[:-2] == [
        b"POST /a HTTP/1.1", b"Host: 127.0.0.1:8080", b"Content-Length: 4", b"X-Forwarded-For: 203.0.113.7",
        b"X-Forwarded-Proto: https", b"X-Forwarded-Host: demo.localhost:3000",
    ]
    assert heads(second)[0] == [
        b"GET /b HTTP/1.1", b"Host: 127.0.0.1:8080",
        b"X-Forwarded-For: 10.0.0.1, 10.0.0.2, 203.0.113.7",
        b"X-Forwarded-Proto: https", b"X-Forwarded-Host: demo.localhost:3000",
    ]


def test_forwarded_without_host_has_no_forwarded_host():
    out = HostRewriter(None, Forwarded("127.0.0.1", "http")).feed(b"GET / HTTP/1.0\r\n\r\n")
    assert heads(out)[0] == [b"GET / HTTP/1.0", b"X-Forwarded-For: 127.0.0.1", b"X-Forwarded-Proto: http"]


def test_forwarded_without_host_rewrite_keeps_host():
    rewriter = HostRewriter(None, Forwarded("127.0.0.1", "http"))
    out = rewriter.feed(b"GET / HTTP/1.1\r\nHost: demo.localhost\r\n\r\n")
    assert heads(out)[0] == [
        b"GET / HTTP/1.1", b"Host: demo.localhost", b"X-Forwarded-For: 127.0.0.1",
        b"X-Forwarded-Proto: http", b"X-Forwarded-Host: demo.localhost",
    ]


UPGRADE = b"GET /ws HTTP/1.1\r\nHost: d.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


def test_forwarded_headers_stop_at_the_protocol_an_upgrade_switched_to():
    rewriter = HostRewriter(None, Forwarded("127.0.0.1", "http"))
    rewriter.feed(UPGRADE)
    frame = b"\x81\x85\x37\xfa\x21\x3d\x7f" + b"GET / HTTP/1.1\r\nHost: d.localhost\r\n\r\n"
    assert rewriter.feed(frame) == frame


def test_forwarded_headers_go_on_a_request_after_a_refused_upgrade():
    rewriter = HostRewriter(None, Forwarded("127.0.0.1", "http"))
    rewriter.feed(UPGRADE)
    after = rewriter.feed(b"GET / HTTP/1.1\r\nHost: d.localhost\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
    assert b"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n" in after


# ---------------------------------------------------------------------------------------
# --log-format json


def test_json_line_has_time_level_namespace_message():
    event = {
        "log_time": 1_700_000_000.123456, "log_level": LogLevel.warn, "log_namespace": "tpot.server.tunnel",
        "log_format": "tunnel {name} closed ({code})", "name": "demo", "code": 4012,
    }
    record = json.loads(json_line(event))
    assert record == {
        "time": 1_700_000_000.123, "level": "warn", "namespace": "tpot.server.tunnel",
        "message": "tunnel demo closed (4012)",
    }


def test_json_line_defaults_and_unicode():
    record = json.loads(json_line({"log_format": "caf\u00e9 {x}", "x": "\u2713"}))
    assert record == {"time": 0, "level": "info", "namespace": "", "message": "caf\u00e9 \u2713"}
    assert "\n" not in json_line({"log_format": "two\nlines"})


def test_json_line_carries_a_failure_on_one_line():
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    line = json_line({"log_format": "boom", "log_failure": failure, "log_level": LogLevel.critical})
    assert "\n" not in line
    record = json.loads(line)
    assert record["level"] == "critical" and "ZeroDivisionError" in record["failure"]


def test_json_observer_writes_one_line_per_event():
    out = io.StringIO()
    observe = json_observer(out)
    observe({"log_format": "one", "log_namespace": "a"})
    observe({"log_format": "two {n}", "n": 2, "log_namespace": "b"})
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["one", "two 2"]


def test_json_observer_defaults_to_stdout(capsys):
    json_observer()({"log_format": "hello"})
    assert json.loads(capsys.readouterr().out)["message"] == "hello"
