"""What the inspector keeps: every exchange (a request and its response) the client relayed.

Sans-I/O.  A `ConversationCapture` watches one HTTP conversation's bytes as they go to and
come from the local target, cut into messages by the framing that already follows them:
the request side's HostRewriter (through a `RequestTap` on its output, and the
conversation's head hook) and the response side's ResponseTracker (which writes every byte
it frames to the capture and says when a response is done).  The framer's state when a
piece arrives says what it is: a head, body bytes, chunk framing, or a stream no longer
followed (an upgrade, something that is not HTTP), which is not kept.

Capturing only copies references to bytes already made for the relay: it never changes,
holds back or reorders them.  It is bounded three ways: each body at MAX_BODY bytes (the
rest counted, not kept), the `ExchangeStore` at `keep` exchanges, and every captured byte
of the process, finished or not, against the store's `max_bytes`: past it the oldest
exchanges are evicted, and when none is left to evict a capture stops keeping its body —
captures are dropped, never traffic.
"""

from collections import deque

from tpot.http.framing import BODY, CHUNK_DATA, CHUNK_END, CHUNK_SIZE, HEAD, TRAILER, UNTIL_CLOSE

MAX_BODY = 1024 * 1024
DEFAULT_KEEP = 500
# Bytes of every capture at once: 500 exchanges with 1 MiB bodies one way, and their heads.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
# Unanswered requests kept per conversation: a visitor pipelining more is not captured.
MAX_AWAITING = 100

_KEPT = frozenset({HEAD, BODY, CHUNK_DATA, CHUNK_SIZE, CHUNK_END, TRAILER, UNTIL_CLOSE})


class Message:
    """One direction of an exchange, as it went over the wire to or from the target.

    Most messages arrive as one piece, kept as it is; only a message in several pieces is
    joined, once, when it is finished.
    """

    __slots__ = ("raw", "_pieces", "size", "held", "body_size", "truncated", "_store")

    def __init__(self, store):
        self.raw = b""  # the first piece until finished, then the whole message
        self._pieces = None  # every piece, once there is more than one
        self.size = 0  # bytes kept, counted against the store's budget
        self.held = 0  # bytes after the head(s), kept
        self.body_size = 0
        self.truncated = False
        self._store = store

    def add(self, piece, after_head):
        """Keep `piece`, whose last `after_head` bytes come after the head (all of them
        for a piece of body, none for a head)."""
        if after_head:
            room = MAX_BODY - self.held
            if after_head > room:
                self.truncated = True
                piece = piece[:len(piece) - after_head + room]
                after_head = room
            self.held += after_head
        size = len(piece)
        if not size:
            return
        store = self._store
        if store.held + size <= store.max_bytes:  # the usual case, without a call
            store.held += size
        elif not store.reserve(size):
            self.truncated = True
            head = size - after_head
            if not head or not store.reserve(head):  # without room for the body, its head alone
                return
            piece, size = piece[:head], head
        self.size += size
        if self._pieces is not None:
            self._pieces.append(piece)
        elif self.raw:
            self._pieces = [self.raw, piece]
        else:
            self.raw = piece

    def finish(self, body_size):
        self.body_size = body_size
        if self._pieces is not None:
            self.raw = b"".join(self._pieces)
            self._pieces = None


class Exchange:
    """A request and its response; `id` is given when the store takes it."""

    __slots__ = ("id", "tunnel", "visitor", "replay_of", "started", "method", "path", "request", "response",
                 "status", "duration", "upgrade", "outcome")

    def __init__(self, tunnel, visitor, method, path, started, store, replay_of=None):
        self.id = None
        self.tunnel = tunnel
        self.visitor = visitor
        self.replay_of = replay_of
        self.started = started
        self.method = method
        self.path = path
        self.request = Message(store)
        self.response = None
        self.status = None
        self.duration = None
        self.upgrade = False
        self.outcome = None  # why there is no response, when there is none

    @property
    def held(self):
        return self.request.size + (self.response.size if self.response is not None else 0)


class ExchangeStore:
    """The last `keep` exchanges, oldest evicted first, and the byte budget of every capture.

    `listeners` are called with each exchange as it is added, and with None when the store
    is cleared.
    """

    def __init__(self, keep=DEFAULT_KEEP, max_bytes=DEFAULT_MAX_BYTES):
        self.keep = keep
        self.max_bytes = max_bytes
        self.held = 0
        # Oldest first; their ids follow each other, so an id is also a place in this line.
        self._exchanges = deque()
        self._next_id = 1
        self.listeners = []

    def reserve(self, size):
        """Count `size` more captured bytes; False when even evicting everything leaves no room."""
        while self.held + size > self.max_bytes and self._exchanges:
            self._evict()
        if self.held + size > self.max_bytes:
            return False
        self.held += size
        return True

    def add(self, exchange):
        exchange.id = self._next_id
        self._next_id += 1
        self._exchanges.append(exchange)
        while len(self._exchanges) > self.keep:
            self._evict()
        if self.listeners:
            for listener in list(self.listeners):
                listener(exchange)

    def release(self, exchange):
        """An exchange that will not be added: its bytes no longer count."""
        self.held -= exchange.held

    def _evict(self):
        self.held -= self._exchanges.popleft().held

    def get(self, exchange_id):
        place = exchange_id - self._exchanges[0].id if self._exchanges else -1
        return self._exchanges[place] if 0 <= place < len(self._exchanges) else None

    def newest_first(self):
        return reversed(self._exchanges)

    def clear(self):
        for exchange in self._exchanges:
            self.held -= exchange.held
        self._exchanges.clear()
        for listener in list(self.listeners):
            listener(None)

    def __len__(self):
        return len(self._exchanges)


class ConversationCapture:
    """The exchanges of one conversation of tunnel `tunnel` from `visitor`.

    The response tracker calls `request(method, path, now)` for every request head it is
    told of (before the head's bytes go through the tap), and what concerns responses; the
    tap writes the requests' bytes; the conversation calls `ended(outcome)` when it ends.  `replay_of` marks the exchanges of a replay.
    """

    def __init__(self, store, tunnel, visitor, replay_of=None):
        self.store = store
        self.tunnel = tunnel
        self.visitor = visitor
        self.replay_of = replay_of
        self._sending = None  # the exchange whose request is going to the target
        self._awaiting = deque()  # exchanges waiting for (the rest of) their response
        self.request_framing = None  # the HostRewriter, set by RequestTap
        self.response_framing = None  # the ResponseTracker, which sets it
        self.last = None  # the exchange kept last

    # The request side.

    def request(self, method, path, now):
        if self._sending is not None:
            self._request_done()
        if len(self._awaiting) >= MAX_AWAITING:
            self._sending = None
            return
        exchange = Exchange(self.tunnel, self.visitor, method, path, now, self.store, self.replay_of)
        self._sending = exchange
        self._awaiting.append(exchange)

    def request_piece(self, piece, state):
        exchange = self._sending
        if exchange is None:
            return
        if state in _KEPT:
            exchange.request.add(piece, 0 if state == HEAD else len(piece))
        else:  # an upgrade or CONNECT: what follows is not HTTP
            self._request_done()

    def _request_done(self):
        if self._sending is not None:
            framing = self.request_framing
            self._sending.request.finish(framing.body_size if framing is not None else 0)
            self._sending = None

    # The response side: ResponseTracker writes what it frames here.

    def append(self, piece):
        state = self.response_framing.state
        if state not in _KEPT or not self._awaiting:
            return
        exchange = self._awaiting[0]
        if exchange.response is None:
            exchange.response = Message(self.store)
        exchange.response.add(piece, 0 if state == HEAD else len(piece))

    def response_done(self, status, size, duration, whole=None):
        """ResponseTracker finished a response: the oldest request has all of it.  `size`
        is its body's, None for an upgrade or a tunnel; `whole`, the response's bytes when
        they came at once (not written piece by piece)."""
        if not self._awaiting:
            return
        exchange = self._awaiting.popleft()
        if exchange is self._sending:  # answered before its body was all sent
            self._request_done()
        response = exchange.response
        if response is None:
            response = exchange.response = Message(self.store)
        if whole is not None:
            response.add(whole, size)
        response.finish(size or 0)
        exchange.status = status
        exchange.duration = duration
        exchange.upgrade = size is None
        self._keep(exchange)

    def ended(self, outcome="no response"):
        """The conversation ended: requests still waiting are kept without a response."""
        self._request_done()
        while self._awaiting:
            exchange = self._awaiting.popleft()
            if exchange.response is not None:
                exchange.response.finish(exchange.response.held)
            exchange.outcome = outcome
            self._keep(exchange)

    def _keep(self, exchange):
        self.store.add(exchange)
        self.last = exchange


class RequestTap:
    """Stands for the list HostRewriter writes its output to (HostRewriter.feed sets `out`):
    each piece also goes to the capture, with the rewriter's state saying what it is."""

    __slots__ = ("out", "capture", "framing")

    def __init__(self, capture, framing):
        self.out = None
        self.capture = capture
        self.framing = framing
        capture.request_framing = framing

    def append(self, piece):
        self.out.append(piece)
        self.capture.request_piece(piece, self.framing.state)
