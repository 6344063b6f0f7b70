"""The client's side of one conversation: a connection to the local target.

Bytes from the tunnel go through the Host rewriter to the target; bytes from the target go
back as data messages.  Flow control mirrors the server's: a full target socket sends
pause (resume when drained), a pause from the server stops reading from the target, and a
backed-up WebSocket stops reading from every target.

An https target is reached over TLS (verified against the system's roots, a --ca file, or
not at all with --insecure).  Its conversation counts as connected only once the handshake
is done: a handshake that fails is "could not connect", and the visitor gets 502.

With `VisitorOptions`, a conversation also tells the request log (tpot.client.requestlog)
what it relays, and has its requests judged by a VisitorPolicy (tpot.client.policy): a
judged conversation connects to the target only once a request is admitted, and answers a
refused one itself after the target has answered every earlier request.
"""

import ipaddress
import sys
from dataclasses import dataclass

from twisted.internet import error
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    ILoggingContext,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IPushProducer,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer, implementer_only

from tpot.client.policy import VisitorPolicy, refusal_response
from tpot.client.requestlog import ConnectionEntry, Entry, RequestLogger, ResponseTracker, request_line
from tpot.client.settings import ca_certificates
from tpot.protocol.flow import ReadPauses, no_delay, shut_down_writing
from tpot.http.rewrite import HostRewriter

log = Logger()

# Seconds a TLS target gets to complete its handshake before the attempt counts as failed.
HANDSHAKE_TIMEOUT = 30

# Data held while the target connection is being made; past this the server is asked to
# pause this conversation until the connection is up.
MAX_PENDING_BYTES = 256 * 1024


@implementer(IOpenSSLClientConnectionCreator)
class InsecureClientTLS:
    """--insecure: TLS without verifying the certificate, still sending the name (SNI)."""

    def __init__(self, hostname):
        from OpenSSL import SSL
        from twisted.internet.abstract import isIPAddress, isIPv6Address
        from twisted.internet.ssl import CertificateOptions

        self._connection = SSL.Connection
        self._context = CertificateOptions(verify=False).getContext()
        # Literal addresses are not allowed in SNI.
        self.server_name = None if isIPAddress(hostname) or isIPv6Address(hostname) else hostname.encode("idna")

    def clientConnectionForTLS(self, tls_protocol):
        connection = self._connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if self.server_name:
            connection.set_tlsext_host_name(self.server_name)
        return connection


def target_tls(settings):
    """The TLS connection creator for the settings' target: None unless it is https."""
    from twisted.internet.ssl import optionsForClientTLS, trustRootFromCertificates

    host = settings.target.host
    if settings.target.scheme != "https":
        return None
    if settings.target_insecure:
        return InsecureClientTLS(host)
    if settings.target_ca:
        return optionsForClientTLS(host, trustRoot=trustRootFromCertificates(ca_certificates(settings.target_ca)))
    return optionsForClientTLS(host)


def describe_tls_failure(reason):
    """A few words on why a TLS handshake with the target failed."""
    from OpenSSL.SSL import Error as SSLError

    value = reason.value if reason is not None else None
    if isinstance(value, error.TimeoutError):
        return f"no TLS handshake within {HANDSHAKE_TIMEOUT} s"
    if isinstance(value, SSLError):
        details = [part[-1] for part in (value.args[0] if value.args and isinstance(value.args[0], list) else [])
                   if isinstance(part, tuple) and part and part[-1]]
        return details[-1] if details else "TLS error"
    if type(value).__name__ == "VerificationError":  # service_identity: the name does not match
        return "certificate does not match the host name"
    return "the connection closed during the TLS handshake"


class TargetConnector:
    """Opens connections to the target, resolving its name only when it has to.

    HostnameEndpoint resolves in a thread on every connection, which made each new
    conversation cost the client three times the server's CPU.  The address that last
    worked is tried directly; if that fails, the name is resolved again.  With `tls` (an
    IOpenSSLClientConnectionCreator, made for the target's host name) every endpoint is
    wrapped in TLS, so SNI and verification use the name even when the address is cached.
    """

    def __init__(self, reactor, host, port, tls=None, err=None):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.tls = tls
        self.address = None
        self.err = err
        self._tls_failure_reported = False

    @classmethod
    def for_settings(cls, reactor, settings):
        return cls(reactor, settings.target.host, settings.target.port, tls=target_tls(settings))

    def _secured(self, endpoint):
        return endpoint if self.tls is None else wrapClientTLS(self.tls, endpoint)

    def tls_failed(self, reason):
        """A handshake with the target failed: say why on stderr once, every time in the debug log."""
        why = describe_tls_failure(reason)
        log.debug("TLS to the target {host}:{port} failed: {why}", host=self.host, port=self.port, why=why)
        if self._tls_failure_reported:
            return
        self._tls_failure_reported = True
        hint = " (for a self-signed or private certificate use --insecure or --ca FILE)" if "certificate" in why else ""
        err = self.err or sys.stderr
        err.write(f"tpot: TLS to the target {self.host}:{self.port} failed: {why}{hint}; visitors get 502.\n")
        err.flush()

    def connect(self, factory):
        if self.address is None:
            return self._resolve_and_connect(factory)
        d = self._secured(self._direct(self.address)).connect(factory)
        d.addErrback(lambda _: self._resolve_and_connect(factory))
        return d

    def _direct(self, address):
        if ipaddress.ip_address(address).version == 6:
            return TCP6ClientEndpoint(self.reactor, address, self.port)
        return TCP4ClientEndpoint(self.reactor, address, self.port)

    def _resolve_and_connect(self, factory):
        self.address = None
        d = self._secured(HostnameEndpoint(self.reactor, self.host, self.port)).connect(factory)
        d.addCallback(self._remember)
        return d

    def _remember(self, protocol):
        address = getattr(protocol.transport.getPeer(), "host", None)
        try:
            ipaddress.ip_address(address)
            self.address = address
        except ValueError:
            pass
        return protocol


class TargetFactory(Factory):
    """Builds the one connection of a conversation; quiet, unlike Factory.forProtocol,
    whose start and stop log lines cost more than the connection's own work."""

    noisy = False

    def __init__(self, conversation, connector):
        self.conversation = conversation
        self.connector = connector

    def buildProtocol(self, addr):
        return self.conversation.target_protocol(self.conversation, self.connector)


@implementer(IHandshakeListener)
class TargetProtocol(Protocol):
    """The target connection; over TLS (`connector.tls`) it is up once the handshake is done."""

    def __init__(self, conversation, connector=None):
        self.conversation = conversation
        self.connector = connector
        self.up = False
        self._handshake_timeout = None
        self._timed_out = False

    def connectionMade(self):
        if self.connector is None or self.connector.tls is None:
            self._up()
        else:
            self._handshake_timeout = self.connector.reactor.callLater(HANDSHAKE_TIMEOUT, self._give_up)

    def handshakeCompleted(self):
        self._cancel_timeout()
        self._up()

    def _up(self):
        self.up = True
        self.conversation.connected(self.transport)

    def _give_up(self):
        self._timed_out = True
        self.transport.abortConnection()

    def _cancel_timeout(self):
        if self._handshake_timeout is not None and self._handshake_timeout.active():
            self._handshake_timeout.cancel()
        self._handshake_timeout = None

    def dataReceived(self, data):
        self.conversation.from_target(data)

    def connectionLost(self, reason=None):
        self._cancel_timeout()
        if self.up:
            self.conversation.target_lost()
        else:
            self.connector.tls_failed(Failure(error.TimeoutError()) if self._timed_out else reason)
            self.conversation.could_not_connect()


# Only these: Twisted's endpoint wrapper mirrors just the last of the interfaces it checks
# (each directlyProvides replaces the one before), so a protocol that is also an
# IHandshakeListener, as TargetProtocol is, would not be told of half-closes.
@implementer_only(IHalfCloseableProtocol, IProtocol, ILoggingContext)
class HalfCloseableTargetProtocol(TargetProtocol):
    """The target of a raw conversation (never TLS), whose end of stream is passed on as a
    half-close."""

    def readConnectionLost(self):
        self.conversation.target_done_sending()

    def writeConnectionLost(self):
        pass


@dataclass(frozen=True)
class VisitorOptions:
    """What the client does besides relaying: `log` (None with --quiet), `policy` (None
    without --basic-auth and --allow-ip), `clock` (an IReactorTime) for the log's timings."""

    clock: object
    log: RequestLogger = None
    policy: VisitorPolicy = None

    @classmethod
    def for_settings(cls, settings, clock, out):
        log = None if settings.quiet else RequestLogger(out)
        policy = None
        if settings.basic_auth or settings.allow_ip:
            policy = VisitorPolicy(settings.basic_auth, settings.allow_ip)
        return cls(clock, log, policy) if log is not None or policy is not None else None


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
