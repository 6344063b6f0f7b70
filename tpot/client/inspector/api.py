"""The inspector's web side on twisted.web: the page, the JSON API and the live event stream.

Thin: what it answers is tpot.client.inspector.views' (JSON), guard's (who may ask) and
replay's.  Every request is checked for its Host first (403 otherwise, against DNS
rebinding); replay and delete also need the run's token in X-TPoT-Token (403 otherwise).
Request bodies are held in memory and bounded, never spooled to disk.
"""

import io
import json
from importlib import resources

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import Resource
from zope.interface import implementer

from tpot import __version__
from tpot.client.inspector import guard, views
from tpot.client.inspector.replay import ReplayError, replay

# A replay's edits: a 1 MiB body in base64 and its headers.
MAX_API_BODY = 2 * 1024 * 1024
MAX_EVENT_STREAMS = 16
_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
_SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Cache-Control": b"no-store",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
    b"Content-Security-Policy": b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def _static(name):
    return resources.files("tpot.client.inspector").joinpath("static", name).read_bytes()


class BoundedRequest(server.Request):
    """A request whose body stays in memory and stops being kept past MAX_API_BODY."""

    too_large = False

    def gotLength(self, length):
        # Not Request's: it spools a body over 100 kB to a temporary file.
        self.content = io.BytesIO()
        self.too_large = length is not None and length > MAX_API_BODY

    def handleContentChunk(self, data):
        if self.too_large or self.content.tell() + len(data) > MAX_API_BODY:
            self.too_large = True
            return
        self.content.write(data)

    def process(self):
        for name, value in _SECURITY_HEADERS.items():
            self.setHeader(name, value)
        super().process()


def _json(request, value, code=http.OK):
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(value).encode("utf-8")


def _error(request, code, message):
    return _json(request, {"error": message}, code)


class _Refusal(Resource):
    isLeaf = True

    def __init__(self, code, message):
        super().__init__()
        self.code = code
        self.message = message

    def render(self, request):
        return _error(request, self.code, self.message)


class Root(Resource):
    def __init__(self, inspector):
        super().__init__()
        self.inspector = inspector
        api = Resource()
        api.putChild(b"tunnels", _Tunnels(inspector))
        api.putChild(b"requests", _Requests(inspector))
        api.putChild(b"events", _Events(inspector))
        self.putChild(b"api", api)
        static = Resource()
        for name, kind in _STATIC.items():
            static.putChild(name.encode(), _File(_static(name), kind))
        self.putChild(b"static", static)
        self.page = _Page(inspector.token)

    def getChildWithDefault(self, path, request):
        host = _header(request, "host")
        if not guard.host_allowed(host, self.inspector.listen_host, self.inspector.port):
            return _Refusal(http.FORBIDDEN, "This inspector answers only to its own address or localhost.")
        if path == b"":
            return self.page
        return super().getChildWithDefault(path, request)


class _File(Resource):
    isLeaf = True

    def __init__(self, content, kind):
        super().__init__()
        self.content = content
        self.kind = kind.encode() + b"; charset=utf-8"

    def render_GET(self, request):
        request.setHeader(b"Content-Type", self.kind)
        return self.content


class _Page(_File):
    def __init__(self, token):
        page = _static("index.html").decode("utf-8")
        page = page.replace("{{TOKEN}}", token).replace("{{VERSION}}", __version__)
        super().__init__(page.encode("utf-8"), "text/html")


class _Tunnels(Resource):
    isLeaf = True

    def __init__(self, inspector):
        super().__init__()
        self.inspector = inspector

    def render_GET(self, request):
        return _json(request, {"tunnels": views.tunnels(self.inspector.tunnels)})


def _arg(request, name):
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _authorized(request, inspector):
    return guard.token_matches(_header(request, guard.TOKEN_HEADER), inspector.token)


def _header(request, name):
    value = request.getHeader(name.encode())
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Requests(Resource):
    def __init__(self, inspector):
        super().__init__()
        self.inspector = inspector

    def render_GET(self, request):
        try:
            chosen = views.select(
                self.inspector.store.newest_first(), views.parse_limit(_arg(request, "limit")),
                status=_arg(request, "status"), path=_arg(request, "path"), method=_arg(request, "method"),
            )
        except views.FilterError as error:
            return _error(request, http.BAD_REQUEST, f"{error}.")
        return _json(request, {"requests": chosen})

    def render_DELETE(self, request):
        if not _authorized(request, self.inspector):
            return _error(request, http.FORBIDDEN, f"Deleting needs the {guard.TOKEN_HEADER} header of the inspector's page.")
        self.inspector.store.clear()
        request.setResponseCode(http.NO_CONTENT)
        return b""

    def getChild(self, path, request):
        exchange_id = path.decode("ascii", "replace")
        exchange = self.inspector.store.get(int(exchange_id)) if exchange_id.isdigit() else None
        if exchange is None:
            return _Refusal(http.NOT_FOUND, f"No exchange {exchange_id} (it may have been evicted).")
        return _Exchange(self.inspector, exchange)


class _Exchange(Resource):
    def __init__(self, inspector, exchange):
        super().__init__()
        self.inspector = inspector
        self.exchange = exchange

    def render_GET(self, request):
        return _json(request, views.detail(self.exchange))

    def getChild(self, path, request):
        if path == b"replay":
            return _Replay(self.inspector, self.exchange)
        return _Refusal(http.NOT_FOUND, "Unknown path.")


class _Replay(Resource):
    isLeaf = True

    def __init__(self, inspector, exchange):
        super().__init__()
        self.inspector = inspector
        self.exchange = exchange

    def render_POST(self, request):
        if not _authorized(request, self.inspector):
            return _error(request, http.FORBIDDEN, f"Replaying needs the {guard.TOKEN_HEADER} header of the inspector's page.")
        if request.too_large:
            return _error(request, http.REQUEST_ENTITY_TOO_LARGE, f"The edits must be at most {MAX_API_BODY} bytes.")
        try:
            edits = _edits(request.content.getvalue())
            done = replay(self.exchange.tunnel, self.exchange, edits, self.inspector.reactor)
        except ReplayError as error:
            return _error(request, error.status, str(error))
        done.addCallbacks(lambda exchange: _finish(request, _json(request, views.summary(exchange))),
                          lambda failure: _finish(request, _failed(request, failure)))
        return server.NOT_DONE_YET


def _edits(body):
    if not body.strip():
        return None
    try:
        edits = json.loads(body)
    except ValueError:
        raise ReplayError(http.BAD_REQUEST, "The edits must be a JSON object.") from None
    if not isinstance(edits, dict):
        raise ReplayError(http.BAD_REQUEST, "The edits must be a JSON object.")
    return edits


def _failed(request, failure):
    error = failure.value if isinstance(failure, Failure) else failure
    if isinstance(error, ReplayError):
        return _error(request, error.status, str(error))
    return _error(request, http.INTERNAL_SERVER_ERROR, "The replay failed.")


def _finish(request, body):
    if not request.finished and not request._disconnected:
        request.write(body)
        request.finish()


class _Events(Resource):
    isLeaf = True

    def __init__(self, inspector):
        super().__init__()
        self.inspector = inspector
        self.streams = set()

    def render_GET(self, request):
        if len(self.streams) >= MAX_EVENT_STREAMS:
            return _error(request, http.SERVICE_UNAVAILABLE, f"At most {MAX_EVENT_STREAMS} pages can follow the inspector at once.")
        stream = EventStream(request)
        self.streams.add(stream)
        listeners = self.inspector.store.listeners
        listeners.append(stream.exchange)
        request.notifyFinish().addBoth(lambda _: (self.streams.discard(stream), listeners.remove(stream.exchange)))
        return server.NOT_DONE_YET


@implementer(IPushProducer)
class EventStream:
    """One page's Server-Sent Events.  While its connection is backed up, events are
    dropped, and the page is told to reload the list once it drains."""

    def __init__(self, request):
        self.request = request
        self.paused = False
        self.missed = False
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.registerProducer(self, True)
        request.write(b"retry: 1000\n\n")

    def exchange(self, exchange):
        if exchange is None:
            self._send(b"clear", b"{}")
        else:
            self._send(b"exchange", json.dumps(views.summary(exchange)).encode("utf-8"))

    def _send(self, event, data):
        if self.paused:
            self.missed = True
            return
        self.request.write(b"event: " + event + b"\ndata: " + data + b"\n\n")

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        if self.missed:
            self.missed = False
            self._send(b"resync", b"{}")

    def stopProducing(self):
        self.paused = True
