"""Links: one proved connection between two nodes that carries many visitor connections.

Sans-I/O: frames of bytes in and out.  A new connection per forwarded visitor costs both
nodes a connect, an accept, a handshake and two closes, more than the visitor's request
itself; so node B, once it has proved itself to node A (tpot.server.cluster.hop, `LINK`),
keeps the connection and opens a conversation on it for each visitor, as the server does
on a tunnel: B's end is a ServerSession (it opens conversations and chooses the ids), A's a
ClientSession (tpot.protocol.session), and the messages are TPoT/1's (tpot.protocol.codec),
each in a frame: a 4-byte big-endian length, then the message.  What a tunnel's messages do
not say is in three frames of the link's own:

    OPEN   0x13 NAME 0x00 H-MESSAGE   a visitor of tunnel NAME (its H, with the address whole)
    PING   0x14                       B, every LINK_PING seconds
    PONG   0x15                       A's answer
"""

import struct

from tpot.protocol import codec
from tpot.protocol.names import valid_name

OPEN, PING, PONG = 0x13, 0x14, 0x15
_LENGTH = struct.Struct("!I")
# The largest frame: a TPoT/1 message (what a tunnel carries) and an OPEN's name.
MAX_FRAME = codec.MAX_MESSAGE_SIZE + 64
PING_FRAME = _LENGTH.pack(1) + bytes([PING])
PONG_FRAME = _LENGTH.pack(1) + bytes([PONG])
# B pings an idle link this often; either end drops a link silent for LINK_SILENCE.
LINK_PING = 5.0
LINK_SILENCE = 15.0


class BadFrame(Exception):
    """A frame no node of ours sends; the link is closed."""


def frame(message):
    """The frame of one encoded message."""
    return _LENGTH.pack(len(message)) + message


def data_frame(conversation_id, payload):
    """Hot path: the frame of a data message, in one join."""
    return b"".join((_LENGTH.pack(len(payload) + codec.DATA_HEAD_SIZE), codec.data_head(conversation_id), payload))


def open_frame(name, opening):
    """The OPEN of a visitor of tunnel `name`; `opening` is the session's codec.OpenHTTP."""
    return frame(bytes([OPEN]) + name.encode("ascii") + b"\0" + codec.encode(opening, ipv6=True))


def read_open(message):
    """(name, codec.OpenHTTP) of an OPEN frame's message; BadFrame if it is malformed."""
    name, zero, opening = message[1:].partition(b"\0")
    try:
        name = name.decode("ascii")
        if not zero or not valid_name(name):
            raise ValueError(name)
        return name, codec.decode(opening, {codec.OpenHTTP})
    except (ValueError, codec.ProtocolError) as error:
        raise BadFrame(f"a malformed OPEN frame: {error}") from None


class FrameReader:
    """Splits a link's bytes into the messages of its frames."""

    def __init__(self):
        self._buffer = b""

    def feed(self, data):
        """The messages of every frame completed by `data`; BadFrame for one over MAX_FRAME."""
        buffer = self._buffer + data if self._buffer else data
        messages = []
        start, size = 0, len(buffer)
        while size - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if not 0 < length <= MAX_FRAME:
                raise BadFrame(f"a frame of {length} bytes")
            end = start + _LENGTH.size + length
            if end > size:
                break
            messages.append(buffer[start + _LENGTH.size:end])
            start = end
        self._buffer = buffer[start:]
        return messages
