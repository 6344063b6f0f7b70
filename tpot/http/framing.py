"""HTTP/1.x message framing over a byte stream: where each message's head and body end.

`MessageFraming` is the sans-I/O machinery both directions of a conversation share: it
finds a head (CRLF CRLF, at most MAX_RELAYED_HEAD_SIZE bytes), then follows the body the head
announced: Content-Length, chunked (extensions, trailers), nothing, or everything until the
connection closes.  Subclasses decide what a head means (`_is_start_line`, `_head`): the
request side (tpot.http.rewrite.HostRewriter) and the response side (tpot.client.requestlog).
Where the framing cannot be followed the stream is PASSTHROUGH from then on.  Input may be
split anywhere; every verdict is the same as for the unsplit stream.

Every byte taken is appended to `out` unchanged, except heads, which `_head` writes (the
request side rewrites them).  `body_size` counts body bytes (chunk data, not its framing).
"""

import re

# Heads of the requests and responses relayed through a tunnel, followed by the client.
MAX_RELAYED_HEAD_SIZE = 65536
MAX_LINE_SIZE = 4096

_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(;.*)?")

# UNTIL_CLOSE: a body that ends when the connection does.  DISCARD: input is dropped.
HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, PASSTHROUGH, UNTIL_CLOSE, DISCARD = range(9)


def parse_headers(lines):
    """Header lines (after the start line) as {lower-case name: [stripped values]}."""
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return headers


def header_tokens(headers, name):
    """The lower-case comma-separated tokens of every `name` header, in order."""
    return [token.strip().lower() for value in headers.get(name, ()) for token in value.split(b",")]


def request_body_framed(headers):
    """Whether a request's body can be told from the next request by its head's `headers`
    (as parse_headers gives them): no transfer coding or chunked last, and at most one
    Content-Length, a number (RFC 9112 6.3: anything else is a 400)."""
    if b"transfer-encoding" in headers:
        return header_tokens(headers, b"transfer-encoding")[-1:] == [b"chunked"]
    lengths = set(headers.get(b"content-length", ()))
    return not lengths or (len(lengths) == 1 and lengths.pop().isdigit())


class MessageFraming:
    def __init__(self):
        self.state = HEAD
        self._buffer = b""
        self._remaining = 0
        self.body_size = 0

    # What subclasses define.

    def _is_start_line(self, line):
        raise NotImplementedError

    def _could_be_start(self):
        """An early verdict on an unfinished head (in self._buffer): False gives up at once."""
        return True

    def _head(self, lines, head, out):
        """A complete head with a valid start line: write it to `out`, set the body's state."""
        raise NotImplementedError

    def _unreadable_head(self, data, out):
        """Bytes where a head should be that are not one: pass them and the rest through."""
        out.append(data)
        self.state = PASSTHROUGH

    def _message_done(self):
        self.state = HEAD

    # The machinery.

    def _follow(self, data, out):
        while data:
            state = self.state
            if state == PASSTHROUGH:
                out.append(data)
                break
            if state == BODY or state == CHUNK_DATA:
                data = self._take_body(data, out)
            elif state == HEAD:
                data = self._take_head(data, out)
            elif state == UNTIL_CLOSE:
                self.body_size += len(data)
                out.append(data)
                break
            elif state == DISCARD:
                break
            else:
                data = self._take_line(data, out)

    def _frame_body(self, headers, until_close):
        """Follow the body a head announces; without a length or transfer coding it is empty,
        or with `until_close` (responses) ends with the connection."""
        self.body_size = 0
        # Most messages have no transfer coding: not even a call to say so.
        codings = header_tokens(headers, b"transfer-encoding") if b"transfer-encoding" in headers else None
        if codings:
            if codings[-1] == b"chunked":
                self.state = CHUNK_SIZE
            else:
                self.state = UNTIL_CLOSE if until_close else PASSTHROUGH
            return
        lengths = set(headers.get(b"content-length", ()))
        if not lengths:
            if until_close:
                self.state = UNTIL_CLOSE
            else:
                self._message_done()
            return
        length = lengths.pop() if len(lengths) == 1 else b""
        if not length.isdigit():
            self.state = PASSTHROUGH
            return
        self._remaining = int(length)
        if self._remaining:
            self.state = BODY
        else:
            self._message_done()

    def _take_body(self, data, out):
        piece = data[: self._remaining]
        out.append(piece)
        self._remaining -= len(piece)
        self.body_size += len(piece)
        if self._remaining == 0:
            if self.state == BODY:
                self._message_done()
            else:
                self.state = CHUNK_END
        return data[len(piece):]

    def _take_head(self, data, out):
        searched_from = max(0, len(self._buffer) - 3)
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n", searched_from)
        if end < 0:
            if len(self._buffer) > MAX_RELAYED_HEAD_SIZE or not self._could_be_start():
                held, self._buffer = self._buffer, b""
                self._unreadable_head(held, out)
            return b""
        head, rest = self._buffer[: end + 4], self._buffer[end + 4:]
        self._buffer = b""
        lines = head[:-4].split(b"\r\n")
        # The size limits give the verdict a split stream would get (see _could_be_start).
        if end + 4 > MAX_RELAYED_HEAD_SIZE or not self._is_start_line(lines[0]):
            self._unreadable_head(head, out)
            return rest
        self._head(lines, head, out)
        return rest

    def _take_line(self, data, out):
        """CHUNK_SIZE, CHUNK_END and TRAILER are line-oriented; lines pass through as is."""
        self._buffer += data
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE_SIZE:
                self._give_up(out)
            return b""
        if end >= MAX_LINE_SIZE:  # what a split stream would get, as for request lines
            self._give_up(out)
            return b""
        line, rest = self._buffer[:end], self._buffer[end + 2:]
        self._buffer = b""
        out.append(line + b"\r\n")
        self._after_line(line)
        return rest

    def _after_line(self, line):
        if self.state == CHUNK_SIZE:
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                self.state = PASSTHROUGH
                return
            self._remaining = int(match.group(1), 16)
            self.state = CHUNK_DATA if self._remaining else TRAILER
        elif self.state == CHUNK_END:
            self.state = CHUNK_SIZE if line == b"" else PASSTHROUGH
        elif line == b"":  # TRAILER: an empty line ends the message
            self._message_done()

    def _give_up(self, out):
        out.append(self._buffer)
        self._buffer = b""
        self.state = PASSTHROUGH
