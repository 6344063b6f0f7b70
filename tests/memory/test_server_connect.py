"""Connections to TCP tunnels through `/connect-tpot`, in memory: the request checks, the
proof of the access secret, and the raw conversation relayed both ways."""

import pytest
from twisted.internet import task

from tests.support.memory import (
    BINARY,
    CLOSE,
    SERVER_KEY,
    TEXT,
    WebSocketPeer,
    data,
    encode_frame,
    opened,
    parse_response,
    settle,
    signal,
    upgrade_request,
    visit,
)
from tpot.http.addresses import parse_networks
from tpot.protocol import auth
from tpot.protocol.codec import CLOSE_PROTOCOL_ERROR, MAX_MESSAGE_SIZE
from tpot.protocol.flow import MAX_UNACKED_BYTES, WEBSOCKET, PausesPeer
from tpot.server.connect import CLOSE_NO_CONNECT, CLOSE_TUNNEL_GONE, MAX_PIECE, ConnectProtocol
from tpot.server.tunnel import SERVER_PROTOCOL_OPTIONS
from tpot.server.visitor import VisitorProtocol

SECRET = "s3cret-" * 6


def authorization(server, key=SECRET):
    return auth.make_authorization(key, timestamp_ms=server.authenticator.clock_ms())


def tcp_tunnel(server, name="ssh", secret=SECRET):
    headers = [("TPoT-Extensions", "tcp"), ("TPoT-Access-Secret", secret)]
    if server.authenticator.key is not None:
        headers.append(("Authorization", authorization(server, server.authenticator.key)))
    return server.open_tunnel(name, headers=headers)


def connect_request(server, name="ssh", key=SECRET, header=None, **options):
    header = header or (authorization(server, key) if key else None)
    headers = [("Authorization", header)] if header else []
    return upgrade_request(f"/connect-tpot?subdomain={name}", host=server.domain, headers=headers, **options)


def attempt(server, request, port=None):
    transport = server.connect(request, peer=None if port is None else ("127.0.0.1", port))
    settle(server.clock)
    return transport


def refused(transport, status):
    response = parse_response(transport.value())
    assert response.status == status, transport.value()
    assert transport.lost
    return response


def connect(server, name="ssh", key=SECRET, port=None):
    """A connection to tunnel `name`: its WebSocketPeer, checked to have been upgraded."""
    side = WebSocketPeer(attempt(server, connect_request(server, name, key), port))
    side.new_frames()
    assert side.response is not None and side.response.status == 101, side.transport.value()
    return side


def opened_raw(conversation_id, port):
    return b"\x11R" + opened(conversation_id, port)[2:]


def joined(server, tunnel, port=40001):
    """A connection from 127.0.0.1:`port`, checked to have opened conversation 1 on `tunnel`."""
    side = connect(server, port=port)
    assert tunnel.new_messages() == [opened_raw(1, port)]
    return side


def closed_with(side, code):
    frames = side.new_frames()
    assert [frame.opcode for frame in frames][-1:] == [CLOSE], frames
    assert frames[-1].close_code == code
    return frames[:-1]


# The request.


@pytest.mark.parametrize("target, status", [
    ("/connect-tpot", 400),
    ("/connect-tpot?subdomain=", 400),
    ("/connect-tpot?subdomain=-bad", 400),
    ("/connect-tpot?subdomain=" + "x" * 25, 400),
])
def test_a_missing_or_invalid_name_is_400(server, target, status):
    tcp_tunnel(server)
    request = upgrade_request(target, headers=[("Authorization", authorization(server))])
    refused(attempt(server, request), status)


@pytest.mark.parametrize("change, status", [
    (dict(method="POST"), 405),
    (dict(version="1.0"), 400),
])
def test_the_upgrade_is_checked_like_create_tpot(server, change, status):
    tcp_tunnel(server)
    response = refused(attempt(server, connect_request(server, **change)), status)
    if status == 405:
        assert response.header("allow") == "GET"


def test_a_request_that_is_no_websocket_upgrade_is_400(server):
    tcp_tunnel(server)
    request = connect_request(server).replace(b"Upgrade: websocket", b"Upgrade: h2c")
    refused(attempt(server, request), 400)


def test_no_such_tunnel_is_503(server):
    response = refused(attempt(server, connect_request(server, "nobody")), 503)
    assert response.body == b"Tunnel nobody is not connected.\n"


def test_an_http_tunnel_is_404(server):
    server.open_tunnel("web")
    response = refused(attempt(server, connect_request(server, "web")), 404)
    assert b"not a TCP tunnel" in response.body


def test_503_while_draining(server):
    tcp_tunnel(server)
    server.router.draining = True
    refused(attempt(server, connect_request(server)), 503)


def test_the_name_is_not_case_sensitive(server):
    tunnel = tcp_tunnel(server)
    connect(server, "SSH")
    assert len(tunnel.new_messages()) == 1


# Proof.


def test_the_access_secret_admits(server):
    tunnel = tcp_tunnel(server)
    connect(server)
    assert len(tunnel.new_messages()) == 1


def test_proof_is_needed_even_without_a_server_key(server):
    tunnel = tcp_tunnel(server)
    response = refused(attempt(server, connect_request(server, key=None)), 401)
    assert response.header("www-authenticate") == "TPoT-1"
    assert tunnel.new_messages() == []
    assert server.router.stats.auth_failures == 1


def test_a_wrong_secret_is_401(server):
    tcp_tunnel(server)
    refused(attempt(server, connect_request(server, key="w" * 40)), 401)


def test_another_tunnels_secret_is_401(server):
    tcp_tunnel(server, "one", secret="1" * 40)
    tcp_tunnel(server, "two", secret="2" * 40)
    refused(attempt(server, connect_request(server, "two", key="1" * 40)), 401)
    connect(server, "two", key="2" * 40)


def test_the_server_key_admits_too(keyed):
    tunnel = tcp_tunnel(keyed)
    connect(keyed, key=SERVER_KEY)
    connect(keyed, key=SECRET)
    assert len(tunnel.new_messages()) == 2


def test_a_replayed_header_is_401(server):
    tcp_tunnel(server)
    header = authorization(server)
    connect_ok = attempt(server, connect_request(server, header=header))
    assert parse_response(connect_ok.value()).status == 101
    refused(attempt(server, connect_request(server, header=header)), 401)


def test_failures_from_one_address_are_limited_to_five_a_minute(server):
    tcp_tunnel(server)
    for _ in range(5):
        refused(attempt(server, connect_request(server, key="w" * 40)), 401)
    response = refused(attempt(server, connect_request(server)), 429)
    assert int(response.header("retry-after")) > 0


def test_failures_to_create_and_to_connect_share_the_limit(keyed):
    tcp_tunnel(keyed)
    for _ in range(4):
        refused(attempt(keyed, upgrade_request("/create-tpot", headers=[("Authorization", "TPoT-1 bad")])), 401)
    refused(attempt(keyed, connect_request(keyed, key="w" * 40)), 401)
    refused(attempt(keyed, connect_request(keyed, key=SERVER_KEY)), 429)


# The conversation.


def test_the_conversation_is_raw_and_carries_the_connecting_address(server):
    tunnel = tcp_tunnel(server)
    connect(server, port=40001)
    assert tunnel.new_messages() == [opened_raw(1, 40001)]
    assert server.table.active_conversations() == 1


def test_a_trusted_proxy_reports_the_address_it_forwards(server):
    server.router.trusted_proxies = parse_networks(["127.0.0.0/8"])
    tunnel = tcp_tunnel(server)
    request = connect_request(server).replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n")
    attempt(server, request)
    assert tunnel.new_messages() == [opened_raw(1, 0)[:4] + bytes([192, 0, 2, 7]) + b"\x00\x00"]


def test_bytes_flow_both_ways_unframed(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    # Bytes that look like TPoT messages are just bytes here.
    for payload in (b"SSH-2.0-OpenSSH_9.6\r\n", data(7, b"not a message"), bytes(range(256)) * 200):
        side.send(payload)
        assert tunnel.new_messages() == [data(1, payload)]
    for payload in (b"SSH-2.0-server\r\n", signal(1, b"X"), bytes(range(256)) * 1000):
        tunnel.send(data(1, payload))
    assert side.new_messages() == [b"SSH-2.0-server\r\n", signal(1, b"X"), bytes(range(256)) * 1000]


def test_large_messages_go_on_in_pieces_the_client_can_take(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    payload = bytes(range(256)) * (MAX_MESSAGE_SIZE // 256)
    side.send(payload)
    messages = tunnel.new_messages()
    assert all(len(message) <= MAX_PIECE + 4 for message in messages)
    assert b"".join(message[4:] for message in messages) == payload
    assert len(messages) == MAX_MESSAGE_SIZE // MAX_PIECE


def test_an_empty_message_is_the_end_of_stream_both_ways(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    side.send(b"query")
    side.send(b"")
    side.send(b"after the end")  # nothing more is relayed once the side said it was done
    side.send(b"")
    assert tunnel.new_messages() == [data(1, b"query"), signal(1, b"E")]
    # The connection stays open for the answer, and the service's end of stream comes back.
    tunnel.send(data(1, b"answer"))
    tunnel.send(signal(1, b"E"))
    assert side.new_messages() == [b"answer", b""]
    tunnel.send(signal(1, b"X"))
    closed_with(side, 1000)


def test_a_half_close_in_an_http_conversation_is_a_protocol_error(server):
    peer = server.open_tunnel("web")
    visit(server, peer, 40001)
    peer.send(signal(1, b"E"))
    settle(server.clock)
    assert peer.new_frames()[-1].close_code == CLOSE_PROTOCOL_ERROR


def test_the_target_closing_sends_the_rest_then_1000(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    tunnel.send(data(1, b"last words"))
    tunnel.send(signal(1, b"X"))
    frames = closed_with(side, 1000)
    assert [frame.payload for frame in frames] == [b"last words"]
    side.send(b"too late")
    side.close()
    settle(server.clock)
    assert side.transport.lost
    assert tunnel.new_messages() == []  # no X back: the client said it first
    assert server.table.active_conversations() == 0


def test_no_connect_is_4502(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    tunnel.send(signal(1, b"N"))
    closed_with(side, CLOSE_NO_CONNECT)
    side.close(CLOSE_NO_CONNECT)
    settle(server.clock)
    assert side.transport.lost and tunnel.new_messages() == []


def test_the_tunnel_closing_is_4503(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    tunnel.close()
    settle(server.clock)
    closed_with(side, CLOSE_TUNNEL_GONE)


def test_a_closing_tunnel_refuses_new_connections_with_4503(server):
    tunnel = tcp_tunnel(server)
    tunnel.send(b"\x13")  # a protocol error: the server starts closing the tunnel
    side = connect(server)
    frames = side.frames
    assert frames[-1].opcode == CLOSE and frames[-1].close_code == CLOSE_TUNNEL_GONE
    assert b"tunnel closed" in frames[-1].payload


@pytest.mark.parametrize("how", ["close", "drop"])
def test_the_connecting_side_closing_sends_x(server, how):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    if how == "close":
        side.close()
    else:
        side.transport.peer_closes()
    settle(server.clock)
    assert side.transport.lost
    assert tunnel.new_messages() == [signal(1, b"X")]
    assert server.table.active_conversations() == 0


def test_a_text_message_closes_only_that_connection_with_4180(server):
    tunnel = tcp_tunnel(server)
    bad = joined(server, tunnel, 40001)
    good = connect(server, port=40002)
    assert tunnel.new_messages() == [opened_raw(2, 40002)]
    bad.send(b"hello", TEXT)
    closed_with(bad, CLOSE_PROTOCOL_ERROR)
    bad.send(b"ignored after the protocol error")
    bad.close(CLOSE_PROTOCOL_ERROR)
    settle(server.clock)
    assert bad.transport.lost
    assert tunnel.new_messages() == [signal(1, b"X")]
    good.send(b"still here")
    assert tunnel.new_messages() == [data(2, b"still here")]
    assert not tunnel.transport.lost


def test_a_message_over_1_mib_is_4180(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    side.transport.receive(encode_frame(BINARY, b"x" * (MAX_MESSAGE_SIZE + 1)))
    closed_with(side, CLOSE_PROTOCOL_ERROR)
    assert tunnel.new_messages() == []


def test_idle_connections_are_closed(server):
    server.router.idle_timeout = 10
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    server.clock.advance(6)
    side.send(b"keep")
    server.clock.advance(6)
    assert side.new_frames() == []
    server.clock.advance(5)
    closed_with(side, 1000)
    side.close()
    settle(server.clock)
    assert tunnel.new_messages() == [data(1, b"keep"), signal(1, b"X")]


# Flow control, as for visitors.


def test_the_clients_pause_stops_reading_the_connection(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    tunnel.send(signal(1, b"P"))
    assert side.transport.producerState == "paused"
    side.send(b"held back")
    assert tunnel.new_messages() == []
    tunnel.send(signal(1, b"C"))
    settle(server.clock)
    assert tunnel.new_messages() == [data(1, b"held back")]


@pytest.mark.parametrize("end, code", [(b"X", 1000), (b"N", CLOSE_NO_CONNECT)])
def test_a_conversation_ended_while_paused_reads_the_closing_handshake(server, end, code):
    # The target went away while the client had paused the conversation: the connection
    # must still be read, or the connecting side's close frame is never seen and it waits
    # for the 30 s closing-handshake timeout (a stalled `tpot connect`).
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    tunnel.send(signal(1, b"P"))
    tunnel.send(signal(1, end))
    closed_with(side, code)
    assert side.transport.producerState == "producing"
    side.close(code)
    settle(server.clock)
    assert side.transport.lost and tunnel.new_messages() == []


def test_a_tunnel_lost_while_backed_up_reads_the_closing_handshake(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    tunnel.transport.producer.pauseProducing()
    tunnel.transport.loseConnection()  # its connection drops: no closing handshake to read
    settle(server.clock)
    closed_with(side, CLOSE_TUNNEL_GONE)
    assert side.transport.producerState == "producing"
    side.close(CLOSE_TUNNEL_GONE)
    settle(server.clock)
    assert side.transport.lost


def test_a_backed_up_tunnel_pauses_its_connections(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    tunnel.transport.producer.pauseProducing()
    assert side.transport.producerState == "paused"
    later = connect(server, port=40002)
    assert later.transport.producerState == "paused"
    tunnel.transport.producer.resumeProducing()
    assert side.transport.producerState == later.transport.producerState == "producing"


def slow_reader(server):
    """A connection that stopped reading while the client sent more than its buffer holds."""
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    side.transport.hold()
    tunnel.send(data(1, b"x" * 70_000))
    assert tunnel.new_messages() == [signal(1, b"P")]
    return tunnel, side


def test_a_slow_reader_sends_pause_then_resume(server):
    tunnel, side = slow_reader(server)
    side.transport.drain()
    assert tunnel.new_messages() == [signal(1, b"C")]


def test_the_close_waits_for_a_full_buffer_to_drain(server):
    tunnel, side = slow_reader(server)
    tunnel.send(signal(1, b"X"))
    server.clock.advance(20)
    assert [frame.opcode for frame in side.new_frames()] == [BINARY]
    side.transport.drain()
    closed_with(side, 1000)


def test_a_client_ignoring_pause_loses_the_connection(server):
    tunnel, side = slow_reader(server)
    chunk = b"z" * (MAX_MESSAGE_SIZE - 4)
    sent = 0  # counted from the pause on
    while sent <= MAX_UNACKED_BYTES:
        tunnel.send(data(1, chunk))
        sent += len(chunk)
    settle(server.clock)
    assert side.transport.lost and side.transport.aborted
    assert tunnel.new_messages() == [signal(1, b"X")]
    assert not tunnel.transport.lost


def test_visitors_and_connections_share_one_pause_allowance():
    assert issubclass(ConnectProtocol, PausesPeer) and issubclass(VisitorProtocol, PausesPeer)


def test_connections_start_paused_behind_a_backed_up_tunnel_until_it_drains(server):
    tunnel = tcp_tunnel(server)
    tunnel.transport.producer.pauseProducing()
    side = connect(server)
    assert side.protocol.reading.reasons == {WEBSOCKET}


def test_connections_use_the_servers_websocket_options(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    protocol = side.protocol
    assert protocol.maxMessagePayloadSize == SERVER_PROTOCOL_OPTIONS["maxMessagePayloadSize"]
    assert protocol.utf8validateIncoming is False and protocol.failByDrop is False


def test_connections_are_counted_like_visitors(server):
    tunnel = tcp_tunnel(server)
    side = joined(server, tunnel)
    side.send(b"12345")
    tunnel.send(data(1, b"abc"))
    stats = server.router.stats
    assert (stats.conversations_total, stats.bytes_upstream, stats.bytes_downstream) == (1, 5, 3)


def test_a_connection_leaving_during_the_check_opens_nothing(server):
    tunnel = tcp_tunnel(server)
    server.authenticator.run_kdf = lambda f, *args: task.deferLater(server.clock, 1, f, *args)
    transport = attempt(server, connect_request(server))
    transport.peer_closes()
    server.clock.advance(1)
    settle(server.clock)
    assert tunnel.new_messages() == [] and server.table.active_conversations() == 0
