"""The TPoT/1 session rules both ends share, free of I/O (in the manner of h11 and wsproto).

A session is fed the peer's messages (tpot.protocol.codec dataclasses) and returns events
for the adapter (tpot.server.tunnel, tpot.client.session) to perform on its conversation
objects; it is asked for the messages its own side sends when a rule goes with them.  It
keeps the conversation table (id -> the adapter's object for that conversation), which
conversations the peer paused, and on the server the ids.  `ServerSession` and
`ClientSession` add what only one end does; everything else is said once, in `Session`.
"""

from dataclasses import dataclass

from tpot.protocol import codec
from tpot.protocol.codec import MAX_CONVERSATION_ID, TCP, ProtocolError


class ConversationIds:
    """Ids 1..maximum, handed out round-robin so a freed id is reused as late as possible.

    Late messages for a conversation that just ended are thus ignored rather than
    delivered to a new visitor that happened to get the same id.
    """

    def __init__(self, maximum=MAX_CONVERSATION_ID):
        self.maximum = maximum
        self._in_use = set()
        self._last = 0

    def __len__(self):
        return len(self._in_use)

    def allocate(self):
        if len(self._in_use) >= self.maximum:
            return None
        candidate = self._last
        while True:
            candidate = candidate % self.maximum + 1
            if candidate not in self._in_use:
                self._in_use.add(candidate)
                self._last = candidate
                return candidate

    def release(self, conversation_id):
        self._in_use.discard(conversation_id)


# Events: what the peer's messages ask of the adapter.  `conversation` is the object the
# adapter put in the table.  Slots: they are made on every message but data's fast path.

@dataclass(frozen=True, slots=True)
class Deliver:
    """`D`: write `payload` to the conversation's socket."""

    conversation: object
    payload: bytes


@dataclass(frozen=True, slots=True)
class PauseReading:
    """`P`: the peer's socket is full; stop reading the conversation's socket."""

    conversation: object


@dataclass(frozen=True, slots=True)
class ResumeReading:
    """`C`: read it again."""

    conversation: object


@dataclass(frozen=True, slots=True)
class PeerDoneSending:
    """`E` (raw conversations only): the peer sends no more data; shut down writing."""

    conversation: object


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """`X`, or a new conversation on a stale id: write what is left, then close."""

    conversation: object


@dataclass(frozen=True, slots=True)
class PeerCouldNotConnect:
    """`N` (the server hears it): the client could not reach its target."""

    conversation: object


@dataclass(frozen=True, slots=True)
class Greeted:
    """`G` (the client hears it): the tunnel is up under `name`."""

    name: str


@dataclass(frozen=True, slots=True)
class OpenRequested:
    """`H` or `R` (the client hears it): make the conversation, then `accept` it."""

    id: int
    host: str
    port: int
    raw: bool


@dataclass(frozen=True, slots=True)
class WrongKind:
    """`H` on a TCP tunnel or `R` on an HTTP one: refuse it with `no_connect`."""

    id: int
    raw: bool


@dataclass(frozen=True, slots=True)
class TooMany:
    """An `H` or `R` beyond the conversations the client keeps open: refuse it with
    `no_connect` (each open one holds a connection to the target, a file descriptor)."""

    id: int


# Why the server's side could not open a conversation (`OpenRefused.reason`).
KIND_MISMATCH = "kind mismatch"
NO_FREE_ID = "no free id"


class OpenRefused(Exception):
    """The server's side cannot open that conversation; `reason` says why."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Session:
    """What both ends do.  `kind` is the tunnel's (codec.HTTP or codec.TCP): a TCP tunnel
    has raw conversations only, an HTTP tunnel HTTP ones only."""

    peer_sends = frozenset()  # the message classes the peer may send; a subclass's
    _receivers = {}  # message class -> the function that takes it (over `peer_sends`)
    owns_ids = False  # whether this end chooses ids (the server)

    def __init__(self, kind):
        self.kind = kind
        # id -> conversation, until the conversation ends.  Data's fast path in the
        # adapters looks ids up here directly (`conversations.get`): see `_data`.
        self.conversations = {}
        self.paused_by_peer = set()  # ids whose reading the peer paused (P without C yet)
        self.failed = False  # the peer sent something TPoT/1 forbids: hear no more of it

    # The peer's messages.

    def decode(self, payload, binary):
        """The message in one WebSocket message from the peer; ProtocolError if it is
        malformed or not one the peer may send."""
        if not binary:
            raise self._violation("text message")
        try:
            return codec.decode(payload, self.peer_sends)
        except ProtocolError:
            self.failed = True
            raise

    def receive(self, message):
        """The events for one of the peer's messages (a tuple, often empty)."""
        if self.failed:
            # Its WebSocket is being closed (4180): nothing more reaches a conversation.
            return ()
        receiver = self._receivers.get(type(message))
        if receiver is None:
            raise self._violation(f"unexpected {type(message).__name__} message")
        return receiver(self, message)

    def _data(self, message):
        # The adapters' data fast path (LeanFrames._deliver_data) is this without the
        # event: `conversations.get(id)`, then the data to that conversation, if any.
        conversation = self.conversations.get(message.id)
        return () if conversation is None else (Deliver(conversation, message.payload),)

    def _pause(self, message):
        conversation = self.conversations.get(message.id)
        # Said once: a repeated P (or a C without P) changes nothing.
        if conversation is None or message.id in self.paused_by_peer:
            return ()
        self.paused_by_peer.add(message.id)
        return (PauseReading(conversation),)

    def _resume(self, message):
        if message.id not in self.paused_by_peer:
            return ()
        self.paused_by_peer.discard(message.id)
        return (ResumeReading(self.conversations[message.id]),)

    def _half_close(self, message):
        # HTTP conversations keep TPoT/1's close semantics; an E there is checked before
        # the id, as an HTTP tunnel cannot have a conversation it would apply to.
        if self.kind != TCP:
            raise self._violation("half-close in an HTTP conversation")
        conversation = self.conversations.get(message.id)
        return () if conversation is None else (PeerDoneSending(conversation),)

    def _close(self, message):
        conversation = self._peer_ended(message.id)
        return () if conversation is None else (PeerClosed(conversation),)

    def _peer_ended(self, conversation_id):
        """The peer's side of a conversation is gone (X, N): the conversation, or None.

        The server keeps the id (and the table entry) until its own side is done too
        (`end`), so that the id is not handed out while its visitor still writes.  For
        the client the conversation is over at once: the server frees the id as it says
        X, and may open a new conversation with it right after.
        """
        if self.owns_ids:
            return self.conversations.get(conversation_id)
        return self._forget(conversation_id)

    _receivers_of_both = {codec.Data: _data, codec.Pause: _pause, codec.Resume: _resume,
                          codec.HalfClose: _half_close, codec.Close: _close}

    # Our own side.

    def end(self, conversation_id, notify):
        """Our side of the conversation is gone: the X to send (when `notify`), or None.

        Only for a conversation still in the table: one that already ended (by the peer's
        X on the client, or a lost tunnel) has nobody left to tell.
        """
        if self._forget(conversation_id) is None:
            return None
        return codec.Close(conversation_id) if notify else None

    def lost(self):
        """The tunnel's WebSocket closed: every conversation ends; those to tell of it."""
        conversations = list(self.conversations.values())
        self.conversations.clear()
        self.paused_by_peer.clear()
        return conversations

    # Internals.

    def _takes(self, raw):
        """Whether a conversation of that kind (raw or HTTP) belongs on this tunnel."""
        return raw == (self.kind == TCP)

    def _forget(self, conversation_id):
        self.paused_by_peer.discard(conversation_id)
        return self.conversations.pop(conversation_id, None)

    def _violation(self, reason):
        self.failed = True
        return ProtocolError(reason)


class ServerSession(Session):
    """The server's end: it opens conversations and chooses their ids."""

    peer_sends = codec.FROM_CLIENT
    owns_ids = True

    def __init__(self, kind):
        super().__init__(kind)
        self.ids = ConversationIds()

    def open(self, conversation, host, port, raw=False):
        """Open a conversation for `conversation` (a visitor, from host:port): the message
        to send the client (`H`, or `R` when `raw`), whose id is the conversation's.
        OpenRefused when it is of the wrong kind for this tunnel, or no id is free."""
        if not self._takes(raw):
            raise OpenRefused(KIND_MISMATCH)
        conversation_id = self.ids.allocate()
        if conversation_id is None:
            raise OpenRefused(NO_FREE_ID)
        self.conversations[conversation_id] = conversation
        opening = codec.OpenRaw if raw else codec.OpenHTTP
        return opening(conversation_id, host, port)

    def end(self, conversation_id, notify):
        # The id is free once our side is done (see _peer_ended).  Only an id still in
        # the table: one ended already (or lost with the tunnel) may be another's by now.
        if conversation_id in self.conversations:
            self.ids.release(conversation_id)
        return super().end(conversation_id, notify)

    def lost(self):
        for conversation_id in self.conversations:
            self.ids.release(conversation_id)
        return super().lost()

    def _no_connect(self, message):
        conversation = self._peer_ended(message.id)
        return () if conversation is None else (PeerCouldNotConnect(conversation),)

    _receivers = {**Session._receivers_of_both, codec.NoConnect: _no_connect}


class ClientSession(Session):
    """The client's end: the server opens conversations; the client may refuse them (N)."""

    peer_sends = codec.FROM_SERVER

    def __init__(self, kind, max_conversations=None):
        super().__init__(kind)
        self.max_conversations = max_conversations  # None: as many as the server opens

    def accept(self, conversation_id, conversation):
        """Put the conversation the adapter made for an OpenRequested in the table."""
        self.conversations[conversation_id] = conversation

    def no_connect(self, conversation_id):
        """Our side could not reach its target, or refused the conversation: the N to
        send.  It ends the conversation, and N stands instead of X: nothing follows it."""
        self._forget(conversation_id)
        return codec.NoConnect(conversation_id)

    def _greeting(self, message):
        return (Greeted(message.name),)

    def _open(self, message):
        events = ()
        # The server reuses an id only once it has ended that conversation: one still in
        # our table is over, whether or not we heard its X.
        stale = self._forget(message.id)
        if stale is not None:
            events = (PeerClosed(stale),)
        raw = type(message) is codec.OpenRaw
        if not self._takes(raw):
            # A TCP service must never see HTTP visitors, nor an HTTP target raw streams.
            return events + (WrongKind(message.id, raw),)
        if self.max_conversations is not None and len(self.conversations) >= self.max_conversations:
            return events + (TooMany(message.id),)
        return events + (OpenRequested(message.id, message.host, message.port, raw),)

    _receivers = {**Session._receivers_of_both, codec.Greeting: _greeting,
                  codec.OpenHTTP: _open, codec.OpenRaw: _open}
