"""The request-head parser: the first HTTP/1.x request head of a connection, from bytes.

Sans-I/O in the manner of h11: feed bytes to `HeadReader.feed`; it returns None until a
whole head has arrived, then a `RequestHead`, or raises `HeadError` carrying the HTTP
status to answer with.  Everything read so far, head included, stays in `buffered` so the
connection can be replayed to whoever handles it next.
"""

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

# The router reads the first head of every connection before it knows who it is for: kept
# small (431 beyond it), unlike the heads relayed later (tpot.http.framing, 64 KiB).
MAX_FIRST_HEAD_SIZE = 8192

_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(1\.[0-9])")
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]]*)(?::([0-9]*))?")


class HeadError(Exception):
    """The head cannot be served; `status` is the HTTP status to answer with."""

    def __init__(self, status, reason, headers=()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)


@dataclass
class RequestHead:
    method: str
    target: str
    version: str
    headers: list = field(default_factory=list)

    def header(self, name):
        """The value of the first header called `name` (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_values(self, name):
        """The values of every header called `name` (any case), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    def header_tokens(self, name):
        """Comma-separated tokens of every `name` header, lower-cased (for Connection etc.)."""
        wanted = name.lower()
        return {
            token.strip().lower()
            for key, value in self.headers
            if key == wanted
            for token in value.split(",")
        }

    @property
    def host(self):
        """The Host header without port, lower-cased and without a trailing dot."""
        return parse_host(self.header("host") or "")

    @property
    def path(self):
        return urlsplit(self.target).path

    def query(self, name):
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None


def _check_target(target):
    """HeadError unless the request target can be split as a URL (`http://[`, `//[x]/` cannot)."""
    try:
        urlsplit(target)
    except ValueError:
        raise HeadError(400, "The request target is not a valid URL.") from None


def parse_host(value):
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return ""
    return match.group(1).rstrip(".")


def parse_head(raw):
    """Parse a complete head (without its final blank line) into a RequestHead."""
    lone = raw.replace(b"\r\n", b"")
    if b"\n" in lone or b"\r" in lone:
        # A lenient server behind us may split on a bare LF or CR: what is one header here
        # (a visitor's X-Pad) would be several there (a forged X-Forwarded-Host).
        raise HeadError(400, "The request head has a bare CR or LF; lines end with CRLF.")
    request_line, _, header_block = raw.partition(b"\r\n")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise HeadError(400, "The request line is not METHOD TARGET HTTP/1.x.")
    method, target, version = (part.decode("latin-1") for part in match.groups())
    _check_target(target)
    head = RequestHead(method, target, version)
    for line in header_block.split(b"\r\n") if header_block else ():
        name, colon, value = line.partition(b":")
        if not colon or _HEADER_NAME.fullmatch(name) is None:
            raise HeadError(400, "A request header is malformed.")
        head.headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    return head


class HeadReader:
    """Collects bytes until the end of the first request head."""

    def __init__(self, max_size=MAX_FIRST_HEAD_SIZE):
        self.max_size = max_size
        self.buffered = b""

    def feed(self, data):
        searched_from = max(0, len(self.buffered) - 3)
        self.buffered += data
        if self.buffered[:1] and self.buffered[0] < 0x21:
            # h11's trick: a TLS hello or binary junk can never become a request line.
            raise HeadError(400, "This is not an HTTP request.")
        end = self.buffered.find(b"\r\n\r\n", searched_from)
        if end < 0:
            if len(self.buffered) > self.max_size:
                raise HeadError(431, "The request head is larger than 8 KiB.")
            return None
        if end + 4 > self.max_size:
            raise HeadError(431, "The request head is larger than 8 KiB.")
        return parse_head(self.buffered[:end])
