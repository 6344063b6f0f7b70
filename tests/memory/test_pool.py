"""Pools on one server (the `pool` extension): several tunnels share a name, and each new
visitor connection goes to one of them."""

import struct
from collections import Counter

import pytest

from tests.support.memory import parse_response, settle, upgrade_request, visitor_request
from tpot.protocol.codec import ACCESS_SECRET_HEADER, EXTENSIONS_HEADER, POOL_HEADER

POOL_SECRET = "p" * 32
OTHER_SECRET = "q" * 32


def pool_headers(secret=POOL_SECRET, extensions="pool"):
    return [(EXTENSIONS_HEADER, extensions), (POOL_HEADER, secret)]


def open_member(server, name="shared", secret=POOL_SECRET):
    return server.open_tunnel(name, headers=pool_headers(secret))


def status_of_claim(server, name="shared", headers=()):
    transport = server.connect(upgrade_request(f"/create-tpot?subdomain={name}" if name else "/create-tpot",
                                               headers=headers))
    settle(server.clock)
    return parse_response(transport.value())


def served_by(members, server, count):
    """Which member each of `count` visitors reached (each closed once announced)."""
    reached = Counter()
    for port in range(count):
        transport = server.visit("shared", peer=("127.0.0.1", 20000 + port))
        (member,) = [index for index, peer in enumerate(members) if peer.new_messages()]
        reached[member] += 1
        transport.peer_closes()
        settle(server.clock)
        for peer in members:
            peer.new_messages()  # the visitor's end
    return reached


def test_members_are_granted_the_pool_and_share_the_name(server):
    first, second = open_member(server), open_member(server)
    assert first.response.header(EXTENSIONS_HEADER) == "pool"
    assert first.name == second.name == "shared"
    assert server.table.active_tunnels() == 2


def test_visitors_are_spread_over_the_members_in_turn(server):
    members = [open_member(server), open_member(server)]
    assert served_by(members, server, 20) == {0: 10, 1: 10}


def test_a_new_visitor_goes_to_the_member_with_the_fewest_open_conversations(server):
    members = [open_member(server), open_member(server)]
    busy = server.visit("shared", peer=("127.0.0.1", 30000))  # stays open
    (busy_member,) = [index for index, peer in enumerate(members) if peer.new_messages()]
    assert served_by(members, server, 5) == {1 - busy_member: 5}
    assert not busy.lost


@pytest.mark.parametrize("headers", [
    [],  # no pool
    pool_headers(OTHER_SECRET),
], ids=["without-a-pool", "another-pool"])
def test_a_claim_of_a_pooled_name_from_outside_the_pool_is_409(server, headers):
    open_member(server)
    assert status_of_claim(server, headers=headers).status == 409
    assert server.table.active_tunnels() == 1


def test_a_pooled_claim_of_a_name_held_alone_is_409(server):
    server.open_tunnel("shared")
    assert status_of_claim(server, headers=pool_headers()).status == 409


def test_a_member_leaving_takes_only_itself_and_the_last_frees_the_name(server):
    first, second = open_member(server), open_member(server)
    first.close(1000)
    settle(server.clock)
    first.new_frames()  # the server's close
    assert served_by([first, second], server, 4) == {1: 4}
    second.close(1000)
    settle(server.clock)
    assert server.table.active_tunnels() == 0
    server.open_tunnel("shared")  # free for anyone now


def test_a_pool_whose_last_member_dropped_waits_for_the_pool(server):
    member = server.open_tunnel("shared", headers=pool_headers(extensions="reclaim, pool"))
    member.transport.peer_closes()  # dropped, not closed normally
    settle(server.clock)
    assert status_of_claim(server).status == 409
    assert status_of_claim(server, headers=pool_headers(OTHER_SECRET)).status == 409
    open_member(server)  # a member of the pool takes it back, whatever its reclaim token


@pytest.mark.parametrize("name, headers, says", [
    ("shared", pool_headers("p" * 31), b"TPoT-Pool"),
    ("shared", [(EXTENSIONS_HEADER, "pool")], b"TPoT-Pool"),
    (None, pool_headers(), b"needs a name"),
], ids=["short-secret", "no-secret", "no-name"])
def test_a_bad_pool_request_is_400(server, name, headers, says):
    response = status_of_claim(server, name=name, headers=headers)
    assert response.status == 400 and says in response.body
    assert server.table.active_tunnels() == 0


def test_the_pool_header_without_the_extension_is_no_pool(server):
    server.open_tunnel("shared", headers=[(POOL_HEADER, POOL_SECRET)])
    assert status_of_claim(server, headers=pool_headers()).status == 409


def test_tcp_members_share_a_pool_only_with_the_same_access_secret(server):
    def tcp(secret):
        return [(EXTENSIONS_HEADER, "tcp, pool"), (POOL_HEADER, POOL_SECRET), (ACCESS_SECRET_HEADER, secret)]
    server.open_tunnel("shared", headers=tcp("k" * 32))
    server.open_tunnel("shared", headers=tcp("k" * 32))
    assert status_of_claim(server, headers=tcp("j" * 32)).status == 409
    assert status_of_claim(server, headers=pool_headers()).status == 409  # an HTTP member


def test_a_visitor_is_relayed_whole_to_the_member_it_reached(server):
    members = [open_member(server), open_member(server)]
    request = visitor_request("shared", path="/exact")
    server.visit("shared", request, peer=("127.0.0.1", 40123))
    (messages,) = [messages for messages in (peer.new_messages() for peer in members) if messages]
    opened, relayed = messages
    assert opened[:2] == b"\x11H" and struct.unpack("<H", opened[-2:])[0] == 40123
    assert relayed[:1] == b"\x12" and relayed[4:] == request
