"""The client's Host-rewriting state machine over a visitor's request stream.

Sans-I/O: `HostRewriter.feed(bytes) -> bytes` follows HTTP/1.x request framing across a keep-alive
connection (Content-Length and chunked bodies, trailers), rewrites the Host header of every
request head and leaves every other byte alone.  Where it cannot follow the framing (an
Upgrade, CONNECT, an unknown transfer coding, something that is not HTTP) it stops
interpreting and passes everything through untouched from then on.  Input may be split
anywhere; the output is the same as for the unsplit stream.  The framing itself is
tpot.http.framing's, shared with the response side of the request log.

`on_head`, when given, sees every request head before it is rewritten: the request log
records it, a visitor policy may strip headers from it or refuse it (see HostRewriter).
"""

import re

from tpot.http.framing import (
    DISCARD,
    MAX_RELAYED_HEAD_SIZE,
    MAX_LINE_SIZE,
    PASSTHROUGH,
    MessageFraming,
    header_tokens,
    parse_headers,
)

__all__ = ["MAX_RELAYED_HEAD_SIZE", "MAX_LINE_SIZE", "Forwarded", "HostRewriter"]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE = re.compile(_TOKEN + rb"+ \S+ HTTP/1\.[0-9]")
# What the start of a request line may look like before its CRLF has arrived.
_REQUEST_LINE_START = re.compile(
    _TOKEN + rb"*|" + _TOKEN + rb"+ \S*|"
    + _TOKEN + rb"+ \S+ (?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[0-9]\r?)?)?)?)?)?)?)?)?"
)


class Forwarded:
    """X-Forwarded-* values to put in every request head: the visitor's address and scheme."""

    def __init__(self, client, proto):
        self.client = client.encode("latin-1")
        self.proto = proto.encode("latin-1")

    def apply(self, lines):
        """Append the client to X-Forwarded-For; set Proto and Host (a visitor's own are dropped)."""
        host = None
        kept = [lines[0]]
        chain = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"host" and host is None:
                host = value.strip()
            if name == b"x-forwarded-for":
                chain.append(value.strip())
            elif name not in (b"x-forwarded-proto", b"x-forwarded-host"):
                kept.append(line)
        # Behind a trusted proxy the server already took the visitor from the chain's end.
        if not chain or chain[-1].rsplit(b",", 1)[-1].strip() != self.client:
            chain.append(self.client)
        kept.append(b"X-Forwarded-For: " + b", ".join(part for part in chain if part))
        kept.append(b"X-Forwarded-Proto: " + self.proto)
        if host:
            kept.append(b"X-Forwarded-Host: " + host)
        return kept


class HostRewriter(MessageFraming):
    """`host`: the Host value to set (None leaves Host alone); `forwarded`: a Forwarded or None.

    `on_head(lines)`, if given, is called with the lines of every request head (start line
    first, without CRLFs) before it is rewritten, and returns the lines to forward, or None
    to refuse the request: it and everything after it is then dropped.  Where a head should
    be but cannot be read, it is called with None; None again drops the stream, anything
    else lets it pass through untouched as without `on_head`.
    """

    def __init__(self, host, forwarded=None, on_head=None):
        super().__init__()
        self.host = host.encode("latin-1") if host is not None else None
        self.forwarded = forwarded
        self.on_head = on_head

    def feed(self, data):
        out = []
        self._follow(bytes(data), out)
        return b"".join(out)

    def _is_start_line(self, line):
        return _is_request_line(line)

    def _could_be_start(self):
        """An early verdict so a non-HTTP stream is not held back waiting for a head."""
        first_line = self._buffer.split(b"\r\n", 1)[0]
        if b"\r\n" in self._buffer:
            return _is_request_line(first_line)
        return len(first_line) <= MAX_LINE_SIZE and _REQUEST_LINE_START.fullmatch(first_line) is not None

    def _unreadable_head(self, data, out):
        if self.on_head is not None and self.on_head(None) is None:
            self.state = DISCARD
            return
        super()._unreadable_head(data, out)

    def _head(self, lines, head, out):
        if self.on_head is not None:
            lines = self.on_head(lines)
            if lines is None:
                self.state = DISCARD
                return
        out.append(self._rewritten(lines))
        headers = parse_headers(lines)
        if lines[0][:8].upper() == b"CONNECT " or (
                b"upgrade" in header_tokens(headers, b"connection") and b"upgrade" in headers):
            self.state = PASSTHROUGH
            return
        self._frame_body(headers, until_close=False)

    def _rewritten(self, lines):
        if self.forwarded is not None:
            lines = self.forwarded.apply(lines)  # before Host changes: it records the original
        if self.host is not None:
            for index in range(1, len(lines)):
                name, colon, _ = lines[index].partition(b":")
                if colon and name.strip().lower() == b"host":
                    lines[index] = b"Host: " + self.host
        return b"\r\n".join(lines) + b"\r\n\r\n"


def _is_request_line(line):
    """A whole request line.  An unterminated line is given up on once it exceeds
    MAX_LINE_SIZE bytes, which may include the CR of its CRLF, so a complete line of
    MAX_LINE_SIZE bytes or more must be refused too for the verdict not to depend on
    where the stream was split."""
    return len(line) < MAX_LINE_SIZE and _REQUEST_LINE.fullmatch(line) is not None
