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
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from tpot.client.policy import refusal_response
from tpot.client.requestlog import ConnectionEntry, Entry, ResponseTracker, request_line
from tpot.client.target import HalfCloseableTargetProtocol, TargetFactory, TargetProtocol
from tpot.http.rewrite import HostRewriter
from tpot.protocol.flow import ReadPauses, no_delay, shut_down_writing

# Data held while the target connection is being made; past this the server is asked to
# pause this conversation until the connection is up.
MAX_PENDING_BYTES = 256 * 1024


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
        self.transport = None
        self._pending = []
        self._pending_size = 0
        self._server_paused = False
        self.reading = ReadPauses()
        self._close_when_connected = False
        self._ended = False
        # Without a log or a policy (tpot --quiet) none of this is in the relay's way.
        self._visitors = visitors
        self._log = visitors.log if visitors is not None else None
        self._policy = None  # set when this conversation's requests are judged
        self._address_allowed = True
        if visitors is not None and visitors.policy is not None:
            self._address_allowed = visitors.policy.allows_address(address)
            if visitors.policy.judges(self._address_allowed):
                self._policy = visitors.policy
        watched = self._log is not None or self._policy is not None
        self.responses = ResponseTracker() if watched else None
        self._connector = None  # held until a request is admitted
        self._admitted = False
        self._refusal = None  # (status, method, path, started) until earlier requests are answered
        rewriting = host_rewrite or forwarded is not None or watched
        on_head = self._on_head if watched else None
        self.rewriter = HostRewriter(host_rewrite or None, forwarded, on_head) if rewriting else None

    def connect(self, connector):
        if self._policy is not None and not self._admitted:
            self._connector = connector  # the target hears of this visitor once admitted
            return
        d = connector.connect(TargetFactory(self, connector))
        d.addErrback(lambda _: self.could_not_connect())

    # From the tunnel.

    def from_tunnel(self, payload):
        data = self.rewriter.feed(payload) if self.rewriter else payload
        if self.transport is not None:
            self.transport.write(data)
        else:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > MAX_PENDING_BYTES:
                self._ask_server(pause=True)
        if self._policy is not None:
            self._after_judging()

    def _on_head(self, lines):
        """The rewriter's hook: a request head (None: unreadable) about to go to the target."""
        now = self._visitors.clock.seconds()
        method, path = request_line(lines) if lines is not None else ("-", "-")
        if self._policy is not None:
            status, lines = self._policy.judge(lines, self._address_allowed)
            if status is not None:
                self._refusal = (status, method, path, now)
                return None
            self._admitted = True
        if lines is None:
            return True  # not HTTP: passed through, and the log stops following it
        self.responses.request(method, path, now)
        return lines

    def _after_judging(self):
        if self._admitted and self._connector is not None:
            connector, self._connector = self._connector, None
            self.connect(connector)
        if self._refusal is not None:
            self._refuse_when_answered()

    def _refuse_when_answered(self):
        """Answer a refused request once every earlier one has its response, then end.

        When the responses cannot be followed (or end with the connection) there is no
        moment the answer could go: the conversation then ends when the target closes.
        """
        if self._ended or not self.responses.answered:
            return
        status, method, path, started = self._refusal
        self._refusal = None
        self._connector = None
        response = refusal_response(status, head_only=method == "HEAD")
        self.session.send_data(self.id, response)
        if self._log is not None:
            size = len(response) - response.index(b"\r\n\r\n") - 4
            self._log.write(Entry(method, path, status, size, self._visitors.clock.seconds() - started))
        self._ended = True
        self.session.conversation_ended(self.id, notify=True)
        if self.transport is not None:
            self._close()

    def pause_reading(self, why):
        self.reading.pause(why)

    def resume_reading(self, why):
        self.reading.resume(why)

    def peer_done_sending(self):
        """A half-close, which only raw conversations have (RawConversation): ignored."""

    def remote_closed(self):
        self._ended = True
        if self.transport is not None:
            self._close()
        else:
            self._close_when_connected = True

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
        if self._close_when_connected:
            self._close()
        else:
            self._after_connecting()

    def _after_connecting(self):
        """What a subclass has held back until the target connection is up."""

    def from_target(self, data):
        if not self._ended:
            self.session.send_data(self.id, data)
            if self.responses is not None:
                self._responded(self.responses.feed(data, self._visitors.clock.seconds()))

    def _responded(self, entries):
        if self._log is not None:
            for entry in entries:
                self._log.write(entry)
        if self._refusal is not None:
            self._refuse_when_answered()

    # Once ended by the server, the session has already dropped this conversation, and its
    # id may belong to a new one: only a conversation that is still live reports its end.

    def target_lost(self):
        if not self._ended:
            if self.responses is not None:
                # Completes a response read until close; a refusal still waiting cannot
                # follow such a response (it would read as part of its body): none is sent.
                self._responded(self.responses.close(self._visitors.clock.seconds()))
            self._ended = True
            self.session.conversation_ended(self.id, notify=True)

    def could_not_connect(self):
        if not self._ended:
            self._ended = True
            self.session.conversation_ended(self.id, notify=False)
            self.session.send_no_connect(self.id)

    # IPushProducer for the target's transport: its write buffer filled or drained.

    def pauseProducing(self):
        self._ask_server(pause=True)

    def resumeProducing(self):
        self._ask_server(pause=False)

    def _ask_server(self, pause):
        # Twisted calls pauseProducing on every write while the buffer is full; say it once.
        if self._ended or self._server_paused == pause:
            return
        self._server_paused = pause
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
        self._peer_done = False  # the server said the connecting side sent all it will
        self._target_done = False  # the target's end of stream was passed on

    def peer_done_sending(self):
        self._peer_done = True
        if self.transport is not None:
            self._shut_down_writing()

    def _after_connecting(self):
        if self._peer_done:
            self._shut_down_writing()

    def _shut_down_writing(self):
        if self._target_done:
            self._close()
        else:
            shut_down_writing(self.transport, self)  # after what is buffered: a FIN to the target

    def target_done_sending(self):
        if self._ended or self._target_done:
            return
        self._target_done = True
        self.session.send_half_close(self.id)
        if self._peer_done:
            self._close()


class LoggedRawConversation(RawConversation):
    """A raw conversation of a TCP tunnel, relayed untouched, with one log line at its end
    (`tpot tcp` without --quiet): who connected, how it ended, bytes each way, how long."""

    def __init__(self, session, conversation_id, address, visitors):
        super().__init__(session, conversation_id)
        self.address = address
        self._clock = visitors.clock
        self._log_to = visitors.log
        self._started = self._clock.seconds()
        self.bytes_in = 0
        self.bytes_out = 0
        self._logged = False

    def from_tunnel(self, payload):
        self.bytes_in += len(payload)
        super().from_tunnel(payload)

    def from_target(self, data):
        self.bytes_out += len(data)
        super().from_target(data)

    def remote_closed(self):
        super().remote_closed()
        self._log_end("closed")

    def target_lost(self):
        super().target_lost()
        self._log_end("closed")

    def could_not_connect(self):
        super().could_not_connect()
        self._log_end("target unreachable")

    def _log_end(self, outcome):
        if not self._logged:
            self._logged = True
            self._log_to.write_connection(ConnectionEntry(
                self.address, outcome, self.bytes_in, self.bytes_out, self._clock.seconds() - self._started
            ))
