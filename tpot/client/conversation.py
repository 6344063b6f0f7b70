"""The client's side of one conversation: a visitor relayed between the tunnel (`session`)
and a connection to the local target (tpot.client.target).

Bytes from the tunnel go through the Host rewriter to the target; bytes from the target go
back as data messages.  Flow control mirrors the server's: a full target socket sends
pause (resume when drained), a pause from the server stops reading from the target, and a
backed-up WebSocket stops reading from every target.

With `VisitorOptions` (tpot.client.visitors), a conversation also tells the request log
(tpot.client.requestlog) what it relays, and has its requests judged by a VisitorPolicy
(tpot.client.policy): a judged conversation connects to the target only once a request is
admitted, and answers a refused one itself after the target has answered every earlier
request.

A conversation is in one `State` at a time:

    AWAITING_ADMISSION --a request admitted--> CONNECTING  (judged conversations start here)
    CONNECTING --the target connected--> OPEN             (the others start here)
    CONNECTING --could not connect--> ENDED               (the server hears "no connect", the visitor gets 502)
    OPEN --the target closed--> ENDED
    any --the server closed it--> ENDED                   (a target still connecting is closed once it connects)
    any but ENDED --a refused request's turn came--> ENDED (the refusal goes to the visitor)
    CONNECTING or OPEN --a later head refused unfollowed--> PEER_DONE (a FIN to the target)
    any --the server ignored pause past MAX_UNACKED_BYTES--> ENDED (the target is aborted)

and a raw conversation (`RawConversation`) ends each direction on its own:

    CONNECTING or OPEN --the server's half-close--> PEER_DONE    (FIN to the target, once connected)
    OPEN --the target's end of stream--> TARGET_DONE             (half-close to the server)
    PEER_DONE or TARGET_DONE --the other direction ends--> CLOSING (the target connection closes)
    PEER_DONE, TARGET_DONE or CLOSING --the target closed--> ENDED

Independent of the state: whether the server was asked to pause (`_server_paused`), why the
target is not read (`reading`), and a refused request waiting for its turn (`_refusal`).
"""

import enum

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from tpot.client.health import failure_reason
from tpot.client.inspector.capture import RequestTap
from tpot.client.policy import refusal_response
from tpot.client.requestlog import ConnectionEntry, Entry, ResponseTracker, request_line
from tpot.client.target import HalfCloseableTargetProtocol, TargetFactory, TargetProtocol
from tpot.http.rewrite import HostRewriter
from tpot.protocol.flow import MAX_UNACKED_BYTES, ReadPauses, no_delay, shut_down_writing

# Data held while the target connection is being made; past this the server is asked to
# pause this conversation until the connection is up.
MAX_PENDING_BYTES = 256 * 1024

log = Logger()


class State(enum.Enum):
    AWAITING_ADMISSION = "awaiting admission"  # judged: no request admitted yet, the target not contacted
    CONNECTING = "connecting"  # the target is being contacted; data from the tunnel is held
    OPEN = "open"  # relaying both ways
    PEER_DONE = "peer done"  # raw: the connecting side sent all it will; the target gets a FIN (once connected)
    TARGET_DONE = "target done"  # raw: the target sent all it will, and the server was told
    CLOSING = "closing"  # raw: both directions ended; the target connection is closing
    ENDED = "ended"  # the session has dropped the conversation; the target hears nothing more


@implementer(IPushProducer)
class Conversation:
    """One visitor, relayed between the tunnel (`session`) and a target connection.

    `visitors`: VisitorOptions or None; `address`: the visitor's address, as the server
    reported it.
    """

    target_protocol = TargetProtocol

    def __init__(self, session, conversation_id, host_rewrite, forwarded=None, visitors=None, address=None):
        self.session = session
        self.id = conversation_id
        self.transport = None  # the target connection, once it is up
        self._pending = []  # data for the target until then
        self._pending_size = 0
        self._server_paused = False
        self._unacked = 0  # bytes the server sent since we asked it to pause
        self.reading = ReadPauses()
        # Without a log or a policy (tpot --quiet) none of this is in the relay's way.
        self._visitors = visitors
        self._log = visitors.log if visitors is not None else None
        self._meter = self._metered(visitors)
        self._policy = None  # set when this conversation's requests are judged
        self._address_allowed = True
        if visitors is not None and visitors.policy is not None:
            self._address_allowed = visitors.policy.allows_address(address)
            if visitors.policy.judges(self._address_allowed):
                self._policy = visitors.policy
        self.state = State.AWAITING_ADMISSION if self._policy is not None else State.CONNECTING
        inspected = visitors.inspected if visitors is not None else None
        self._capture = inspected.capture(address) if inspected is not None else None
        watched = self._log is not None or self._policy is not None or self._capture is not None
        self.responses = ResponseTracker(self._capture, entries=self._log is not None) if watched else None
        self._connector = None  # held while awaiting admission
        self._refusal = None  # (status, method, path, started) until earlier requests are answered
        self._last_line = self._last_request = None  # see _request_line
        rewriting = host_rewrite or forwarded is not None or watched
        on_head = self._on_head if watched else None
        self.rewriter = HostRewriter(host_rewrite or None, forwarded, on_head) if rewriting else None
        self._tap = RequestTap(self._capture, self.rewriter) if self._capture is not None else None

    @staticmethod
    def _metered(visitors):
        """The status area's meter (told of this connection now and at its end), or None."""
        meter = visitors.meter if visitors is not None else None
        if meter is not None:
            meter.opened()
        return meter

    def connect(self, connector):
        """Contact the target through `connector` (a TargetConnector); awaiting admission,
        once a request is admitted."""
        if self.state is State.AWAITING_ADMISSION:
            self._connector = connector
            return
        self._contact(connector)

    def _contact(self, connector):
        d = connector.connect(TargetFactory(self, connector))
        d.addErrback(lambda failure: self.could_not_connect(failure_reason(failure.value)))

    # From the tunnel.

    def from_tunnel(self, payload):
        if self._server_paused and self._ignores_pause(len(payload)):
            return
        rewriter = self.rewriter
        data = rewriter.feed(payload, self._tap) if rewriter else payload
        if self.transport is not None:
            self.transport.write(data)
        else:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > MAX_PENDING_BYTES:
                self._ask_server(pause=True)
        if self._policy is not None:
            self._after_judging()
        if rewriter is not None and rewriter.refused is not None:
            self._refuse_in_stream(rewriter.take_refusal())

    def _ignores_pause(self, size):
        """Count what the server sends after we asked it to pause; past MAX_UNACKED_BYTES
        it ignores pause, and the conversation is cut rather than buffered without end."""
        self._unacked += size
        if self._unacked <= MAX_UNACKED_BYTES:
            return False
        log.warn("the server ignored pause for conversation {id}; closing it", id=self.id)
        self.state = State.ENDED
        self.session.conversation_ended(self.id, notify=True)
        if self.transport is not None:
            self.transport.unregisterProducer()
            self.transport.abortConnection()
        self._on_end("closed")
        return True

    def _refuse_in_stream(self, status):
        """The rewriter refused a later request of the connection (a bare CR or LF): it
        and what follows never reach the target.  With the responses followed, the visitor
        gets `status` once the earlier requests are answered; otherwise the target gets a
        FIN after them, and the visitor their responses, then the close."""
        if self.responses is not None:
            if self._refusal is None:
                self._refusal = (status, "-", "-", self._visitors.clock.seconds())
            self._refuse_when_answered()
        else:
            self._stop_writing()

    def _stop_writing(self):
        """Nothing more goes to the target: a FIN after what it was sent (once connected)."""
        if self.state is State.CONNECTING:
            self.state = State.PEER_DONE  # the FIN goes once connected (_after_connecting)
        elif self.state is State.OPEN:
            self.state = State.PEER_DONE
            shut_down_writing(self.transport, self)

    def _on_head(self, lines):
        """The rewriter's hook: a request head (None: unreadable) about to go to the target."""
        now = self._visitors.clock.seconds()
        method, path = self._request_line(lines)
        if self._policy is not None:
            status, lines = self._policy.judge(lines, self._address_allowed)
            if status is not None:
                self._refusal = (status, method, path, now)
                return None
            if self.state is State.AWAITING_ADMISSION:
                self.state = State.CONNECTING  # the target is contacted once this data is held
        if lines is None:
            return True  # not HTTP: passed through, and the log stops following it
        self.responses.request(method, path, now)  # and the capture, with the inspector
        return lines

    def _request_line(self, lines):
        """(method, path) of a head's lines, the last line's remembered: a keep-alive
        connection often repeats its request line, whose text is then shared rather than
        decoded (and kept by the inspector) once more."""
        if lines is None:
            return "-", "-"
        if lines[0] != self._last_line:
            self._last_line, self._last_request = lines[0], request_line(lines)
        return self._last_request

    def _after_judging(self):
        if self.state is State.CONNECTING and self._connector is not None:  # just admitted
            connector, self._connector = self._connector, None
            self._contact(connector)
        if self._refusal is not None:
            self._refuse_when_answered()

    def _refuse_when_answered(self):
        """Answer a refused request once every earlier one has its response, then end.

        When the responses cannot be followed (or end with the connection) there is no
        moment the answer could go: the conversation then ends when the target closes.
        """
        if self.state is State.ENDED or not self.responses.answered:
            return
        status, method, path, started = self._refusal
        self._refusal = None
        self._connector = None
        response = refusal_response(status, head_only=method == "HEAD")
        self.session.send_data(self.id, response)
        if self._log is not None:
            size = len(response) - response.index(b"\r\n\r\n") - 4
            self._log.write(Entry(method, path, status, size, self._visitors.clock.seconds() - started))
        self.state = State.ENDED
        self.session.conversation_ended(self.id, notify=True)
        if self.transport is not None:
            self._close()
        self._on_end("refused")

    def pause_reading(self, why):
        self.reading.pause(why)

    def resume_reading(self, why):
        self.reading.resume(why)

    def peer_done_sending(self):
        """A half-close, which only raw conversations have (RawConversation): ignored."""

    def remote_closed(self):
        """The server ended the conversation (the session has dropped it already)."""
        if self.state is State.ENDED:
            return
        self.state = State.ENDED
        if self.transport is not None:
            self._close()
        # Otherwise a target connection still being made is closed when it arrives (connected).
        self._on_end("closed")

    def _close(self):
        # A transport whose registered producer is paused (the target read slowly) resumes
        # the producer when its buffer drains instead of closing, so unregister first.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    # From the target connection.

    def connected(self, transport):
        self.transport = transport
        transport.registerProducer(self, True)
        no_delay(transport)
        self.reading.attach(transport)
        # Lift the pending-data pause first: writing may fill the buffer and pause again.
        self._ask_server(pause=False)
        transport.writeSequence(self._pending)
        self._pending = None
        if self.state is State.ENDED:
            self._close()
            return
        if self.state is State.CONNECTING:
            self.state = State.OPEN
        self._after_connecting()

    def _after_connecting(self):
        """What was held back until the target connection is up: the FIN of PEER_DONE."""
        if self.state is State.PEER_DONE:
            shut_down_writing(self.transport, self)

    def from_target(self, data):
        if self.state is not State.ENDED:
            self.session.send_data(self.id, data)
            if self.responses is not None:
                entries = self.responses.feed(data, self._visitors.clock.seconds())
                if entries or self._refusal is not None:
                    self._responded(entries)

    def _responded(self, entries):
        if self._log is not None:
            for entry in entries:
                self._log.write(entry)
        if self._refusal is not None:
            self._refuse_when_answered()

    # Once ended by the server, the session has already dropped this conversation, and its
    # id may belong to a new one: only a conversation that is still live reports its end.

    def target_lost(self):
        if self.state is State.ENDED:
            return
        if self.responses is not None:
            # Completes a response read until close; a refusal still waiting cannot
            # follow such a response (it would read as part of its body): none is sent.
            self._responded(self.responses.close(self._visitors.clock.seconds()))
        self.state = State.ENDED
        self.session.conversation_ended(self.id, notify=True)
        self._on_end("closed")

    def could_not_connect(self, reason=None):
        """The target could not be reached (`reason`: in a few words, for the log)."""
        if self.state is State.ENDED:
            return
        self.state = State.ENDED
        self.session.conversation_ended(self.id, notify=False)
        self.session.send_no_connect(self.id)
        if self.responses is not None:
            # The server answers the visitor's first request with 502 and closes.
            why = f"target unreachable ({reason})" if reason else "target unreachable"
            self._responded(self.responses.close(self._visitors.clock.seconds(), instead=(502, why)))
        self._on_end("target unreachable")

    def _on_end(self, outcome):
        """Called once, as the conversation enters ENDED; `outcome` ("closed", "refused",
        "target unreachable") says how: the inspector keeps it for requests left without
        a response, a subclass may log it."""
        if self._capture is not None:
            self._capture.ended(outcome)
        if self._meter is not None:
            self._meter.closed()

    # IPushProducer for the target's transport: its write buffer filled or drained.

    def pauseProducing(self):
        self._ask_server(pause=True)

    def resumeProducing(self):
        self._ask_server(pause=False)

    def _ask_server(self, pause):
        # Twisted calls pauseProducing on every write while the buffer is full; say it once.
        if self.state is State.ENDED or self._server_paused == pause:
            return
        self._server_paused = pause
        self._unacked = 0
        if pause:
            self.session.send_pause(self.id)
        else:
            self.session.send_resume(self.id)

    def stopProducing(self):
        pass


class RawConversation(Conversation):
    """A raw conversation of a TCP tunnel: bytes relayed untouched, with half-closes.

    Either side's end of stream (the target's, or the connecting side's as the server's
    half-close message) shuts only that direction; the target connection closes (and the
    server hears X) once both directions have ended, or when the target closes outright.
    """

    target_protocol = HalfCloseableTargetProtocol

    def __init__(self, session, conversation_id):
        super().__init__(session, conversation_id, host_rewrite=None)

    def peer_done_sending(self):
        if self.state is State.TARGET_DONE:
            self._both_done()
        else:
            self._stop_writing()

    def target_done_sending(self):
        if self.state is State.OPEN:
            self.state = State.TARGET_DONE
            self.session.send_half_close(self.id)
        elif self.state is State.PEER_DONE:
            self.session.send_half_close(self.id)
            self._both_done()

    def _both_done(self):
        self.state = State.CLOSING
        self._close()


class LoggedRawConversation(RawConversation):
    """A raw conversation of a TCP tunnel, relayed untouched, with one log line at its end
    (`tpot tcp` without --quiet): who connected, how it ended, bytes each way, how long."""

    def __init__(self, session, conversation_id, address, visitors):
        super().__init__(session, conversation_id)
        self.address = address
        self._clock = visitors.clock
        self._log_to = visitors.log
        self._meter = self._metered(visitors)
        self._started = self._clock.seconds()
        self.bytes_in = 0
        self.bytes_out = 0

    def from_tunnel(self, payload):
        self.bytes_in += len(payload)
        super().from_tunnel(payload)

    def from_target(self, data):
        self.bytes_out += len(data)
        super().from_target(data)

    def _on_end(self, outcome):
        self._log_to.write_connection(ConnectionEntry(
            self.address, outcome, self.bytes_in, self.bytes_out, self._clock.seconds() - self._started
        ))
        super()._on_end(outcome)
