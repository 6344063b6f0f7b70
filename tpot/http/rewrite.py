"""The client's Host-rewriting state machine over a visitor's request stream.

Sans-I/O: `HostRewriter.feed(bytes) -> bytes` follows HTTP/1.x request framing across a keep-alive
connection (Content-Length and chunked bodies, trailers), rewrites the Host header of every
request head and leaves every other byte alone.  Where it cannot follow the framing
(something that is not HTTP, a chunked body whose framing breaks, or what follows an
Upgrade or CONNECT request when it is not another request) it stops interpreting and
passes everything through untouched from then on.  Input may be split
anywhere; the output is the same as for the unsplit stream.  The framing itself is
tpot.http.framing's, shared with the response side of the request log.

`on_head`, when given, sees every request head before it is rewritten: the request log
records it, a visitor policy may strip headers from it or refuse it (see HostRewriter).

What the visitor writes cannot override what the tunnel vouches for: a head with a bare CR
or LF (which a lenient target might split into more headers), a folded line (which it
would join to the header above) or a body whose end it cannot tell (an unknown transfer
coding, a Content-Length that is not one number) is refused, `refused` says
with which status, and nothing from it on reaches the target; an absolute-form target
(`GET http://admin.internal/ HTTP/1.1`) is sent in origin form, so the target goes by the
Host we set; and every request has a Host.
"""

import functools
import re

from tpot.http.framing import (
    DISCARD,
    HEAD,
    MAX_LINE_SIZE,
    MAX_RELAYED_HEAD_SIZE,
    PASSTHROUGH,
    MessageFraming,
    header_tokens,
    request_body_framed,
)

__all__ = ["MAX_RELAYED_HEAD_SIZE", "MAX_LINE_SIZE", "Forwarded", "HostRewriter", "forwarded_for"]

# The largest read, and the largest header block, a HostRewriter remembers (with what it
# became) per connection.
MEMO_SIZE = 4096

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE = re.compile(_TOKEN + rb"+ \S+ HTTP/1\.[0-9]")
_ABSOLUTE_FORM = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) [A-Za-z][A-Za-z0-9+.\-]*://[^/?# ]*(\S*) (HTTP/1\.[0-9])")
# The headers whose values the framing needs (tpot.http.framing), and the visitor's own
# X-Forwarded-* headers that Forwarded replaces rather than extends.
_FRAMING = frozenset((b"transfer-encoding", b"content-length", b"connection", b"upgrade"))
_DROPPED = (b"x-forwarded-proto", b"x-forwarded-host")
BARE_CR_OR_LF = "the request head has a bare CR or LF; lines end with CRLF"
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
        # What every request of a visitor without a chain of its own gets: made once.
        self._for_client = b"X-Forwarded-For: " + self.client
        self._proto_line = b"X-Forwarded-Proto: " + self.proto

    def headers(self, chain, host):
        """The X-Forwarded-* lines for a head whose X-Forwarded-For values were `chain`."""
        if not chain:
            added = [self._for_client, self._proto_line]
        else:
            # Behind a trusted proxy the server already took the visitor from the chain's end.
            if chain[-1].rsplit(b",", 1)[-1].strip() != self.client:
                chain.append(self.client)
            added = [b"X-Forwarded-For: " + b", ".join(part for part in chain if part), self._proto_line]
        if host:
            added.append(b"X-Forwarded-Host: " + host)
        return added


@functools.lru_cache(maxsize=1024)
def forwarded_for(client, proto):
    """The Forwarded for a visitor's address and scheme, made once for each of the last
    1024 pairs: a browser opens several connections, a client many, from one address."""
    return Forwarded(client, proto)


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
        # The Host of the first request, which the server routed to this tunnel by it: the
        # tunnel's public host, whatever later requests of the connection claim.
        self.public_host = None
        self.refused = None  # the status of a request refused here (400), if one was
        # After an Upgrade or CONNECT request: the target may switch protocols, or may
        # refuse and read the next request.  What follows is told apart by its first
        # bytes: a request is rewritten like any other (else a visitor could pipeline one
        # past a refused Upgrade with a Host of its own); anything else (a WebSocket
        # frame, TLS) passes through untouched from then on.
        self._may_have_switched = False
        self._last_headers = None  # see _rewritten_again
        self._last_in = self._last_out = None  # the last read of whole requests, and what it became

    def feed(self, data, tap=None):
        """The bytes for the target.  `tap`, when given, stands for the output list (its
        `out` is set to it): the inspector's RequestTap sees each piece as it is written."""
        data = bytes(data)
        if tap is not None:
            out = tap.out = []
            self._follow(data, tap)
            return b"".join(out)
        # A read of whole requests, between requests, with nothing to tell of them (no
        # on_head), becomes the same bytes every time: the same request repeated on a
        # keep-alive connection (polling, health checks, a load test) is rewritten once.
        # Not after an Upgrade or CONNECT request: what follows is judged by its first bytes,
        # and a real pass over a head is what clears that state.
        between = self.state == HEAD and not self._buffer and self.on_head is None and not self._may_have_switched
        if between and data == self._last_in:
            return self._last_out
        out = []
        self._follow(data, out)
        rewritten = b"".join(out)
        if between and self.state == HEAD and not self._buffer and not self._may_have_switched \
                and len(data) <= MEMO_SIZE:
            self._last_in, self._last_out = data, rewritten
        return rewritten

    def _is_start_line(self, line):
        return _is_request_line(line)

    def _could_be_start(self):
        """An early verdict so a non-HTTP stream is not held back waiting for a head."""
        first_line = self._buffer.split(b"\r\n", 1)[0]
        if b"\r\n" in self._buffer:
            return _is_request_line(first_line)
        return len(first_line) <= MAX_LINE_SIZE and _REQUEST_LINE_START.fullmatch(first_line) is not None

    def _unreadable_head(self, data, out):
        if self._may_have_switched:  # the new protocol's bytes
            self.state = PASSTHROUGH  # first: the inspector's tap goes by the state
            out.append(data)
            return
        if _bare_lf_request(data):
            self._refuse(400)
            return
        if self.on_head is not None and self.on_head(None) is None:
            self.state = DISCARD
            return
        super()._unreadable_head(data, out)

    def _refuse(self, status):
        self.refused = status
        self.state = DISCARD

    def take_refusal(self):
        """The status of a request refused since the last call (None if none was): once."""
        status, self.refused = self.refused, None
        return status

    def _head(self, lines, head, out):
        lone = head.replace(b"\r\n", b"")
        # A line folded onto the one before (obs-fold) would be unfolded by the target into
        # the header above it, the Host we set among them: refused, as RFC 9112 allows.
        if b"\r" in lone or b"\n" in lone or b"\r\n " in head or b"\r\n\t" in head:
            self._refuse(400)
            return
        self._may_have_switched = False
        if self.public_host is None:
            self.public_host = _host_of(lines) or b""
        rewritten, headers = self._rewritten_again(lines, head)
        # `headers` holds only what framing reads: empty for most requests (no body).
        if headers and not request_body_framed(headers):
            # Where its body ends is anyone's guess, and a lenient target's guess could
            # make the rest a request the rewriter never saw.  Before on_head: the request
            # log and the inspector never count a request that goes nowhere.
            self._refuse(400)
            return
        if self.on_head is not None:
            judged = self.on_head(lines)
            if judged is None:
                self.state = DISCARD
                return
            if judged is not lines:  # a policy took a header out
                rewritten, headers = self._rewritten(judged)
        out.append(rewritten)
        if lines[0][:8].upper() == b"CONNECT " or (
                b"upgrade" in headers and b"upgrade" in header_tokens(headers, b"connection")):
            self._may_have_switched = True
        if headers:
            self._frame_body(headers, until_close=False)
        else:  # what _frame_body makes of no length and no coding: no body
            self.body_size = 0
            self._message_done()

    def _rewritten_again(self, lines, head):
        """`_rewritten(lines)`, remembered for the connection's last header block: a
        connection's requests mostly differ in their request line only (a browser's, an
        API client's, a load test's), and what the header lines become depends on them
        alone (and on the connection's public host and visitor), so they are rewritten
        once.  An absolute-form request line changes the head's Host: never remembered."""
        start = lines[0]
        if b"://" in start:
            return self._rewritten(lines)
        block = head[len(start):]  # from the request line's CRLF to the blank line's
        last = self._last_headers
        if last is not None and last[0] == block:
            return start + last[1], last[2]
        rewritten, headers = self._rewritten(lines)
        if len(block) <= MEMO_SIZE:
            self._last_headers = (block, rewritten[len(start):], headers)
        return rewritten, headers

    def _rewritten(self, lines):
        """The head to send for `lines`, and the headers the framing needs ({name: values}
        as parse_headers gives them), in one pass over the lines: a request's whole cost here."""
        start = lines[0]
        absolute = _ABSOLUTE_FORM.fullmatch(start) if b"://" in start else None
        if absolute is not None and not start[:8].upper() == b"CONNECT ":
            method, path, version = absolute.groups()
            start = b"%s %s %s" % (method, _origin_form(path), version)
        forwarded, host = self.forwarded, self.host
        kept = [start]
        chain = []
        framing = {}
        has_host = False
        for index in range(1, len(lines)):
            line = lines[index]
            name, colon, value = line.partition(b":")
            name = name.strip().lower()
            if name in _FRAMING:
                framing.setdefault(name, []).append(value.strip())
            elif forwarded is not None and name[:12] == b"x-forwarded-":
                if name == b"x-forwarded-for":
                    chain.append(value.strip())
                    continue
                if name in _DROPPED:
                    continue
            elif colon and name == b"host":
                has_host = True
                if host is not None:
                    line = b"Host: " + host
            kept.append(line)
        if forwarded is not None:
            kept += forwarded.headers(chain, self.public_host)
        if absolute is not None and not has_host:
            # Its authority was the only host it named: it must not reach the target without one.
            kept.insert(1, b"Host: " + (self.host or self.public_host))
        return b"\r\n".join(kept) + b"\r\n\r\n", framing


def _host_of(lines):
    """The value of the first Host header of a head's lines, or None."""
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"host":
            return value.strip()
    return None


def _origin_form(path):
    """The path and query of an absolute-form target (`http://h/p?q` -> `/p?q`, `http://h` -> `/`)."""
    if not path:
        return b"/"
    return path if path[:1] == b"/" else b"/" + path


def _bare_lf_request(data):
    """Whether bytes that did not frame as a head are a request whose lines end in a bare
    LF (or CR): what a lenient target would read as a request with headers of its own."""
    lone = data.replace(b"\r\n", b"")
    if b"\n" not in lone and b"\r" not in lone:
        return False
    first_line = re.split(rb"\r\n|\n|\r", data, maxsplit=1)[0]
    return _is_request_line(first_line)  # bounded as everywhere, for the same verdict at any split


def _is_request_line(line):
    """A whole request line.  An unterminated line is given up on once it exceeds
    MAX_LINE_SIZE bytes, which may include the CR of its CRLF, so a complete line of
    MAX_LINE_SIZE bytes or more must be refused too for the verdict not to depend on
    where the stream was split."""
    return len(line) < MAX_LINE_SIZE and _REQUEST_LINE.fullmatch(line) is not None
