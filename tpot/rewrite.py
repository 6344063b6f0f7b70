"""The client's Host-rewriting state machine over a visitor's request stream.

`HostRewriter.feed(bytes) -> bytes` follows HTTP/1.x request framing across a keep-alive
connection (Content-Length and chunked bodies, trailers), rewrites the Host header of every
request head and leaves every other byte alone.  Where it cannot follow the framing (an
Upgrade, CONNECT, an unknown transfer coding, something that is not HTTP) it stops
interpreting and passes everything through untouched from then on.  Input may be split
anywhere; the output is the same as for the unsplit stream.
"""

import re

MAX_HEAD_SIZE = 65536
MAX_LINE_SIZE = 4096

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE = re.compile(_TOKEN + rb"+ \S+ HTTP/1\.[0-9]")
# What the start of a request line may look like before its CRLF has arrived.
_REQUEST_LINE_START = re.compile(
    _TOKEN + rb"*|" + _TOKEN + rb"+ \S*|"
    + _TOKEN + rb"+ \S+ (?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[0-9]\r?)?)?)?)?)?)?)?)?"
)
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(;.*)?")

HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, PASSTHROUGH = range(7)


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


class HostRewriter:
    """`host`: the Host value to set (None leaves Host alone); `forwarded`: a Forwarded or None."""

    def __init__(self, host, forwarded=None):
        self.host = host.encode("latin-1") if host is not None else None
        self.forwarded = forwarded
        self.state = HEAD
        self._buffer = b""
        self._remaining = 0

    def feed(self, data):
        out = []
        data = bytes(data)
        while data:
            if self.state == PASSTHROUGH:
                out.append(data)
                break
            if self.state in (BODY, CHUNK_DATA):
                data = self._take_body(data, out)
            elif self.state == HEAD:
                data = self._take_head(data, out)
            else:
                data = self._take_line(data, out)
        return b"".join(out)

    def _take_body(self, data, out):
        piece = data[: self._remaining]
        out.append(piece)
        self._remaining -= len(piece)
        if self._remaining == 0:
            self.state = HEAD if self.state == BODY else CHUNK_END
        return data[len(piece):]

    def _take_head(self, data, out):
        searched_from = max(0, len(self._buffer) - 3)
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n", searched_from)
        if end < 0:
            if len(self._buffer) > MAX_HEAD_SIZE or not self._could_be_request():
                self._give_up(out)
            return b""
        head, rest = self._buffer[: end + 4], self._buffer[end + 4:]
        self._buffer = b""
        lines = head[:-4].split(b"\r\n")
        # The size limits give the verdict a split stream would get (see _could_be_request).
        if end + 4 > MAX_HEAD_SIZE or not _is_request_line(lines[0]):
            out.append(head)
            self.state = PASSTHROUGH
            return rest
        out.append(self._rewritten(lines))
        self._enter_body(lines)
        return rest

    def _could_be_request(self):
        """An early verdict so a non-HTTP stream is not held back waiting for a head."""
        first_line = self._buffer.split(b"\r\n", 1)[0]
        if b"\r\n" in self._buffer:
            return _is_request_line(first_line)
        return len(first_line) <= MAX_LINE_SIZE and _REQUEST_LINE_START.fullmatch(first_line) is not None

    def _rewritten(self, lines):
        if self.forwarded is not None:
            lines = self.forwarded.apply(lines)  # before Host changes: it records the original
        if self.host is not None:
            for index in range(1, len(lines)):
                name, colon, _ = lines[index].partition(b":")
                if colon and name.strip().lower() == b"host":
                    lines[index] = b"Host: " + self.host
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _enter_body(self, lines):
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        connection = {t.strip().lower() for v in headers.get(b"connection", ()) for t in v.split(b",")}
        if lines[0].upper().startswith(b"CONNECT ") or (b"upgrade" in connection and b"upgrade" in headers):
            self.state = PASSTHROUGH
            return
        codings = [t.strip().lower() for v in headers.get(b"transfer-encoding", ()) for t in v.split(b",")]
        if codings:
            self.state = CHUNK_SIZE if codings[-1] == b"chunked" else PASSTHROUGH
            return
        lengths = set(headers.get(b"content-length", [b"0"]))
        length = lengths.pop() if len(lengths) == 1 else b""
        if not length.isdigit():
            self.state = PASSTHROUGH
            return
        self._remaining = int(length)
        self.state = BODY if self._remaining else HEAD

    def _take_line(self, data, out):
        """CHUNK_SIZE, CHUNK_END and TRAILER are line-oriented; lines pass through as is."""
        self._buffer += data
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE_SIZE:
                self._give_up(out)
            return b""
        if end >= MAX_LINE_SIZE:  # what a split stream would get: see _is_request_line
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
        elif line == b"":  # TRAILER: an empty line ends the request
            self.state = HEAD

    def _give_up(self, out):
        out.append(self._buffer)
        self._buffer = b""
        self.state = PASSTHROUGH


def _is_request_line(line):
    """A whole request line.  An unterminated line is given up on once it exceeds
    MAX_LINE_SIZE bytes, which may include the CR of its CRLF, so a complete line of
    MAX_LINE_SIZE bytes or more must be refused too for the verdict not to depend on
    where the stream was split."""
    return len(line) < MAX_LINE_SIZE and _REQUEST_LINE.fullmatch(line) is not None
