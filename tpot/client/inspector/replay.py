"""Replaying a captured request to the local target, maybe edited first.

`replayed_request` is pure: the bytes to send for an exchange's request and the user's
edits.  `replay` sends them over a connection of its own, through the tunnel's Host
rewrite and forwarded headers (with the original visitor's address), and captures the
answer as a new exchange marked as a replay of the first.
"""

import re

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

from tpot.client.inspector.capture import ConversationCapture, RequestTap
from tpot.client.inspector.present import decode_base64, message_body
from tpot.client.requestlog import ResponseTracker, request_line
from tpot.http.rewrite import Forwarded, HostRewriter

REPLAY_TIMEOUT = 30.0
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_FRAMING_HEADERS = (b"content-length", b"transfer-encoding")


class ReplayError(Exception):
    """Why a replay was not made: `status` for the API's answer, the message for the user."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def replayed_request(exchange, edits=None):
    """The request to send: the captured bytes as they are, or a request rebuilt from
    them with `edits` ({"method", "path", "headers": [[name, value]], "body": base64},
    any of them) applied; ReplayError when that cannot be done."""
    raw = exchange.request.raw
    if not edits:
        _check_whole(exchange)
        return raw
    head, _, _ = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, _, rest = lines[0].partition(b" ")
    path, _, version = rest.rpartition(b" ")
    method = _edited(edits, "method", method, _TOKEN)
    path = _edited(edits, "path", path, _TARGET)
    headers = _headers(edits["headers"]) if "headers" in edits else lines[1:]
    body = _body(edits, exchange)
    kept = [line for line in headers if line.partition(b":")[0].strip().lower() not in _FRAMING_HEADERS]
    if body or method.upper() in (b"POST", b"PUT", b"PATCH"):
        kept.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join([b" ".join((method, path, version or b"HTTP/1.1")), *kept]) + b"\r\n\r\n" + body


def _check_whole(exchange):
    """A request whose body was cut cannot be sent as it was captured."""
    if exchange.request.truncated:
        raise ReplayError(409, "The request's body was larger than the inspector keeps; replay it with an edited body.")


def _edited(edits, key, original, pattern):
    value = edits.get(key)
    if value is None:
        return original
    encoded = str(value).encode("latin-1", "replace")
    if pattern.fullmatch(encoded) is None:
        raise ReplayError(400, f"The {key} {value!r} is not valid in a request line.")
    return encoded


def _headers(pairs):
    if not isinstance(pairs, list):
        raise ReplayError(400, "headers must be a list of [name, value] pairs.")
    lines = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise ReplayError(400, "headers must be a list of [name, value] pairs of strings.")
        name, value = (part.encode("latin-1", "replace") for part in pair)
        if _TOKEN.fullmatch(name) is None or b"\r" in value or b"\n" in value or b"\0" in value:
            raise ReplayError(400, f"The header {pair[0]!r} is not valid: a token name and a value on one line.")
        lines.append(name + b": " + value.strip())
    return lines


def _body(edits, exchange):
    if "body" not in edits:
        _check_whole(exchange)
        return message_body(exchange.request.raw)
    body = decode_base64(edits["body"] or "")
    if body is None:
        raise ReplayError(400, "body must be base64.")
    return body


def replay(tunnel, exchange, edits, reactor):
    """Send the request (edited) to `tunnel`'s target: a Deferred firing with the new
    exchange, or failing with ReplayError (502: the target could not be reached, 504: no
    answer in REPLAY_TIMEOUT seconds)."""
    request = replayed_request(exchange, edits)
    capture = ConversationCapture(tunnel.inspector.store, tunnel, exchange.visitor, replay_of=exchange.id)
    rewriter = HostRewriter(tunnel.settings.host_rewrite, _forwarded(tunnel, exchange))
    rewriter.public_host = (tunnel.public_host or "").encode("latin-1")
    method, path = request_line([request.partition(b"\r\n")[0]])
    now = reactor.seconds()
    tracker = ResponseTracker(capture)
    tracker.request(method, path, now)  # and the capture
    data = rewriter.feed(request, RequestTap(capture, rewriter))
    if rewriter.refused is not None:
        raise ReplayError(400, "The edited request is not valid HTTP.")
    done = defer.Deferred()
    connecting = tunnel.connector.connect(_ReplayFactory(data, tracker, capture, reactor, done))
    connecting.addErrback(lambda _: _unreachable(capture, done))
    return done


def _forwarded(tunnel, exchange):
    if not tunnel.settings.forwarded_headers:
        return None
    return Forwarded(exchange.visitor, tunnel.settings.server.scheme)


def _unreachable(capture, done):
    capture.ended("target unreachable")
    if not done.called:
        done.errback(ReplayError(502, "The target could not be reached."))


class _ReplayFactory(Factory):
    noisy = False

    def __init__(self, data, tracker, capture, reactor, done):
        self.args = (data, tracker, capture, reactor, done)

    def buildProtocol(self, addr):
        return _ReplayProtocol(*self.args)


class _ReplayProtocol(Protocol):
    """The one connection of a replay: the request out, the response in, then close."""

    def __init__(self, data, tracker, capture, reactor, done):
        self.data = data
        self.tracker = tracker
        self.capture = capture
        self.reactor = reactor
        self.done = done
        self._timeout = None
        self._timed_out = False

    def connectionMade(self):
        self._timeout = self.reactor.callLater(REPLAY_TIMEOUT, self._give_up)
        self.transport.write(self.data)

    def _give_up(self):
        self._timed_out = True
        self.transport.abortConnection()

    def dataReceived(self, data):
        if self.tracker.feed(data, self.reactor.seconds()) or self.tracker.lost:
            self.transport.loseConnection()

    def connectionLost(self, reason=None):
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self.tracker.close(self.reactor.seconds())
        self.capture.ended("no response")
        exchange = self.capture.last
        if exchange is not None and exchange.status is not None:
            self.done.callback(exchange)
        elif self._timed_out:
            self.done.errback(ReplayError(504, f"The target did not answer in {REPLAY_TIMEOUT:.0f} s."))
        else:
            self.done.errback(ReplayError(502, "The target closed the connection without answering."))
