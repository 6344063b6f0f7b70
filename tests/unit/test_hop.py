"""The peer handshake (tpot.server.cluster.hop): proofs over fresh nonces, as bytes."""

import pytest

from tpot.server.cluster import hop

SECRET = "s" * 40
VISITOR = hop.Hop("node-b", "192.0.2.7", 51234, "ab" * 16)


def handshake(secret_a=SECRET, secret_b=SECRET, visitor=VISITOR):
    """Both sides' lines in order; the Hop node A accepted."""
    nonce_a = hop.new_nonce()
    their_nonce = hop.read_challenge(hop.challenge(nonce_a).rstrip(b"\r\n"))
    line = hop.hop_line(secret_b, their_nonce, visitor)
    accepted = hop.read_hop(secret_a, nonce_a, line.rstrip(b"\r\n"))
    hop.read_ok(secret_b, their_nonce, visitor, hop.ok_line(secret_a, nonce_a, accepted).rstrip(b"\r\n"))
    return accepted


def test_both_sides_that_know_the_secret_agree_on_the_visitor():
    assert handshake() == VISITOR


def test_a_node_without_the_secret_cannot_send_a_visitor_in():
    with pytest.raises(hop.PeerRefused, match="wrong proof"):
        handshake(secret_b="t" * 40)


def test_a_replayed_hop_line_fails_against_a_fresh_nonce():
    nonce = hop.new_nonce()
    line = hop.hop_line(SECRET, nonce, VISITOR).rstrip(b"\r\n")
    assert hop.read_hop(SECRET, nonce, line) == VISITOR
    with pytest.raises(hop.PeerRefused):
        hop.read_hop(SECRET, hop.new_nonce(), line)


def test_the_visitor_address_is_part_of_the_proof():
    nonce = hop.new_nonce()
    line = hop.hop_line(SECRET, nonce, VISITOR).rstrip(b"\r\n").replace(b"192.0.2.7", b"192.0.2.8")
    with pytest.raises(hop.PeerRefused):
        hop.read_hop(SECRET, nonce, line)


def test_a_node_that_does_not_know_the_secret_cannot_pose_as_the_one_dialed():
    nonce_a = hop.new_nonce()
    with pytest.raises(hop.PeerRefused, match="did not prove"):
        hop.read_ok(SECRET, nonce_a, VISITOR, hop.ok_line("t" * 40, nonce_a, VISITOR).rstrip(b"\r\n"))


@pytest.mark.parametrize("line", [
    b"GET / HTTP/1.1", b"HOP", b"HOP a b c d e", b"HOP node-b not-an-ip 1 " + b"ab" * 16 + b" x",
    b"HOP node-b 192.0.2.7 99999 " + b"ab" * 16 + b" x", b"HOP node-b 192.0.2.7 1 short x",
])
def test_anything_else_on_the_peer_port_is_refused(line):
    with pytest.raises(hop.PeerRefused):
        hop.read_hop(SECRET, hop.new_nonce(), line)


def test_a_challenge_must_be_ours():
    with pytest.raises(hop.PeerRefused, match="not a TPoT peer port"):
        hop.read_challenge(b"SSH-2.0-OpenSSH_9.2")


def test_lines_are_bounded_and_leave_what_follows():
    reader = hop.LineReader()
    assert reader.feed(b"HOP x") is None
    assert reader.feed(b" y\r\nGET / HTTP/1.1\r\n") == b"HOP x y"
    assert reader.buffered == b"GET / HTTP/1.1\r\n"
    with pytest.raises(hop.PeerRefused, match="512"):
        hop.LineReader().feed(b"x" * 513)


def test_a_node_dials_only_addresses_signed_with_the_secret():
    signed = hop.signed_address(SECRET, "node-a", "10.0.0.5:3001")
    assert hop.read_signed_address(SECRET, "node-a", signed) == ("10.0.0.5", 3001)
    assert hop.read_signed_address(SECRET, "node-v6", hop.signed_address(SECRET, "node-v6", "[::1]:3001")) == ("::1", 3001)
    for forged in (signed.replace("10.0.0.5", "10.0.0.6"), "10.0.0.5:3001", "",
                   hop.signed_address("t" * 40, "node-a", "10.0.0.5:3001")):
        with pytest.raises(hop.PeerRefused):
            hop.read_signed_address(SECRET, "node-a", forged)
    with pytest.raises(hop.PeerRefused):  # signed for another node
        hop.read_signed_address(SECRET, "node-b", signed)


@pytest.mark.parametrize("address", ["host", "host:", ":3001", "host:0", "host:70000", "host:x"])
def test_split_address_wants_host_and_port(address):
    with pytest.raises(ValueError):
        hop.split_address(address)


LINK = hop.Link("node-b", "cd" * 16)


def test_a_link_line_is_accepted_with_the_secret_and_its_ok_proves_a_back():
    nonce_a = hop.new_nonce()
    line = hop.link_line(SECRET, nonce_a, LINK).rstrip(b"\r\n")
    assert hop.is_link(line) and not hop.is_link(hop.hop_line(SECRET, nonce_a, VISITOR))
    accepted = hop.read_link(SECRET, nonce_a, line)
    assert accepted == LINK
    hop.read_ok(SECRET, nonce_a, LINK, hop.ok_line(SECRET, nonce_a, accepted).rstrip(b"\r\n"))


@pytest.mark.parametrize("line", [
    lambda nonce: hop.link_line("t" * 40, nonce, LINK),  # without the secret
    lambda nonce: hop.link_line(SECRET, hop.new_nonce(), LINK),  # replayed: another nonce
    lambda nonce: hop.link_line(SECRET, nonce, LINK).replace(b"node-b", b"node-c"),  # another node's name
    lambda nonce: b"LINK node-b " + b"zz" * 16 + b" proof",  # not a nonce
    lambda nonce: b"LINK node-b",
], ids=["wrong-secret", "replayed", "renamed", "bad-nonce", "short"])
def test_a_link_line_without_a_fresh_proof_is_refused(line):
    nonce = hop.new_nonce()
    with pytest.raises(hop.PeerRefused):
        hop.read_link(SECRET, nonce, line(nonce).rstrip(b"\r\n"))
