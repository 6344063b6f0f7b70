"""The live request log: one line per request, like `GET /index.html → 200  6 B  3 ms`.

`ResponseTracker` is sans-I/O.  It is told of each request head as it goes to the target
(the request side's framing is tpot.http.rewrite.HostRewriter's, through its `on_head`), follows
the target's responses with the same framing machinery (tpot.http.framing): Content-Length,
chunked, no body (responses to HEAD; 1xx, 204, 304), or everything until the connection
closes, and matches them first-in first-out to the requests, pipelined ones included.
Interim responses (100 Continue, 103) are skipped.  An upgrade (101) or a CONNECT tunnel
is the conversation's last entry; a response it cannot frame, or one with no request to
match, ends the conversation's log (`lost`).  Times are whatever clock the caller passes.

`format_entry` and `RequestLogger` turn entries into lines on stdout.
"""

import re
from collections import deque
from dataclasses import dataclass

from tpot.http.framing import (
    BODY,
    DISCARD,
    HEAD,
    MAX_LINE_SIZE,
    MAX_RELAYED_HEAD_SIZE,
    PASSTHROUGH,
    UNTIL_CLOSE,
    MessageFraming,
    parse_headers,
)

_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: [^\r\n]*)?")
# The names of the headers that frame a body, lower-case, in a CRLF-led header block.
_CONTENT_LENGTH = b"\r\ncontent-length:"
_TRANSFER_ENCODING = b"transfer-encoding"
_STATUS_LINE_START = b"HTTP/1."
MAX_PATH = 200
# Requests waiting for their responses on one connection; a visitor pipelining more than
# this (to a target that reads them all) is no longer logged, so memory stays bounded.
MAX_PENDING = 1000
# What a request the target never answered is logged with, the connection closing instead.
NO_RESPONSE = "no response (the connection closed)"


@dataclass(frozen=True)
class Entry:
    method: str
    path: str
    status: int
    size: int  # body bytes (chunk data without its framing); None for an upgrade or tunnel
    duration: float  # seconds from the request head to the end of the response
    # Why the target sent no response, printed instead of the size; status is then what
    # the server answered the visitor instead (502), or None: nothing, the connection closed.
    why: str = None


class _Discard:
    """The tracker only observes: what the framing passes on goes nowhere."""

    def append(self, piece):
        pass


_DISCARD = _Discard()


def request_line(lines):
    """(method, request target) of a request head's lines, as text."""
    method, _, rest = lines[0].decode("latin-1").partition(" ")  # one decode: latin-1 maps byte for byte
    return method, rest.rpartition(" ")[0]


class ResponseTracker(MessageFraming):
    """`capture`, when given (the inspector's ConversationCapture), is written every byte
    framed, heads included, and told of each response as it completes.  Without
    `entries` (nothing prints them) `feed` and `close` return none."""

    def __init__(self, capture=None, entries=True):
        super().__init__()
        self.capture = capture
        self.entries = entries
        self._sink = _DISCARD if capture is None else capture
        if capture is not None:
            capture.response_framing = self
        self.pending = deque()  # (method, path, started) of requests not yet answered
        self._entries = []
        self._status = None
        self._now = 0.0
        self._last_head = None  # the last head plain_response framed, and its framing
        self._last_framing = None

    def request(self, method, path, now):
        """A request head went to the target at `now`: its response is followed, and
        captured (with the inspector) along with the request."""
        if self.lost:
            return
        if len(self.pending) >= MAX_PENDING:
            self.pending.clear()
            self.state = PASSTHROUGH
            return
        self.pending.append((method, path, now))
        if self.capture is not None:
            self.capture.request(method, path, now)

    def feed(self, data, now):
        """Bytes from the target, at `now`: the entries of the responses they complete."""
        self._now = now
        self._follow(data, self._sink)
        return self._take_entries() if self.entries else ()

    def close(self, now, instead=None):
        """The conversation ended at `now` (the target closed its side, or could not be
        reached): a response read until close is complete, and the requests that got no
        part of a response are entries too, the first with `instead` (status, why: what
        the server answered the visitor), the others, or all without it, with none."""
        if self.state == UNTIL_CLOSE:
            self._now = now
            self._message_done()
        if self.state == HEAD and not self._buffer:
            for method, path, started in self.pending:
                status, why = instead or (None, NO_RESPONSE)
                instead = None
                self._entries.append(Entry(method, path, status, None, max(0.0, now - started), why))
            self.pending.clear()
        self.state = PASSTHROUGH
        self._buffer = b""
        return self._take_entries()

    @property
    def lost(self):
        return self.state == PASSTHROUGH or self.state == DISCARD

    @property
    def answered(self):
        """Every request so far has its whole response, and the stream is between responses."""
        return self.state == HEAD and not self.pending and not self._buffer

    def _take_entries(self):
        entries = self._entries
        if entries:
            self._entries = []
        return entries

    def _is_start_line(self, line):
        return len(line) < MAX_LINE_SIZE and _STATUS_LINE.fullmatch(line) is not None

    def _take_head(self, data, out):
        """Most responses are a final one with a plain Content-Length, its head whole in one
        read: framed here from the status line and that header alone, its body taken at
        once when it is there too (the general parser costs more than the relay itself).
        Anything else, or a head split across reads, the general parser frames from the
        same bytes, so the verdict is the same either way."""
        framed = None if self._buffer or not self.pending else self._plain_response(data)
        if framed is None or self.pending[0][0] in _BODY_IS_NOT_CONTENT_LENGTH:
            return super()._take_head(data, out)
        self._status, body_start, length = framed
        end = body_start + length
        if end > len(data):  # the body goes on in later reads
            out.append(data[:body_start])
            self.body_size = 0
            self._remaining = length
            self.state = BODY
            return data[body_start:]
        self.body_size = length
        self._finish(length, data[:end] if self.capture is not None else None)
        return data[end:]

    def _plain_response(self, data):
        """plain_response(data), remembered for the last head read: the responses of a
        keep-alive connection often repeat their head byte for byte (the same resource
        asked again: a server's heads change with their Date's second)."""
        if self._last_head is not None and data.startswith(self._last_head):
            return self._last_framing
        framed = plain_response(data)
        if framed is not None:
            self._last_head, self._last_framing = data[:framed[1]], framed
        return framed

    def _could_be_start(self):
        if not self.pending:  # nothing was asked: these bytes cannot be matched to a request
            return False
        first_line = self._buffer.split(b"\r\n", 1)[0]
        if b"\r\n" in self._buffer:
            return self._is_start_line(first_line)
        return len(first_line) <= MAX_LINE_SIZE and first_line[:7] == _STATUS_LINE_START[: len(first_line)]

    def _head(self, lines, head, out):
        if not self.pending:
            self.state = PASSTHROUGH
            return
        out.append(head)
        status = self._status = int(_STATUS_LINE.fullmatch(lines[0]).group(1))
        method = self.pending[0][0]
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            self._finish(None)  # the connection is no longer HTTP
            self.state = PASSTHROUGH
        elif status < 200:
            pass  # interim (100 Continue, 103 Early Hints): the final response follows
        elif method == "HEAD" or status == 204 or status == 304:
            self.body_size = 0
            self._message_done()
        else:
            self._frame_body(parse_headers(lines), until_close=True)

    def _message_done(self):
        self.state = HEAD
        self._finish(self.body_size)

    def _finish(self, size, whole=None):
        """The oldest request has its response; `whole`: its bytes, when they came at once."""
        method, path, started = self.pending.popleft()
        duration = self._now - started
        if duration < 0.0:  # a clock set back
            duration = 0.0
        if self.capture is not None:
            self.capture.response_done(self._status, size, duration, whole)
        if self.entries:
            self._entries.append(Entry(method, path, self._status, size, duration))


# Requests whose response's body is not what its Content-Length says (none, or a tunnel).
_BODY_IS_NOT_CONTENT_LENGTH = frozenset({"HEAD", "CONNECT"})


def plain_response(data):
    """(status, where the body starts, its length) when `data` starts with the whole head of
    a final response (not 1xx, 204 or 304) whose only framing header is one plain
    `Content-Length: digits` (any case); else None, and the general parser decides (no
    length, a transfer coding, several lengths, one spelt with spaces: whatever it strips
    or reads otherwise)."""
    end = data.find(b"\r\n\r\n")
    line_end = data.find(b"\r\n")
    if end < 0 or end + 4 > MAX_RELAYED_HEAD_SIZE or line_end >= MAX_LINE_SIZE:
        return None
    if _STATUS_LINE.fullmatch(data, 0, line_end) is None:
        return None
    status = int(data[9:12])  # where the status line has it
    if status < 200 or status == 204 or status == 304:
        return None
    block = data[line_end: end + 2].lower()  # every header line, CRLF first
    at = block.find(_CONTENT_LENGTH) + len(_CONTENT_LENGTH)
    if at < len(_CONTENT_LENGTH) or _TRANSFER_ENCODING in block or block.count(_CONTENT_LENGTH[2:]) != 1:
        return None
    value = block[at: block.find(b"\r\n", at)].strip()
    return (status, end + 4, int(value)) if value.isdigit() else None


# ---------------------------------------------------------------------------------------
# printing

_COLOURS = {1: "35", 2: "32", 3: "36", 4: "33", 5: "31"}  # magenta green cyan yellow red


def format_size(size):
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"


def format_duration(seconds):
    milliseconds = round(seconds * 1000)
    return f"{milliseconds} ms" if milliseconds < 10000 else f"{seconds:.1f} s"


def printable(path):
    """A request target safe to print: bytes outside visible ASCII (escape sequences a
    visitor might send to the operator's terminal) shown as %XX; long ones shortened."""
    if len(path) > MAX_PATH:
        path = path[:MAX_PATH] + "..."
    if path.isascii() and path.isprintable():
        return path
    return "".join(c if "!" <= c <= "~" else f"%{ord(c):02X}" for c in path)


def printable_text(text):
    """Words from the other side (a close reason) safe to print: anything that is not a
    printable character (escape sequences, CR, LF, bidirectional controls) as \\xNN."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def format_entry(entry, colour=False, arrow="→"):
    """`METHOD PATH → STATUS  SIZE  DURATION`; an upgrade has no size; a request the target
    did not answer `METHOD PATH → 502 target unreachable (why)  DURATION`, or without a
    status when the visitor got nothing."""
    status = "" if entry.status is None else str(entry.status)
    if colour and status:
        status = f"\x1b[{_COLOURS.get(entry.status // 100, '0')}m{status}\x1b[0m"
    outcome = " ".join(part for part in (status, entry.why) if part)
    parts = [f"{printable(entry.method)} {printable(entry.path)} {arrow} {outcome}"]
    if entry.size is not None:
        parts.append(format_size(entry.size))
    parts.append(format_duration(entry.duration))
    return "  ".join(parts)


@dataclass(frozen=True)
class ConnectionEntry:
    """One connection through a TCP tunnel, logged when it ends."""

    address: str  # host:port of the connecting side, as the server reported it
    outcome: str  # "closed", or why it ended otherwise
    bytes_in: int  # from the connecting side to the service
    bytes_out: int
    duration: float


def format_connection(entry, arrow="→"):
    """`TCP HOST:PORT → closed  1.2 KiB in  3.4 KiB out  2.3 s`."""
    return "  ".join((
        f"TCP {printable(entry.address)} {arrow} {entry.outcome}",
        f"{format_size(entry.bytes_in)} in",
        f"{format_size(entry.bytes_out)} out",
        format_duration(entry.duration),
    ))


class RequestLogger:
    """Writes entries to `out`, coloured on a terminal, plain when piped.

    A stdout that can no longer be written to (a closed pipe) ends the log, not the tunnel.
    """

    def __init__(self, out, colour=None):
        self.out = out
        if colour is None:
            isatty = getattr(out, "isatty", None)
            colour = bool(isatty and isatty())
        self.colour = colour
        self.arrow = arrow_for(out)
        self.broken = False

    def write(self, entry):
        if not self.broken:
            self._line(format_entry(entry, self.colour, self.arrow))

    def write_connection(self, entry):
        if not self.broken:
            self._line(format_connection(entry, self.arrow))

    def _line(self, text):
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):
            self.broken = True


def arrow_for(out):
    """The arrow of the lines written to `out`: `→`, or `->` where it cannot be encoded."""
    return "→" if _can_encode(out, "→") else "->"


def _can_encode(out, text):
    encoding = getattr(out, "encoding", None)
    if encoding is None:  # a text buffer such as StringIO takes anything
        return True
    try:
        text.encode(encoding)
    except (LookupError, UnicodeEncodeError):
        return False
    return True
