"""The client's connections to its target: opening them, and the protocol on each.

`TargetConnector` opens connections (over TLS for an https target, tpot.client.tls) and
tells the tunnel's TargetWarnings (tpot.client.health) whether they could be made; its
`check` is the one plain TCP connection made at start-up to see whether anything listens.
`TargetProtocol` reports what happens on one to its conversation (tpot.client.conversation):
connected (for TLS: once the handshake is done; a handshake that fails is "could not
connect", and the visitor gets 502), data, lost.  `HalfCloseableTargetProtocol` also passes
on the target's end of stream, for raw conversations.
"""

import ipaddress
import socket

from twisted.internet import error
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener, ILoggingContext, IProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer, implementer_only

from tpot.client.health import TLS_FAILED, failure_reason
from tpot.client.tls import HANDSHAKE_TIMEOUT, describe_tls_failure, target_tls
from tpot.protocol.transports import AtOnceEndpoint, send_at_once

log = Logger()


def name_resolves(host):
    """Whether `host` resolves to an address; blocking, for the command line before the reactor runs."""
    try:
        return bool(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError):  # socket.gaierror is an OSError
        return False


class TargetConnector:
    """Opens connections to the target, resolving its name only when it has to.

    HostnameEndpoint resolves in a thread on every connection, which made each new
    conversation cost the client three times the server's CPU.  The address that last
    worked is tried directly; if that fails, the name is resolved again.  With `tls` (an
    IOpenSSLClientConnectionCreator, made for the target's host name) every endpoint is
    wrapped in TLS, so SNI and verification use the name even when the address is cached.
    """

    def __init__(self, reactor, host, port, tls=None, warnings=None):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.tls = tls
        self.address = None
        self._is_address = _is_address(host)  # nothing to resolve, even for the first connections
        self._direct_endpoint = None  # (address, endpoint)
        self.warnings = warnings  # a TargetWarnings, told of every attempt; None: nobody is

    @classmethod
    def for_settings(cls, reactor, settings, warnings=None):
        return cls(reactor, settings.target.host, settings.target.port, tls=target_tls(settings), warnings=warnings)

    def _secured(self, endpoint):
        return endpoint if self.tls is None else wrapClientTLS(self.tls, endpoint)

    def tls_failed(self, reason):
        """A handshake with the target failed: a warning saying why as it starts failing,
        every time in the debug log."""
        why = describe_tls_failure(reason)
        log.debug("TLS to the target {host}:{port} failed: {why}", host=self.host, port=self.port, why=why)
        if self.warnings is None:
            return
        hint = " (for a self-signed or private certificate use --insecure or --ca FILE)" if "certificate" in why else ""
        self.warnings.failed(TLS_FAILED, text=f"tpot: TLS to the target {self.host}:{self.port} failed: {why}{hint};"
                             " visitors get 502 until it works.")

    def reached(self):
        """A connection to the target is up (for TLS: its handshake is done)."""
        if self.warnings is not None:
            self.warnings.connected()

    def connect(self, factory):
        return self._connect(factory, at_start=False)

    def check(self):
        """One connection, closed as soon as it is up (for TLS: once the handshake is
        done), to say at start-up whether the target answers."""
        d = self._connect(TargetFactory(_Check(), self), at_start=True)
        d.addErrback(lambda _: None)  # the warnings have been told
        return d

    def _connect(self, factory, at_start):
        if self._is_address:
            d = self._direct(self.host).connect(factory)
        elif self.address is None:
            d = self._resolve_and_connect(factory)
        else:
            d = self._direct(self.address).connect(factory)
            d.addErrback(lambda _: self._resolve_and_connect(factory))
        d.addErrback(self._not_made, at_start)
        return d

    def _not_made(self, failure, at_start):
        if self.warnings is not None:
            self.warnings.failed(failure_reason(failure.value), at_start=at_start)
        return failure

    def _direct(self, address):
        """The endpoint for `address`, made once for the address last used: an endpoint
        is only what to connect to, and making one per conversation cost microseconds."""
        if self._direct_endpoint is None or self._direct_endpoint[0] != address:
            if self.tls is None:  # connections that can send at once (tpot.protocol.transports)
                endpoint = AtOnceEndpoint(self.reactor, address, self.port)
            elif ipaddress.ip_address(address).version == 6:
                endpoint = wrapClientTLS(self.tls, TCP6ClientEndpoint(self.reactor, address, self.port))
            else:
                endpoint = wrapClientTLS(self.tls, TCP4ClientEndpoint(self.reactor, address, self.port))
            self._direct_endpoint = (address, endpoint)
        return self._direct_endpoint[1]

    def _resolve_and_connect(self, factory):
        self.address = None
        d = self._secured(HostnameEndpoint(self.reactor, self.host, self.port)).connect(factory)
        d.addCallback(self._remember)
        return d

    def _remember(self, protocol):
        address = getattr(protocol.transport.getPeer(), "host", None)
        if _is_address(address):
            self.address = address
        return protocol


def _is_address(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
        if self.connector is not None:
            self.connector.reached()
        # One conversation's bytes: sent as they come (tpot.protocol.transports).
        send_at_once(self.transport)
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
            self.conversation.could_not_connect(TLS_FAILED)


class _Check:
    """The conversation of the check at start-up: its connection is closed once it is up;
    how it went, the connector has told the warnings."""

    target_protocol = TargetProtocol

    def connected(self, transport):
        transport.loseConnection()

    def from_target(self, data):
        pass

    def target_lost(self):
        pass

    def could_not_connect(self, reason=None):
        pass


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
