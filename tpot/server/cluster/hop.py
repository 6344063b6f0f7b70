"""The peer handshake: how one node hands a visitor's connection to the node of its tunnel.

Sans-I/O: lines of bytes in, lines or refusals out.  Node B, which a visitor reached,
dials node A's peer port (tpot.server.cluster.peers):

    A -> B   TPOT-PEER/1 <nonce A>
    B -> A   HOP <node B> <visitor host> <visitor port> <nonce B> <proof B>
    A -> B   OK <proof A>

then the visitor's bytes, raw both ways.  Or, for a link that carries many visitors
(tpot.server.cluster.link), B answers the challenge with

    B -> A   LINK <node B> <nonce B> <proof B>

and after A's OK both speak link frames.  Each proof is an HMAC-SHA256, keyed with the
cluster secret, over the other side's fresh nonce and everything the line says: a proof
read off the wire is worth nothing on another connection, and a peer that does not know
the secret can neither send a visitor in (B's proof) nor pose as the node B dialed (A's).
The address a node advertises is signed the same way (`signed_address`), so that a node
dials only addresses written by nodes that know the secret, whatever else writes to Redis.
"""

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

MAGIC = b"TPOT-PEER/1"
# A handshake line is short: a node id, an address, two nonces, a proof.
MAX_LINE = 512
NONCE_BYTES = 16
_HOP, _LINK, _OK, _ADDRESS = b"tpot-peer/1 hop", b"tpot-peer/1 link", b"tpot-peer/1 ok", b"tpot-peer/1 address"


class PeerRefused(Exception):
    """The other side did not prove the cluster secret, or spoke something else."""


@dataclass(frozen=True)
class Hop:
    """What node B vouches for: who it is and which visitor it hands over."""

    node: str
    host: str
    port: int
    nonce: str


@dataclass(frozen=True)
class Link:
    """What node B vouches for when it opens a link: who it is."""

    node: str
    nonce: str


def new_nonce():
    return secrets.token_hex(NONCE_BYTES)


def _proof(secret, *parts):
    message = b"\n".join(part if isinstance(part, bytes) else str(part).encode() for part in parts)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _same(expected, presented):
    return hmac.compare_digest(expected.encode(), presented.encode("ascii", "replace"))


class LineReader:
    """Splits the handshake's CRLF-ended lines off the front of a connection's bytes."""

    def __init__(self):
        self.buffered = b""

    def feed(self, data):
        """The next whole line (without CRLF), or None until one has arrived; what follows
        it stays in `buffered`.  PeerRefused once MAX_LINE bytes have come without one."""
        self.buffered += data
        line, crlf, rest = self.buffered.partition(b"\r\n")
        if not crlf:
            if len(self.buffered) > MAX_LINE:
                raise PeerRefused("no handshake line in the first 512 bytes")
            return None
        self.buffered = rest
        return line


def challenge(nonce):
    """A's first line."""
    return MAGIC + b" " + nonce.encode() + b"\r\n"


def read_challenge(line):
    """The nonce of A's first line."""
    magic, _, nonce = line.partition(b" ")
    if magic != MAGIC or not _is_nonce(nonce):
        raise PeerRefused("not a TPoT peer port")
    return nonce.decode()


def hop_line(secret, their_nonce, hop):
    """B's answer to A's challenge, handing over the visitor `hop` describes."""
    proof = _proof(secret, _HOP, their_nonce, hop.node, hop.host, hop.port, hop.nonce)
    return f"HOP {hop.node} {hop.host} {hop.port} {hop.nonce} {proof}\r\n".encode()


def read_hop(secret, our_nonce, line):
    """The Hop of B's line, if its proof is right for our nonce; PeerRefused otherwise."""
    fields = line.split(b" ")
    if len(fields) != 6 or fields[0] != b"HOP":
        raise PeerRefused("not a hop request")
    try:
        node, host, port, nonce, proof = (field.decode("ascii") for field in fields[1:])
        port = int(port)
        ipaddress.ip_address(host)
    except ValueError:
        raise PeerRefused("a malformed hop request") from None
    if not _is_nonce(nonce.encode()) or not 0 <= port <= 65535:
        raise PeerRefused("a malformed hop request")
    if not _same(_proof(secret, _HOP, our_nonce, node, host, port, nonce), proof):
        raise PeerRefused(f"a wrong proof of the cluster secret from {node!r}")
    return Hop(node, host, port, nonce)


def link_line(secret, their_nonce, link):
    """B's answer to A's challenge, opening the link `link` describes."""
    proof = _proof(secret, _LINK, their_nonce, link.node, link.nonce)
    return f"LINK {link.node} {link.nonce} {proof}\r\n".encode()


def is_link(line):
    """Whether B's answer asks for a link rather than a single hop."""
    return line.startswith(b"LINK ")


def read_link(secret, our_nonce, line):
    """The Link of B's line, if its proof is right for our nonce; PeerRefused otherwise."""
    fields = line.split(b" ")
    if len(fields) != 4 or fields[0] != b"LINK" or not _is_nonce(fields[2]):
        raise PeerRefused("a malformed link request")
    node, nonce, proof = (field.decode("ascii", "replace") for field in fields[1:])
    if not _same(_proof(secret, _LINK, our_nonce, node, nonce), proof):
        raise PeerRefused(f"a wrong proof of the cluster secret from {node!r}")
    return Link(node, nonce)


def ok_line(secret, our_nonce, hop):
    """A's acceptance of a Hop or a Link, proving to B that it knows the secret too."""
    return b"OK " + _proof(secret, _OK, hop.nonce, our_nonce).encode() + b"\r\n"


def read_ok(secret, their_nonce, hop, line):
    """None if A's line proves the secret for B's nonce; PeerRefused otherwise."""
    word, _, proof = line.partition(b" ")
    if word != b"OK" or not _same(_proof(secret, _OK, hop.nonce, their_nonce), proof.decode("ascii", "replace")):
        raise PeerRefused("the node did not prove the cluster secret")


def signed_address(secret, node, address):
    """What a node writes to Redis as where it is reached: `host:port proof`."""
    return f"{address} {_proof(secret, _ADDRESS, node, address)}"


def read_signed_address(secret, node, value):
    """(host, port) of a `signed_address` of `node`; PeerRefused if not signed with `secret`."""
    address, _, proof = (value or "").partition(" ")
    if not proof or not _same(_proof(secret, _ADDRESS, node, address), proof):
        raise PeerRefused(f"the address of node {node!r} is not signed with the cluster secret")
    return split_address(address)


def split_address(address):
    """`host:port` or `[v6]:port` to (host, port); ValueError if it is neither."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _is_nonce(value):
    return len(value) == 2 * NONCE_BYTES and all(c in b"0123456789abcdef" for c in value)
