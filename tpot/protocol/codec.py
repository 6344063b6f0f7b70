"""The TPoT/1 message codec: every WebSocket message of a tunnel, as bytes and back.

Pure functions over bytes, shared by the server and the client.  See docs/PROTOCOL.md.
"""

import ipaddress
import socket
import struct
from dataclasses import dataclass

CONTROL = 0x11
CONVERSATION = 0x12

GREETING_PREFIX = b"TPoT/1 "

# The reference client reads the id of a new-conversation message as a signed 16-bit
# integer, so ids above this break it.
MAX_CONVERSATION_ID = 32767
# The largest WebSocket message either of our ends takes (docs/PROTOCOL.md, "Messages").
MAX_MESSAGE_SIZE = 1024 * 1024

# WebSocket close codes of TPoT (docs/PROTOCOL.md, "Closing").
CLOSE_NORMAL = 1000
# A malformed message: the tunnel (or connection) that sent it is closed.
CLOSE_PROTOCOL_ERROR = 4180
# Like 1012 (Service Restart), which Autobahn will not send: come back in a moment.
CLOSE_SERVER_RESTARTING = 4012
# The client sent more for paused conversations than its tunnel or the server may hold
# (tpot.protocol.flow.MAX_TUNNEL_UNACKED_BYTES, MAX_SERVER_UNACKED_BYTES): it ignores pause.
CLOSE_TOO_MUCH_UNACKED = 4009
# A connection to a TCP tunnel whose client could not reach its target, or whose tunnel went.
CLOSE_NO_CONNECT = 4502
CLOSE_TUNNEL_GONE = 4503
# Like HTTP's 429: a tunnel that kept sending idle messages (pause, resume, messages for ids
# not open, pings) beyond its budget (tpot.protocol.budget) for seconds on end.
CLOSE_TOO_MANY_MESSAGES = 4429

# Negotiated additions (docs/PROTOCOL.md, "Extensions"): the client lists the ones it wants
# in EXTENSIONS_HEADER of its upgrade; the server names those it grants in the 101 response.
EXTENSIONS_HEADER = "TPoT-Extensions"
RECLAIM = "reclaim"
RECLAIM_HEADER = "TPoT-Reclaim"
RECLAIM_TOKEN_HEADER = "TPoT-Reclaim-Token"
# A visitor's IPv6 address is sent whole (16 bytes) instead of as a mapped IPv4 address.
IPV6 = "ipv6"
# A TCP tunnel: raw conversations only, from connecting sides that prove ACCESS_SECRET_HEADER.
TCP = "tcp"
HTTP = "http"  # what a tunnel is without TCP; tunnels' `kind` is HTTP or TCP
ACCESS_SECRET_HEADER = "TPoT-Access-Secret"
# Several tunnels share one name: those whose upgrades carry the same POOL_HEADER secret.
POOL = "pool"
POOL_HEADER = "TPoT-Pool"
# Not negotiated, since only refusals carry it: the server's 404 for a host it does not
# serve names the domain it serves, so that a client can say which URL to use.
DOMAIN_HEADER = "TPoT-Domain"

_CONVERSATION_HEAD = struct.Struct("<BHc")
_OPEN_HEAD = struct.Struct("<BcH")
_PORT = struct.Struct("<H")


class ProtocolError(Exception):
    """A message that TPoT/1 does not allow; the tunnel that sent it is closed."""


@dataclass(frozen=True)
class Greeting:
    name: str


@dataclass(frozen=True)
class OpenHTTP:
    """A visitor connected; `host` is its address (IPv6 only where the client negotiated it)."""

    id: int
    host: str
    port: int


@dataclass(frozen=True)
class OpenRaw:
    """Someone connected to a TCP tunnel (`tpot connect`); `host` and `port` are theirs."""

    id: int
    host: str
    port: int


@dataclass(frozen=True)
class Data:
    id: int
    payload: bytes


@dataclass(frozen=True)
class Pause:
    id: int


@dataclass(frozen=True)
class Resume:
    id: int


@dataclass(frozen=True)
class Close:
    id: int


@dataclass(frozen=True)
class NoConnect:
    id: int


@dataclass(frozen=True)
class HalfClose:
    """Raw conversations only (`tcp`): my socket's reading reached its end; I send no more
    data for this id, but still take yours."""

    id: int


_SIGNALS = {b"P": Pause, b"C": Resume, b"X": Close, b"N": NoConnect, b"E": HalfClose}
_SIGNAL_CODES = {cls: code for code, cls in _SIGNALS.items()}

# What each side may receive: the server never gets control messages, and only the
# client may say it could not connect.
FROM_CLIENT = frozenset({Data, Pause, Resume, Close, NoConnect, HalfClose})
FROM_SERVER = frozenset({Greeting, OpenHTTP, OpenRaw, Data, Pause, Resume, Close, HalfClose})
_OPEN_CODES = {OpenHTTP: b"H", OpenRaw: b"R"}
_OPENS = {code: cls for cls, code in _OPEN_CODES.items()}


def ipv4_for_wire(host):
    """The 4 address bytes for `host`; IPv6 visitors get their mapped IPv4 or 0.0.0.0."""
    try:
        # The common case, a dotted quad from the transport, without ipaddress's parser.
        return socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError, ValueError):
        pass
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return bytes(4)
    if address.version == 6:
        address = address.ipv4_mapped
        if address is None:
            return bytes(4)
    return address.packed


def address_for_wire(host, ipv6=False):
    """The address bytes of an open message: 16 for an IPv6 visitor when `ipv6` was
    negotiated (not for IPv4-mapped ones), else the 4 of `ipv4_for_wire`."""
    if ipv6 and ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return bytes(4)
        if address.ipv4_mapped is None:
            return address.packed
    return ipv4_for_wire(host)


DATA_HEAD_SIZE = _CONVERSATION_HEAD.size


def data_head(conversation_id):
    """The 4 bytes that start a data message, before its payload."""
    return _CONVERSATION_HEAD.pack(CONVERSATION, conversation_id, b"D")


def data_id(head):
    """The conversation id if `head` (the first 4 bytes of a message) starts a data message, else None."""
    if head[0] == CONVERSATION and head[3] == 0x44:  # 'D'
        return head[1] | head[2] << 8
    return None


def encode_data(conversation_id, payload):
    """Hot path: one join, no intermediate message object."""
    return b"".join((data_head(conversation_id), payload))


def encode(message, ipv6=False):
    """The bytes of `message`; with `ipv6`, open messages carry IPv6 addresses whole."""
    kind = type(message)
    if kind is Data:
        return encode_data(message.id, message.payload)
    if kind in _SIGNAL_CODES:
        return _CONVERSATION_HEAD.pack(CONVERSATION, message.id, _SIGNAL_CODES[kind])
    if kind in _OPEN_CODES:
        return b"".join((
            _OPEN_HEAD.pack(CONTROL, _OPEN_CODES[kind], message.id),
            address_for_wire(message.host, ipv6),
            _PORT.pack(message.port),
        ))
    if kind is Greeting:
        return bytes([CONTROL]) + b"G" + GREETING_PREFIX + message.name.encode("ascii")
    raise TypeError(f"not a TPoT/1 message: {message!r}")


def decode(payload, allowed):
    """Decode one binary message; raise ProtocolError unless it is one of `allowed`."""
    message = _decode(bytes(payload))
    if type(message) not in allowed:
        raise ProtocolError(f"unexpected {type(message).__name__} message")
    return message


def _decode(payload):
    if not payload:
        raise ProtocolError("empty message")
    if payload[0] == CONVERSATION:
        return _decode_conversation(payload)
    if payload[0] == CONTROL:
        return _decode_control(payload)
    raise ProtocolError(f"unknown message type 0x{payload[0]:02x}")


def _decode_conversation(payload):
    if len(payload) < _CONVERSATION_HEAD.size:
        raise ProtocolError("truncated conversation message")
    _, conversation_id, code = _CONVERSATION_HEAD.unpack_from(payload)
    if code == b"D":
        return Data(conversation_id, payload[_CONVERSATION_HEAD.size:])
    signal = _SIGNALS.get(code)
    if signal is None:
        raise ProtocolError(f"unknown conversation code {code!r}")
    if len(payload) != _CONVERSATION_HEAD.size:
        raise ProtocolError(f"trailing bytes after conversation code {code!r}")
    return signal(conversation_id)


def _decode_control(payload):
    code = payload[1:2]
    if code == b"G":
        text = payload[2:]
        if not text.startswith(GREETING_PREFIX):
            raise ProtocolError("greeting without TPoT/1 version")
        try:
            return Greeting(text[len(GREETING_PREFIX):].decode("ascii"))
        except UnicodeDecodeError:
            raise ProtocolError("greeting name is not ASCII") from None
    if code in _OPENS:
        return _decode_open(_OPENS[code], payload)
    raise ProtocolError(f"unknown control code {code!r}")


def _decode_open(kind, payload):
    # ID, then a 4-byte (IPv4) or 16-byte (IPv6) address, then the port.
    address_size = len(payload) - _OPEN_HEAD.size - _PORT.size
    if address_size not in (4, 16):
        raise ProtocolError("malformed new-conversation message")
    _, _, conversation_id = _OPEN_HEAD.unpack_from(payload)
    packed = payload[_OPEN_HEAD.size:_OPEN_HEAD.size + address_size]
    if address_size == 4:  # the common case, without ipaddress's objects
        host = socket.inet_ntop(socket.AF_INET, packed)
    else:
        address = ipaddress.IPv6Address(packed)
        if address.ipv4_mapped is not None:
            # IPv4 visitors take the 4-byte form, so that every open has one encoding.
            raise ProtocolError("IPv4-mapped address in an IPv6 new-conversation message")
        host = str(address)
    (port,) = _PORT.unpack_from(payload, len(payload) - _PORT.size)
    return kind(conversation_id, host, port)
