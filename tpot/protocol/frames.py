"""WebSocket framing of TPoT messages on the hot path (RFC 6455, section 5.2).

Autobahn spends more time per message than the relaying itself: a frame header built
bit by bit, a masker object per frame, debug-log arguments formatted with the log off,
five callbacks and a join per message received.  Once a tunnel's WebSocket is open and
plain (no compression, no frame logging), `LeanFrames` writes each message as one
unfragmented binary frame with `message_frame`/`data_frame`, and reads complete,
unfragmented binary frames with `next_binary_frame`.  Anything else (control frames,
fragments, text, oversized or malformed frames, any state but open) is left to Autobahn,
which keeps handling the handshake, pings, closing and every protocol violation.

The functions here are pure; `LeanFrames` is the mixin both ends' protocols use.

This is also the one module that reaches past Autobahn's documented interface (sendMessage,
sendClose, the on... callbacks, setProtocolOptions) into its internals: protocol state,
the receive buffer, frame-parsing state, protocol options copied onto the protocol, and a
few private methods.  The rest of tpot goes through the helpers at the end (`is_open`,
`fail_connection`, `OversizeFails`, ...).  Every such name is listed in AUTOBAHN_NAMES, and
tests/unit/test_autobahn_contract.py checks that the installed Autobahn has each of them.
"""

import os
import struct

from autobahn.websocket import USES_NVX
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.xormasker import create_xor_masker

from tpot.protocol import codec
from tpot.protocol.flow import ReadPauses
from tpot.protocol.transports import send_at_turn_end

# Autobahn's internals that tpot relies on, by where they live (see the module docstring).
# Only this module touches them; the contract test checks each against the installed Autobahn.
AUTOBAHN_NAMES = {
    # Module-level names, imported above.
    "modules": (
        "autobahn.websocket.USES_NVX",  # Autobahn 25.9+
        "autobahn.websocket.xormasker.create_xor_masker",
        "autobahn.websocket.protocol.WebSocketProtocol.STATE_OPEN",
        "autobahn.websocket.protocol.WebSocketProtocol.STATE_CONNECTING",
    ),
    # Methods of both ends' protocol classes that we call or override (processData,
    # _max_message_size_exceeded, failHandshake and dropConnection are overridden;
    # consumeData goes on with the buffer after a turn was given up; _dataReceived takes
    # a read, without the debug line dataReceived formats first).
    "methods": (
        "processData",
        "consumeData",
        "_dataReceived",
        "_fail_connection",
        "_max_message_size_exceeded",
        "_cancelAutoPingTimeoutCall",
        "failHandshake",
        "dropConnection",
    ),
    # Attributes of either end's protocol instance once its WebSocket is open: state,
    # buffers, frame-parsing state, and the protocol options copied from the factory.
    "state": (
        "state",
        "data",
        "send_queue",
        "current_frame",
        "inside_message",
        "failedByMe",
        "autoPingTimeoutCall",
        "autoPingRestartOnAnyTraffic",
        "peer",
        "remoteCloseCode",
        "websocket_version",
        "applyMask",
        "_perMessageCompress",
        "logFrames",
        "logOctets",
        "trackedTimings",
        "maxFramePayloadSize",
        "maxMessagePayloadSize",
    ),
    "server state": ("maskServerFrames", "requireMaskedClientFrames"),
    # Of both ends' factories.
    "factory": ("isServer",),
    "client state": ("maskClientFrames", "acceptMaskedServerFrames", "http_status_line", "http_headers"),
}
# Names tpot's protocols give Autobahn's on purpose: the callbacks, the overridden methods
# above, the logger, `data` (LeanFrames consumes Autobahn's buffer) and connectionLost (the
# client keeps why a connection ended before its tunnel opened, then calls Autobahn's).  Any other name a
# tpot protocol defines must be new to Autobahn, or it would replace one of Autobahn's
# internals unnoticed (the contract test checks this too).
AUTOBAHN_OVERRIDES = frozenset(
    ("onConnect", "onOpen", "onMessage", "onPing", "onPong", "onClose", "log", "data", "connectionLost",
     "dataReceived")
    + AUTOBAHN_NAMES["methods"]
)

FIN_BINARY = 0x82
MASK_BIT = 0x80
# The TPoT head (0x12 ID 'D', 4 bytes) is a whole number of mask periods, so the data after
# it is masked with the key as it is: head and data can be masked (and unmasked) apart.
HEAD_SIZE = codec.DATA_HEAD_SIZE

# Autobahn's options for every WebSocket of ours, server's and client's; each end adds its own.
PROTOCOL_OPTIONS = dict(
    maxFramePayloadSize=codec.MAX_MESSAGE_SIZE,
    maxMessagePayloadSize=codec.MAX_MESSAGE_SIZE,
    utf8validateIncoming=False,
    closeHandshakeTimeout=5,
    tcpNoDelay=True,
)

_LENGTH_16 = struct.Struct("!BBH")
_LENGTH_64 = struct.Struct("!BBQ")
# Below this, masking with Python integers beats Autobahn's native masker (whose set-up
# per call costs about as much as XOR-ing a kilobyte); above it the native one wins.
_NATIVE_MASK_FROM = 1024 if USES_NVX else None
# Below this a message is masked or unmasked whole (one call beats two); above it the
# data is masked apart from the TPoT head, so that it is not copied to be joined or split.
_SPLIT_FROM = 4096

# Fairness between tunnels (one reactor serves them all): a tunnel's WebSocket takes at most
# this many messages (or Autobahn steps: a control frame, a fragment) from its buffer per
# turn of the reactor.  The rest waits for the next turn, its socket unread meanwhile, so
# that every other socket is served in between.  A 64 KiB read holds 4 data messages of
# 16 KiB, 64 of 1 KiB, but 6500 pauses: at ~5 us each that was 30 ms of one tunnel per
# read.  128 messages are well under a millisecond.  Bytes need no bound of their own: a
# turn holds at most one socket read (Twisted's 64 KiB) beyond the message under way.
MESSAGES_PER_TURN = 128
# Why a tunnel's socket is not read (its ReadPauses, `LeanFrames.tunnel_reading`).
TURN = "turn"  # the buffer holds more than this turn takes
HELD = "held"  # `hold_reading`: its end asked for a pause (a budget overrun)


def header(length, masked=False):
    """The header of a final binary frame carrying `length` bytes, without the mask key."""
    mask_bit = MASK_BIT if masked else 0
    if length < 126:
        return bytes((FIN_BINARY, mask_bit | length))
    if length < 65536:
        return _LENGTH_16.pack(FIN_BINARY, mask_bit | 126, length)
    return _LENGTH_64.pack(FIN_BINARY, mask_bit | 127, length)


def apply_mask(key, data):
    """`data` XOR-ed with the repeated 4-byte `key` (masking and unmasking are the same)."""
    length = len(data)
    if not length:
        return b""
    if _NATIVE_MASK_FROM is not None and length >= _NATIVE_MASK_FROM:
        return create_xor_masker(key, length).process(data)
    repeated = (key * ((length >> 2) + 1))[:length]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(length, "little")


# Masking keys are drawn from the system's CSPRNG this many at a time: one getrandom call
# per frame cost more than masking a small frame.
_MASKS_PER_DRAW = 1024
_masks = iter(())


def new_mask():
    """A fresh masking key for each frame (RFC 6455, 5.3), from the system's CSPRNG."""
    global _masks
    key = next(_masks, None)
    if key is None:
        drawn = os.urandom(4 * _MASKS_PER_DRAW)
        _masks = (drawn[i:i + 4] for i in range(0, len(drawn), 4))
        key = next(_masks)
    return key


def message_frame(payload, mask=None):
    """One binary message as a list of byte strings to write in order; masked with `mask`."""
    if mask is None:
        return [header(len(payload)), payload]
    return [header(len(payload), True), mask, apply_mask(mask, payload)]


def data_frame(conversation_id, data, mask=None):
    """`message_frame(codec.encode_data(conversation_id, data), mask)` without copying data."""
    head = codec.data_head(conversation_id)
    if mask is None:
        return [header(HEAD_SIZE + len(data)), head, data]
    if len(data) < _SPLIT_FROM:
        return [header(HEAD_SIZE + len(data), True), mask, apply_mask(mask, head + data)]
    return [header(HEAD_SIZE + len(data), True), mask, apply_mask(mask, head), apply_mask(mask, data)]


# What `next_binary_frame` found at the start of a buffer, besides a whole frame.
INCOMPLETE = "incomplete"  # the start of a frame we can take: wait for the rest
OTHER = "other"            # anything else: Autobahn must handle it


def next_binary_frame(buffer, start, masked, max_length):
    """The final, uncompressed binary frame at buffer[start:], minimally encoded, masked
    exactly when `masked` and carrying 1 to `max_length` bytes: (key, payload start, end)
    with key None when unmasked; or INCOMPLETE, or OTHER for anything else."""
    available = len(buffer) - start
    if available < 2:
        return INCOMPLETE
    first = buffer[start]
    second = buffer[start + 1]
    if first != FIN_BINARY or bool(second & MASK_BIT) != masked:
        return OTHER
    length = second & 0x7F
    offset = start + 2
    if length == 126:
        if available < 4:
            return INCOMPLETE
        length = (buffer[offset] << 8) | buffer[offset + 1]
        if length < 126:
            return OTHER
        offset += 2
    elif length == 127:
        if available < 10:
            return INCOMPLETE
        length = _LENGTH_64.unpack_from(buffer, start)[2]
        if length < 65536:
            return OTHER
        offset += 8
    if not 0 < length <= max_length:
        return OTHER
    key = None
    if masked:
        key = buffer[offset:offset + 4]
        offset += 4
    end = offset + length
    if len(buffer) < end:
        return INCOMPLETE
    return key, offset, end


class LeanFrames:
    """Mixin for the tunnel's Autobahn protocols (server and client): the hot path.

    Subclasses implement `_deliver_data(conversation_id, data)` for data messages and
    keep `onMessage` for everything else.  `_lean_setup(clock)` runs in onOpen.

    It also takes turns with the other sockets of the reactor (MESSAGES_PER_TURN): what is
    left in the buffer is taken on the next turn (`clock.callLater(0)`), the socket unread
    until the buffer is empty.  `hold_reading(seconds)` stops taking messages for a while.
    """

    _lean = False
    _lean_busy = False
    _lean_left = MESSAGES_PER_TURN  # what this turn may still take
    _lean_wait = 0.0  # how long a hold_reading asked to wait, once this turn is over
    _lean_next = None  # the call that takes the next turn, while the socket is unread
    _lean_why = None  # why the socket is unread until then (TURN or HELD)
    _lean_clock = None
    tunnel_reading = None  # ReadPauses of the socket, once open
    _lean_mask_out = False
    _lean_masked_in = False
    _lean_max = 0

    def _lean_setup(self, clock):
        self._lean_clock = clock
        send_at_turn_end(self.transport)  # a turn's messages in one send (tpot.protocol.transports)
        self.tunnel_reading = ReadPauses()
        self.tunnel_reading.attach(self.transport)
        option = lambda name, default=None: getattr(self, name, default)  # noqa: E731
        server = self.factory.isServer
        self._lean_mask_out = bool(option("maskServerFrames") if server else option("maskClientFrames", True))
        # Frames from the peer that Autobahn accepts: masked from clients, unmasked from servers.
        self._lean_masked_in = server
        strict = option("requireMaskedClientFrames") if server else not option("acceptMaskedServerFrames", True)
        limits = [size for size in (option("maxFramePayloadSize", 0), option("maxMessagePayloadSize", 0)) if size > 0]
        self._lean_max = min(limits) if limits else 1 << 62
        self._lean = bool(
            strict
            and option("applyMask")
            and option("_perMessageCompress", "unknown") is None
            and not option("logFrames", True)
            and not option("logOctets", True)
            and not option("trackedTimings")
            and option("websocket_version", 0) != 0
        )

    def _send_message(self, payload):
        """Send one binary message if the WebSocket is open (dropped otherwise)."""
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        if self._lean and not self.send_queue and len(payload) <= self._lean_max:
            self.transport.writeSequence(message_frame(payload, new_mask() if self._lean_mask_out else None))
        else:
            self.sendMessage(payload, isBinary=True)

    def _send_data(self, conversation_id, data):
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        if self._lean and not self.send_queue and len(data) + HEAD_SIZE <= self._lean_max:
            self.transport.writeSequence(
                data_frame(conversation_id, data, new_mask() if self._lean_mask_out else None)
            )
        else:
            self.sendMessage(codec.encode_data(conversation_id, data), isBinary=True)

    def _lean_dispatch(self, buffer, key, start, end):
        """The message in buffer[start:end] (masked with `key` unless None) to its handler."""
        if key is not None and end - start < _SPLIT_FROM:
            # Small: unmask it whole, in one go.
            buffer, key, start, end = apply_mask(key, buffer[start:end]), None, 0, end - start
        conversation_id = None
        if end - start >= HEAD_SIZE:
            head = buffer[start:start + HEAD_SIZE]
            conversation_id = codec.data_id(head if key is None else apply_mask(key, head))
        if conversation_id is None:
            payload = buffer[start:end] if key is None else apply_mask(key, memoryview(buffer)[start:end])
            self.onMessage(payload, True)
        elif key is None:
            self._deliver_data(conversation_id, buffer[start + HEAD_SIZE:end])
        else:
            self._deliver_data(conversation_id, apply_mask(key, memoryview(buffer)[start + HEAD_SIZE:end]))

    def dataReceived(self, data):
        # Autobahn's formats the arguments of a debug line (qualified names, in colour) on
        # every read, whatever the log level: 1.2 us a read, for a line nobody sees.
        self._dataReceived(data)

    def hold_reading(self, seconds):
        """Take no more of the peer's messages for `seconds` (from the one being handled on)."""
        self._lean_left = 0
        self._lean_wait = max(self._lean_wait, seconds)

    def processData(self):
        if self._lean_busy or self._lean_next is not None:
            # Re-entered from a handler (the loop below picks up what was appended), or
            # this turn is over: the buffer waits for the next one.
            return False
        if self._lean_left <= 0:
            return self._lean_turn_over()
        if (
            not self._lean
            or self.current_frame is not None
            or self.inside_message
            or self.failedByMe
            or self.state != WebSocketProtocol.STATE_OPEN
        ):
            return self._autobahn_step()
        buffer = self.data
        masked = self._lean_masked_in
        position = 0
        found = None
        self._lean_busy = True
        try:
            while self.state == WebSocketProtocol.STATE_OPEN and not self.failedByMe:
                found = next_binary_frame(buffer, position, masked, self._lean_max)
                if type(found) is not tuple:
                    break
                key, start, position = found
                if self.autoPingTimeoutCall is not None and self.autoPingRestartOnAnyTraffic:
                    self._cancelAutoPingTimeoutCall()
                self._lean_dispatch(buffer, key, start, position)
                self._lean_left -= 1
                if self._lean_left <= 0:
                    break
        finally:
            self._lean_busy = False
        # self.data is `buffer` plus anything received meanwhile.
        if position:
            self.data = self.data[position:]
        if self._lean_left <= 0:
            return self._lean_turn_over()
        if found is OTHER:
            # Autobahn takes this frame; the next call may come back here.
            return self._autobahn_step()
        if found is INCOMPLETE:
            if len(self.data) > len(buffer) - position:
                return True
            self._lean_left = MESSAGES_PER_TURN  # the buffer is empty: the next read is a new turn
            return False
        # A message closed the WebSocket: Autobahn handles what follows, in its new state.
        return bool(self.data)

    def _autobahn_step(self):
        # One step of Autobahn's (at most a frame), counted against this turn.
        self._lean_left -= 1
        more = super().processData()
        if self._lean_left <= 0:
            return self._lean_turn_over()
        if not more:
            self._lean_left = MESSAGES_PER_TURN
        return more

    def _lean_turn_over(self):
        """This turn took what it may: the rest of the buffer (and the socket) waits for
        the next turn, or for as long as hold_reading asked."""
        wait, self._lean_wait = self._lean_wait, 0.0
        self._lean_left = MESSAGES_PER_TURN
        if self.state != WebSocketProtocol.STATE_OPEN or self._lean_clock is None:
            # Closing (or never opened): Autobahn takes the rest as it comes, the close
            # handshake or nothing (a failed WebSocket's data is dropped), one read at a time.
            return bool(self.data)
        if not wait and not self.data:
            return False
        why = HELD if wait else TURN
        self.tunnel_reading.pause(why)
        self._lean_why = why
        self._lean_next = self._lean_clock.callLater(wait, self._lean_next_turn, why)
        return False

    def _lean_next_turn(self, why):
        self._lean_next = None
        if self.data and self.state != WebSocketProtocol.STATE_CLOSED:
            self.consumeData()
        # Unless this turn was given up too, for the same reason, the socket is read again.
        if self._lean_next is None or self._lean_why != why:
            self.tunnel_reading.resume(why)


# The rest of tpot's way to Autobahn's internals.


def is_open(protocol):
    """Whether the WebSocket of `protocol` (either end's) is open."""
    return protocol.state == WebSocketProtocol.STATE_OPEN


def is_connecting(protocol):
    """Whether the WebSocket of `protocol` is still shaking hands."""
    return protocol.state == WebSocketProtocol.STATE_CONNECTING


def fail_connection(protocol, code, reason):
    """Fail the WebSocket (RFC 6455, 7.1.7): send a close frame with `code` and `reason`,
    and deliver nothing more the peer sends."""
    protocol._fail_connection(code, reason)


def peer(protocol):
    """The peer's address as Autobahn wrote it (e.g. "tcp:127.0.0.1:40000")."""
    return protocol.peer


def remote_close_code(protocol):
    """The close code the peer sent, or None (none sent, or not closed yet)."""
    return getattr(protocol, "remoteCloseCode", None)


def refused_status(protocol):
    """The HTTP status with which the server refused a client's upgrade, if it answered one."""
    status = (getattr(protocol, "http_status_line", None) or "").split()
    return int(status[1]) if len(status) > 1 and status[1].isdigit() else None


def refused_headers(protocol):
    """The headers (lower-case names) of the server's answer to a refused upgrade."""
    return dict(getattr(protocol, "http_headers", None) or {})


class OversizeFails:
    """Mixin for Autobahn protocols: an oversized message fails the WebSocket as a malformed
    message (4180), instead of Autobahn's 1009."""

    def _max_message_size_exceeded(self, msg_size, max_msg_size, reason):
        fail_connection(self, codec.CLOSE_PROTOCOL_ERROR, f"message larger than {max_msg_size} bytes")
